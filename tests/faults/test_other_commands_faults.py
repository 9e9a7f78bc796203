"""``export``, ``eval`` and ``data check`` under faults: one line, the exit code, and what was there before kept."""

from __future__ import annotations

import errno
import os

import pytest
import torch
from faultinject import CAUSES, fail_rename, one_line
from PIL import Image

from fcnseg.cli import main


@pytest.mark.parametrize("code", ["ENOSPC", "EACCES", "EROFS", "EIO"])
def test_export_keeps_the_previous_file(checkpoint, tmp_path, capsys, monkeypatch, code):
    out = tmp_path / "model.pt"
    out.write_bytes(b"the previous export")
    fail_rename(monkeypatch, getattr(errno, code), "model.pt")
    argv = ["export", "--weights", str(checkpoint), "--format", "torchscript", "-o", str(out), "--check-sizes", "32x32"]
    assert main(argv) == 1
    line = one_line(capsys.readouterr().err, "export")
    assert line.startswith(f"fcnseg export: error: cannot write {out}: {CAUSES[code]}")
    assert f"; the previous {out} is unchanged; " in line and line.endswith(", then export again")
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file left


@pytest.mark.parametrize("code", ["ENOSPC", "EACCES"])
def test_eval_says_the_scores_were_printed(shapes, checkpoint, tmp_path, capsys, monkeypatch, code):
    out = tmp_path / "scores.json"
    fail_rename(monkeypatch, getattr(errno, code), "scores.json")
    argv = ["eval", "--dataset", "folder", "--data-root", str(shapes), "--weights", str(checkpoint), "--size", "32",
            "--output", str(out), "--no-plot", "--workers", "0", "--no-progress"]  # fmt: skip
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "mean IoU" in captured.out  # the scores reached the screen
    line = one_line(captured.err, "eval")
    assert line.startswith(f"fcnseg eval: error: cannot write {out}: {CAUSES[code]}")
    assert "; the scores are printed above; " in line and line.endswith(", then evaluate again")
    assert not out.exists()


def test_data_check_names_a_mask_its_drive_fails_to_read(shapes, capsys, monkeypatch):
    bad = sorted((shapes / "val" / "masks").iterdir())[0]
    real = Image.open

    def open_(fp, *args, **kwargs):
        if isinstance(fp, (str, os.PathLike)) and os.fspath(fp) == str(bad):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(bad))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", open_)
    monkeypatch.setenv("TORCH_HOME", str(shapes.parent / "no-cache"))  # no cached mask statistics to stand in
    assert main(["data", "check", str(shapes)]) == 1
    line = one_line(capsys.readouterr().err, "data")
    assert line == (
        f"fcnseg data: error: {bad}: input/output error (a failing disk, or a network drive that went away); "
        "check the disk or network drive it lives on, then run again"
    )


@pytest.mark.parametrize("command", ["serve", "segment"])
def test_a_checkpoint_its_drive_fails_to_read(checkpoint, tmp_path, capsys, monkeypatch, command):
    real = torch.load

    def load(f, *args, **kwargs):
        if str(f) == str(checkpoint):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(checkpoint))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    argv = [command, "--weights", str(checkpoint), *(["--port", "0"] if command == "serve" else ["--example"])]
    assert main([*argv, *(["-o", str(tmp_path / "out")] if command == "segment" else [])]) == 1
    assert one_line(capsys.readouterr().err, command) == (
        f"fcnseg {command}: error: {checkpoint}: input/output error (a failing disk, or a network drive that went "
        "away); check the disk or network drive it lives on, then run again"
    )
