"""Configuration files: :func:`load_config` reads TOML or YAML, :func:`dump_config` writes them.

A file is the mapping :meth:`ExperimentConfig.to_dict` gives, one table per section::

    preset = "lenet300-mnist"   # optional: start from a named preset instead of the defaults
    name = "lenet-short"

    [train]
    iterations = 20000
    lr_milestones = [10000, 15000]

    [lottery]
    branches = ["ticket", "random_mask"]

YAML holds the same keys (``train:`` with indented fields, lists as ``[a, b]`` or ``- a`` lines).
The format is chosen by the file's suffix: ``.toml``, ``.yaml`` or ``.yml``. TOML is read by the
standard library's ``tomllib`` (Python 3.11+) or by ``tomli`` on Python 3.10; YAML needs PyYAML
(``pip install 'lth[yaml]'``).

Rules a file follows:

- **Partial files.** Every key is optional. A field left out takes its value from the base: the
  preset named by the top-level ``preset`` key, or without one, the dataclass default. ``preset``
  is only read, never written: :func:`dump_config` writes every field, so its output stands alone.
- **None.** TOML has no null, so in TOML *left out* is the only way to say None. That is exact
  for a file without ``preset``, because every field that may be None (``prune.conv_rate``,
  ``prune.output_rate``) defaults to None; it cannot clear a value a preset sets (use YAML
  ``null`` or ``--set prune.conv_rate=none`` on top). :func:`dump_config` writes a None field as
  a comment line in TOML and as ``null`` in YAML, and refuses to write TOML for a None in a field
  whose default is not None, since reading the file back would give that default instead.
- **Numbers.** An integer in a field typed ``float`` is read as a float (``weight_decay = 0``
  means ``0.0``), as ``--set`` does, so a file naming a preset's values gives that preset's run
  directory hash. The optional rates keep a number as written, as ``--set`` does for a field
  that is None. PyYAML reads ``1e-3`` (an exponent without a decimal point) as text under YAML
  1.1, so such text in a number field is read as the number it spells.
- **Errors.** A missing or unreadable file, a syntax error, an unknown section or field, a wrong
  type or an invalid value raises :class:`ConfigError` with one line naming the file, the field
  and what to write instead.
"""

from __future__ import annotations

import inspect
import math
import re
import sys
import typing
from dataclasses import MISSING, fields
from functools import cache
from pathlib import Path
from typing import Any

from .presets import PresetError, get_preset
from .schema import SECTIONS, ConfigError, ExperimentConfig

FORMATS = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}
TOP_LEVEL_KEYS = ("preset", "name", *SECTIONS)
# What PyYAML's YAML 1.1 resolver leaves as text although it is a number: an exponent whose
# mantissa has no decimal point ("1e-3", "5E+2").
_EXPONENT_WITHOUT_POINT = re.compile(r"[-+]?[0-9]+[eE][-+]?[0-9]+")


# ---------------------------------------------------------------------------------------- reading


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a ``.toml``, ``.yaml`` or ``.yml`` configuration file (rules in the module docstring)."""
    p = Path(path)
    fmt = _format_of(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such configuration file; check the path") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the configuration file: {e.strerror or e}") from None
    raw = _parse_toml(text, p) if fmt == "toml" else _parse_yaml(text, p)
    return _resolve(raw, p)


def _format_of(p: Path) -> str:
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"{p}: unknown configuration file type {p.suffix or '(no suffix)'!r}; name it "
            f"{' or '.join(sorted(FORMATS))} (TOML or YAML)"
        )
    return fmt


def _parse_toml(text: str, p: Path) -> Any:
    try:
        import tomllib as toml
    except ImportError:
        try:
            import tomli as toml  # the same parser, packaged for Python < 3.11
        except ImportError:
            raise ConfigError(
                f"{p}: reading TOML on Python {sys.version_info.major}.{sys.version_info.minor} needs "
                "the tomli package: pip install tomli (Python 3.11+ reads TOML without it)"
            ) from None
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}; fix the syntax there") from None


def _parse_yaml(text: str, p: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            f"{p}: reading YAML needs PyYAML: pip install 'lth[yaml]' (or write the configuration "
            "as .toml, which needs nothing extra)"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or " ".join(str(e).split())
        at = f" (at line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML: {problem}{at}; fix the syntax there") from None


def _resolve(raw: Any, p: Path) -> ExperimentConfig:
    if raw is None:  # an empty YAML document
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{p}: the file must hold a mapping of sections ({', '.join(SECTIONS)}), not {raw!r}"
        )
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{p}: unknown top-level key {key!r}; {_where_it_belongs(key)}")
    base = ExperimentConfig()
    if "preset" in raw:
        name = raw["preset"]
        if not isinstance(name, str):
            raise ConfigError(f"{p}: preset = {name!r}: must be a preset's name, e.g. \"lenet300-mnist\"")
        try:
            base = get_preset(name)
        except PresetError as e:
            raise ConfigError(f"{p}: {e}") from None
    d = base.to_dict()
    if "name" in raw:
        d["name"] = raw["name"]
    for section in SECTIONS:
        if section not in raw:
            continue
        values = raw[section]
        if values is None:  # a YAML section whose fields are all commented out
            values = {}
        if not isinstance(values, dict):
            first = fields(SECTIONS[section])[0].name
            raise ConfigError(
                f"{p}: {section} = {values!r}: must be a table of fields, e.g. [{section}] then "
                f"{first} = ... in TOML, or {section}: then an indented {first}: ... in YAML"
            )
        hints = _field_types(section)
        for key, value in values.items():
            d[section][key] = _normalise(value, hints.get(key))
    try:
        return ExperimentConfig.from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def _where_it_belongs(key: Any) -> str:
    homes = [s for s in SECTIONS if key in _field_types(s)]
    if homes:
        return f"it is a field of {homes[0]}: put it under [{homes[0]}] (TOML) or {homes[0]}: (YAML)"
    return f"valid keys: {', '.join(TOP_LEVEL_KEYS)}"


@cache
def _field_types(section: str) -> dict[str, Any]:
    return typing.get_type_hints(SECTIONS[section])


def _is_float_field(hint: Any) -> bool:
    return hint is float or float in typing.get_args(hint)


def _normalise(value: Any, hint: Any) -> Any:
    """Bring a parsed value to the type the field holds; validation then judges it."""
    if hint is None or not _is_float_field(hint):
        return value
    if isinstance(value, str) and _EXPONENT_WITHOUT_POINT.fullmatch(value.strip()):
        return float(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


# ---------------------------------------------------------------------------------------- writing


def dump_config(cfg: ExperimentConfig, fmt: str = "toml") -> str:
    """The text of a ``fmt`` (``"toml"`` or ``"yaml"``) file that :func:`load_config` reads back as ``cfg``.

    Every field is written, with each section's docstring as comment lines above it, so the file
    documents itself for whoever edits it. Raises :class:`ConfigError` for a value the format
    cannot carry back unchanged (see the module docstring).
    """
    if fmt == "yml":
        fmt = "yaml"
    if fmt not in ("toml", "yaml"):
        raise ConfigError(f"dump_config fmt = {fmt!r}: choose one of toml, yaml")
    sep = " = " if fmt == "toml" else ": "
    lines = [
        "# lth experiment configuration. Fields left out take their defaults; a top-level",
        '# preset = "<name>" (see `lth presets`) makes a named preset the base instead.',
        f"name{sep}{_text(cfg.name)}",
    ]
    for section, cls in SECTIONS.items():
        lines.append("")
        lines += [f"# {line}".rstrip() for line in _doc_lines(cls)]
        lines.append(f"[{section}]" if fmt == "toml" else f"{section}:")
        indent = "" if fmt == "toml" else "  "
        hints = _field_types(section)
        for f in fields(cls):
            value = getattr(getattr(cfg, section), f.name)
            where = f"{section}.{f.name}"
            _check_round_trip(where, value, hints[f.name], f.default, fmt)
            if value is None and fmt == "toml":
                lines.append(f"{indent}# {f.name} is unset (None); write {f.name} = <value> to set it")
            else:
                lines.append(f"{indent}{f.name}{sep}{_value(value, fmt)}")
    return "\n".join(lines) + "\n"


def _check_round_trip(where: str, value: Any, hint: Any, default: Any, fmt: str) -> None:
    if value is None and fmt == "toml" and default is not None:
        shown = "(no default)" if default is MISSING else repr(default)
        raise ConfigError(
            f"{where} = None: TOML has no null and reading the field back would give its default "
            f"{shown}; dump this configuration as YAML, or set the field"
        )
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        raise ConfigError(
            f"{where} = {value!r}: an integer in a float field is read back from a file as "
            f"{float(value)!r}, which changes the run directory's hash; build the configuration "
            f"with {float(value)!r}"
        )


def _doc_lines(cls: type) -> list[str]:
    doc = inspect.cleandoc(cls.__doc__ or "")
    return doc.replace("``", "`").splitlines()


def _value(value: Any, fmt: str) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_value(v, fmt) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value, fmt)
    if isinstance(value, str):
        return _text(value)
    raise ConfigError(f"{value!r}: a configuration value must be a number, text, flag or list of them")


def _float_text(value: float, fmt: str) -> str:
    if math.isnan(value):
        return "nan" if fmt == "toml" else ".nan"
    if math.isinf(value):
        sign = "-" if value < 0 else ""
        return f"{sign}inf" if fmt == "toml" else f"{sign}.inf"
    text = repr(value)  # the shortest text that reads back as the same float
    mantissa, e, exponent = text.partition("e")
    if "." not in mantissa:
        # YAML 1.1 (PyYAML) reads "1e-05" as text; "1.0e-05" is a float in both formats.
        mantissa += ".0"
    return mantissa + e + exponent


def _text(value: str) -> str:
    """A double-quoted string that TOML and YAML both read back unchanged."""
    out = []
    for ch in value:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif o < 0x20 or 0x7F <= o <= 0x9F or o in (0xFFFE, 0xFFFF):
            # Control characters must be escaped in TOML and are unprintable to YAML.
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
