"""``file_stamp``: the one fingerprint (size, mtime_ns) behind output records and the data-check cache."""

from __future__ import annotations

import hashlib
import os

from fcnseg._stamp import change_stamp, content_hash, file_stamp
from fcnseg.outputs import source_of


def test_stamp_changes_with_the_file_and_is_none_when_missing(tmp_path):
    path = tmp_path / "a.png"
    assert file_stamp(path) is None
    path.write_bytes(b"1234")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert file_stamp(path) == (4, 1_000_000_000)
    path.write_bytes(b"12345")
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    assert file_stamp(path) == (5, 2_000_000_000)
    assert source_of(path) == {"path": os.path.realpath(path), "size": 5, "mtime_ns": 2_000_000_000}
    assert source_of(tmp_path / "gone.png")["size"] is None


def test_change_stamp_sees_an_edit_that_restores_size_and_mtime(tmp_path):
    """The edit ``exiftool -P`` makes: new bytes, the same size, the old mtime put back. ``file_stamp`` cannot tell;
    the ctime (set by the kernel on the write and on the utime) can."""
    path = tmp_path / "a.jpg"
    path.write_bytes(b"1234")
    before, old = change_stamp(path), file_stamp(path)
    st = os.stat(path)
    probe = tmp_path / "probe"
    probe.touch()
    while os.stat(probe).st_ctime_ns <= st.st_ctime_ns:  # the file system's clock (coarse: a few ms) has moved on
        os.utime(probe)
    with open(path, "r+b") as f:
        f.write(b"4321")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_stamp(path) == old and change_stamp(path) != before
    assert content_hash(path) == hashlib.sha256(b"4321").hexdigest()


def test_a_named_pipe_is_not_hashed(tmp_path):
    """Opening a FIFO waits for a writer: the hash leaves it to its decoder (which reads it once)."""
    os.mkfifo(tmp_path / "p.png")
    assert content_hash(tmp_path / "p.png") is None and content_hash(tmp_path / "gone.png") is None
