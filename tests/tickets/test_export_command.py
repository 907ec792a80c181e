"""The ``lth export`` sub-command (lth.cli.export) on the tickets' runs, and the torch-free import of
lth.tickets that the command line needs."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lth.cli import export as export_command
from lth.cli import main
from lth.tickets import ExportError, export_size, read_ticket
from lth.tickets.format import seal
from tests.helpers import unwritable_folder


def export_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lth")
    export_command.add_parser(parser.add_subparsers(dest="command"))
    return export_command.run(parser.parse_args(["export", *argv]))


def test_cli_export_writes_the_file_and_prints_its_size(run_copy, capsys):
    assert export_cli([str(run_copy), "--level", "2", "--dtype", "float16"]) == 0
    out = capsys.readouterr().out.splitlines()
    path = run_copy / "exports" / "trial0_level2_ticket_final_float16.safetensors"
    assert out[0] == str(path) and path.is_file()
    size = export_size(path)
    assert f"{size.file_bytes:,} bytes = {100 * size.fraction:.1f}% of the dense" in out[1]
    assert "float16 values" in out[1]
    target = run_copy / "x" / "mine.safetensors"
    assert export_cli([str(run_copy), "--level", "1", "--branch", "random_mask", "--weights", "init",
                       "--mask-format", "indices", "--out", str(target)]) == 0
    meta = read_ticket(target).metadata
    assert (meta["branch"], meta["weights"], set(meta["mask_formats"].values())) == \
        ("random_mask", "init", {"indices"})


def test_cli_export_prints_a_path_that_is_not_utf8_with_escapes(run, tmp_path, capsys):
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/run-\xff"))
    shutil.copytree(run, odd)
    assert export_cli([str(odd), "--level", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{tmp_path}/run-\\xff/exports/trial0_level2_ticket_final_float32.safetensors"
    assert (odd / "exports" / "trial0_level2_ticket_final_float32.safetensors").is_file()


def test_the_command_leaves_its_errors_to_lth_main(run, tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        export_cli([str(tmp_path / "nowhere"), "--level", "1"])
    with pytest.raises(SystemExit):  # argparse rejects an unknown dtype itself
        export_cli([str(run), "--level", "1", "--dtype", "float64"])


@pytest.mark.parametrize("case", ["no run", "out inside a file", "unwritable out", "damaged ticket"])
def test_lth_export_errors_are_one_lth_error_line(run, tmp_path, capsys, monkeypatch, case):
    args, words = [str(run), "--level", "2"], ""
    if case == "no run":
        args[0], words = str(tmp_path / "nowhere"), "does not exist"
    elif case == "out inside a file":
        (tmp_path / "afile").write_text("")
        args += ["--out", str(tmp_path / "afile" / "x.safetensors")]
        words = f"{tmp_path / 'afile'} is a file, not a folder; choose another --out"
    elif case == "unwritable out":
        args += ["--out", str(unwritable_folder(tmp_path) / "x.safetensors")]
        words = "make its folder writable, or choose another --out"
    else:  # the file written cannot be read back (here: its metadata lost the layers on the way)
        from lth.tickets import export as export_module

        monkeypatch.setattr(export_module, "seal", lambda tensors, meta: seal(
            tensors, {k: v for k, v in meta.items() if k != "layers"}))
        args += ["--out", str(tmp_path / "x.safetensors")]
        words = "metadata lacks layers"
    code = main(["export", *args])
    err = capsys.readouterr().err
    assert code == 5 and err.startswith("lth: error: ") and err.count("\n") == 1
    assert words in err


def test_importing_the_package_imports_neither_torch_nor_safetensors_torch():
    code = ("import sys, lth.tickets; "
            "bad = [m for m in ('torch', 'numpy', 'safetensors.torch') if m in sys.modules]; "
            "assert not bad, bad; "
            "lth.tickets.sparsify; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
