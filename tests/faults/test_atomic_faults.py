"""``atomic_path`` under write faults: the OSError surfaces about the final file, the old file survives, no temporary
file stays, free space is checked first; and a SIGKILL mid-write leaves nothing under a final name that fails to load.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from faultinject import _FailingFile, fill, small_disk

from fcnseg import _atomic
from fcnseg._atomic import WriteError, atomic_path
from fcnseg.faults import describe

SRC = Path(__file__).resolve().parents[2] / "src"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EDQUOT])
def test_torch_save_failing_mid_write_surfaces_the_errno_about_the_final_name(tmp_path, code):
    path = tmp_path / "last.pth"
    torch.save({"epoch": 1, "w": torch.ones(4)}, path)
    before = path.read_bytes()
    with pytest.raises(WriteError) as caught, atomic_path(path, durable=True) as tmp, open(tmp, "wb") as f:
        torch.save({"epoch": 2, "w": torch.zeros(100_000)}, _FailingFile(f, code, after=50_000))
    e = caught.value
    # torch reported it as "RuntimeError: [enforce fail at inline_container.cc...] unexpected pos": unwrapped
    assert isinstance(e.__cause__, RuntimeError) and "enforce fail" in str(e.__cause__)
    assert (e.errno, e.filename, e.written) == (code, str(path), 50_000)
    assert e.needed is None  # the old file (a few hundred bytes) was no estimate: only a lower bound is known
    assert path.read_bytes() == before and leftovers(tmp_path) == []
    if code == errno.ENOSPC:
        line = describe(e)
        assert line.startswith(f"cannot write {path}: the disk is full (needs more than the 50 kB written, ")
        assert "free more than 50 kB on" in line


def test_free_space_is_checked_before_a_checkpoint_is_written(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    path.write_bytes(b"x" * 3_000_000)  # the new checkpoint will be about as large
    monkeypatch.setattr(_atomic.shutil, "disk_usage", lambda p: _usage(1_000_000))
    started = []
    with pytest.raises(WriteError) as caught, atomic_path(path, durable=True) as tmp:
        started.append(tmp)  # never reached: refused before a byte is written
    assert started == [] and caught.value.errno == errno.ENOSPC
    assert (caught.value.needed, caught.value.free) == (3_000_000, 1_000_000)
    assert "the disk is full (needs 3 MB, 1 MB free on " in describe(caught.value)
    assert "free at least 2 MB on" in describe(caught.value)
    assert path.read_bytes() == b"x" * 3_000_000


def test_a_first_checkpoint_is_refused_before_writing_on_a_disk_too_small_for_its_tensors(tmp_path, monkeypatch):
    from fcnseg.train.checkpoint import save_checkpoint

    path = tmp_path / "last.pth"  # no earlier checkpoint whose size could tell
    weights = torch.ones(500_000)  # 2 MB of float32
    monkeypatch.setattr(_atomic.shutil, "disk_usage", lambda p: _usage(1_000_000))
    with pytest.raises(WriteError) as caught:
        save_checkpoint({"epoch": 1, "model": {"w": weights, "head": weights[:10]}, "steps": [torch.zeros(2)]}, path)
    assert caught.value.errno == errno.ENOSPC
    assert (caught.value.needed, caught.value.free) == (2_000_008, 1_000_000)  # the view shares w's storage
    assert not path.exists() and leftovers(tmp_path) == []


def test_tensor_bytes_is_a_lower_bound_of_the_checkpoint_file(tmp_path):
    from fcnseg.train.checkpoint import save_checkpoint, tensor_bytes

    weights = torch.arange(1000, dtype=torch.float64)
    obj = {"model": {"w": weights, "w_view": weights[10:20]}, "rng": (torch.zeros(3, dtype=torch.uint8), 7), "n": 1}
    assert tensor_bytes(obj) == 8000 + 3
    save_checkpoint(obj, tmp_path / "c.pth")
    assert tensor_bytes(obj) <= (tmp_path / "c.pth").stat().st_size


def _usage(free: int) -> shutil._ntuple_diskusage:
    return shutil._ntuple_diskusage(10**12, 10**12 - free, free)


def test_an_error_about_another_file_is_left_as_it_is(tmp_path):
    missing = tmp_path / "input.png"
    with pytest.raises(FileNotFoundError) as caught, atomic_path(tmp_path / "out.png") as tmp:
        tmp.write_bytes(missing.read_bytes())
    assert caught.value.filename == str(missing) and not isinstance(caught.value, WriteError)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_real_full_disk(tmp_path):
    """torch.save by path loses the OSError entirely (``basic_ios::clear: iostream error``): a disk left full
    still says what happened."""
    with small_disk(tmp_path / "disk", "1m") as disk:
        fill(disk)
        for how in ("file object", "path"):
            path = disk / f"{how[0]}.pth"
            with pytest.raises(WriteError) as caught, atomic_path(path) as tmp:
                if how == "path":
                    torch.save({"w": torch.zeros(300_000)}, tmp)
                else:
                    with open(tmp, "wb") as f:
                        torch.save({"w": torch.zeros(300_000)}, f)
            assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(path)), how
            assert leftovers(disk) == [] and not path.exists()


_KILLED_MID_WRITE = """
import sys, torch
from fcnseg.train import save_checkpoint

path = sys.argv[1]
save_checkpoint({"epoch": 1, "w": torch.ones(200_000)}, path)  # a good checkpoint under the final name
real = torch.save

class Paused:
    def __init__(self, f):
        self.f, self.n = f, 0
    def write(self, data):
        self.n += len(data)
        if self.n > 400_000:  # half-way through: say so, then wait to be killed
            print("mid-write", flush=True)
            sys.stdin.read()
        return self.f.write(data)
    def flush(self):
        self.f.flush()

torch.save = lambda obj, f: real(obj, Paused(f))
save_checkpoint({"epoch": 2, "w": torch.zeros(200_000)}, path)
"""


def test_sigkill_mid_write_leaves_no_final_file_that_fails_to_load(tmp_path):
    path = tmp_path / "last.pth"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_KILLED_MID_WRITE), str(path)],
        env={**os.environ, "PYTHONPATH": str(SRC)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline() == "mid-write\n"  # the event: it is half-way through the second checkpoint
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finals = [p for p in tmp_path.iterdir() if not p.name.endswith(".tmp")]
    assert finals == [path]
    assert torch.load(path, weights_only=True)["epoch"] == 1  # the previous checkpoint, whole
