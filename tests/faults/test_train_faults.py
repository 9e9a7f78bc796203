"""``fcnseg train`` under faults: one line naming the file, the cause, the checkpoint that survived and the
``--resume`` to continue from it; the checkpoint on disk is whole."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from faultinject import CAUSES, fail_torch_save, one_line, small_disk

from fcnseg.cli import main
from fcnseg.data import folder

pytestmark = pytest.mark.slow  # each test trains FCN-ResNet50 for an epoch and writes 280 MB checkpoints


def train(data: Path, out: Path, *more: str) -> int:
    return main(["train", "--data-root", str(data), "--weights-backbone", "none", "--epochs", "1", "-b", "4",
                 "--base-size", "32", "--crop-size", "32", "--workers", "0", "--no-progress",
                 "--output-dir", str(out), *more])  # fmt: skip


def files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize("code", ["ENOSPC", "EACCES", "EROFS", "EIO"])
def test_a_checkpoint_write_fault_names_the_file_and_the_checkpoint_kept(shapes, tmp_path, capsys, monkeypatch, code):
    out = tmp_path / "run"
    fail_torch_save(monkeypatch, getattr(errno, code), "best.pth")  # mid-write, as a disk fails
    assert train(shapes, out) == 1
    line = one_line(capsys.readouterr().err, "train")
    assert line.startswith(f"fcnseg train: error: cannot write {out / 'best.pth'}: {CAUSES[code]}")
    assert "; last.pth from epoch 1 is intact; " in line
    assert line.endswith(f", then continue with --resume {out / 'last.pth'}")
    assert files(out) == ["last.pth", "log.jsonl"]  # no best.pth, whole or partial, and no temporary file
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 1


def test_debug_adds_the_traceback(shapes, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FCNSEG_DEBUG", "1")
    fail_torch_save(monkeypatch, errno.ENOSPC, "best.pth")
    assert train(shapes, tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "inline_container.cc" in err  # torch's wrapper, shown to whoever debugs
    assert err.splitlines()[-1].startswith("fcnseg train: error: cannot write ")


def test_a_mask_that_vanishes_mid_run(shapes, tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    for p in shapes.rglob("*"):  # a copy: the test deletes a file of it
        if p.is_file():
            (data / p.relative_to(shapes)).parent.mkdir(parents=True, exist_ok=True)
            (data / p.relative_to(shapes)).write_bytes(p.read_bytes())
    gone = sorted((data / "train" / "masks").iterdir())[0]
    real = folder.read_mask

    def read_mask(path, *args, **kwargs):
        gone.unlink(missing_ok=True)  # the drive "goes away" once training has started
        return real(path, *args, **kwargs)

    monkeypatch.setattr(folder, "read_mask", read_mask)
    out = tmp_path / "run"
    assert train(data, out) == 1
    line = one_line(capsys.readouterr().err, "train")
    assert line == (
        f"fcnseg train: error: {gone}: no such file (deleted, or its drive unmounted?); no checkpoint was saved yet; "
        "check the disk or network drive it lives on, then start over in the same folder with --exist-ok"
    )


def test_a_real_full_disk_is_found_before_the_next_checkpoint(shapes, tmp_path, capsys):
    """Epoch 1's ``last.pth`` (283 MB) and ``best.pth`` (weights only, 142 MB) fit on the disk, a second
    ``last.pth`` beside them does not: epoch 2's is refused before a byte is written (it needs what epoch 1's
    needed), with the numbers, and epoch 1's stays whole."""
    with small_disk(tmp_path / "disk", "600m") as disk:
        out = disk / "run"
        assert train(shapes, out, "--epochs", "2") == 1
        line = one_line(capsys.readouterr().err, "train")
        size = (out / "last.pth").stat().st_size
        assert line.startswith(
            f"fcnseg train: error: cannot write {out / 'last.pth'}: the disk is full (needs {round(size / 1e6)} MB, "
        )
        assert f" free on {disk}); last.pth from epoch 1 is intact; free at least " in line
        assert line.endswith(f" MB on {disk}, then continue with --resume {out / 'last.pth'}")
        assert files(out) == ["best.pth", "last.pth", "log.jsonl"]
        assert torch.load(out / "last.pth", weights_only=True, mmap=True)["epoch"] == 1
