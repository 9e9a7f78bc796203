"""``file_stamp``: the one fingerprint (size, mtime_ns) behind output records and the data-check cache."""

from __future__ import annotations

import os

from fcnseg._stamp import file_stamp
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
