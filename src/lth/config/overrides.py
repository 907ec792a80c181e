"""``--set section.field=value`` assignments on top of a configuration (the CLI's ``--set``).

A value is parsed by the type of the field's current value: ``true``/``false`` (also ``yes``,
``on``, ``1`` ...) for flags, comma-separated items for lists (``100,200`` or ``[100,200]``), a
whole number for integer fields, ``none``/``null`` to clear an optional number. All assignments are
applied before validation, so cross-field checks see the final values.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from .schema import SECTIONS, ConfigError, ExperimentConfig


def _parse_value(text: str, current: Any, where: str) -> Any:
    """Parse a --set value using the type of the field's current value as a guide."""
    t = text.strip()
    if isinstance(current, bool):
        low = t.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where} = {text!r}: expected true or false")
    if isinstance(current, tuple):
        if t in ("", "()", "[]"):
            return ()
        items = [x.strip() for x in t.strip("()[]").split(",") if x.strip()]
        elem = current[0] if current else None
        return tuple(_parse_scalar(x, elem, where) for x in items)
    if t.lower() in ("none", "null") and (current is None or isinstance(current, float)):
        return None
    return _parse_scalar(t, current, where)


def _parse_scalar(t: str, current: Any, where: str) -> Any:
    if isinstance(current, str):
        return t
    try:
        if isinstance(current, int) and not isinstance(current, bool):
            try:
                return int(t.strip())  # exact: float() would round integers above 2**53
            except ValueError:
                v = float(t)  # 1e3 is a whole number too
            if not v.is_integer():
                raise ValueError
            return int(v)
        if current is None and t.strip().lstrip("+-").isdigit():
            return int(t.strip())
        if isinstance(current, float) or current is None:
            v = float(t)
            # With no current value to go by, text written as a whole number stays an int.
            whole = current is None and v.is_integer() and "." not in t and "e" not in t.lower()
            return int(v) if whole else v
    except ValueError:
        raise ConfigError(f"{where} = {t!r}: expected a {type(current).__name__}") from None
    return t


def apply_overrides(cfg: ExperimentConfig, assignments: list[str]) -> ExperimentConfig:
    """Apply ``section.field=value`` assignments (the CLI's ``--set``); ``name=...`` renames."""
    d = cfg.to_dict()
    for a in assignments:
        if "=" not in a:
            raise ConfigError(f"--set {a!r}: expected section.field=value, e.g. train.lr=0.001")
        key, val = a.split("=", 1)
        key = key.strip()
        if key == "name":
            d["name"] = val
            continue
        parts = key.split(".")
        if len(parts) != 2 or parts[0] not in SECTIONS:
            raise ConfigError(
                f"--set {a!r}: unknown key {key!r}; use section.field with section one of "
                f"{', '.join(SECTIONS)}"
            )
        section, name = parts
        valid = {f.name for f in fields(SECTIONS[section])}
        if name not in valid:
            raise ConfigError(
                f"--set {a!r}: {section} has no field {name!r}; valid: {', '.join(sorted(valid))}"
            )
        d[section][name] = _parse_value(val, d[section][name], key)
    return ExperimentConfig.from_dict(d)
