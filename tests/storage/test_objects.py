"""fcnseg.storage against a real S3 protocol server on loopback: atomic writes, identity, listing, locks, faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import pytest

from fcnseg import storage
from fcnseg.runlock import FolderBusyError
from fcnseg.storage import StorageError


def _keys(bucket: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_a_written_object_reads_back_and_its_identity_follows_its_content(s3):
    url = f"s3://{s3}/out/a.bin"
    storage.atomic_write(url, lambda f: f.write(b"first"))
    assert storage.read_bytes(url) == b"first"
    first = storage.identity(storage.as_path(url))
    storage.atomic_write(url, lambda f: f.write(b"other"))  # same size, same second: only the ETag tells
    second = storage.identity(storage.as_path(url))
    assert first["size"] == second["size"] == 5
    assert first["etag"] != second["etag"]
    assert storage.identity(storage.as_path(f"s3://{s3}/out/missing")) is None


def test_a_write_that_fails_half_way_sends_nothing(s3, s3_server):
    url = f"s3://{s3}/out/a.bin"

    def half(f):
        f.write(b"partial")
        raise RuntimeError("the writer died")

    with pytest.raises(RuntimeError):
        storage.atomic_write(url, half)
    assert _keys(s3) == []
    assert s3_server.writes(s3) == []  # not even an upload started


def test_a_multipart_upload_that_fails_at_completion_leaves_no_object(s3, s3_server, tmp_path):
    """11 MB in 5 MB parts: the parts go up, completing the upload fails (after s3fs's retries); nothing is visible,
    and the upload is aborted."""
    import fsspec

    fs = fsspec.filesystem("s3")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 << 20))
    s3_server.fail("POST", rf"^/{s3}/out/big\.bin$", code="InternalError", status=500)  # CompleteMultipartUpload
    with pytest.raises(OSError):
        fs.put_file(str(big), f"{s3}/out/big.bin", chunksize=5 << 20)
    s3_server.heal()
    assert _keys(s3) == []
    assert boto3.client("s3").list_multipart_uploads(Bucket=s3).get("Uploads", []) == []


def test_listing_a_prefix_walks_it_sorted_with_relative_names(s3):
    client = boto3.client("s3")
    for key in ("in/b.jpg", "in/a.PNG", "in/sub/c.jpg", "in/notes.txt", "other/d.jpg"):
        client.put_object(Bucket=s3, Key=key, Body=b"x")
    found = [(str(p), str(rel)) for p, rel in storage.iter_files(storage.as_path(f"s3://{s3}/in/"), (".jpg", ".png"))]
    assert found == [
        (f"s3://{s3}/in/a.PNG", "a.PNG"),
        (f"s3://{s3}/in/b.jpg", "b.jpg"),
        (f"s3://{s3}/in/sub/c.jpg", "sub/c.jpg"),
    ]


def test_the_lock_object_admits_one_run(s3):
    first = storage.run_lock(f"s3://{s3}/out", "segment")
    first.acquire()
    assert json.loads(storage.read_bytes(f"s3://{s3}/out/.fcnseg.lock"))["pid"] == os.getpid()
    second = storage.run_lock(f"s3://{s3}/out", "segment")
    with pytest.raises(FolderBusyError, match=rf"s3://{s3}/out is being written by fcnseg segment \(pid {os.getpid()}"):
        second.acquire()
    first.release()
    assert _keys(s3) == []
    second.acquire()  # free again
    second.release()


def test_a_lock_left_by_a_dead_run_of_this_host_is_taken_over(s3, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    owner = {"pid": pid, "host": __import__("socket").gethostname(), "command": "segment"}
    boto3.client("s3").put_object(Bucket=s3, Key="out/.fcnseg.lock", Body=json.dumps(owner).encode())
    lock = storage.run_lock(f"s3://{s3}/out", "segment")
    lock.acquire()
    assert f"taking over the lock of fcnseg segment (pid {pid} on this host)" in capsys.readouterr().err
    lock.release()


def test_a_lock_of_another_host_is_never_taken_over(s3):
    owner = {"pid": 1, "host": "elsewhere", "command": "segment"}
    boto3.client("s3").put_object(Bucket=s3, Key="out/.fcnseg.lock", Body=json.dumps(owner).encode())
    with pytest.raises(FolderBusyError, match=f"pid 1 on elsewhere.*delete s3://{s3}/out/.fcnseg.lock"):
        storage.run_lock(f"s3://{s3}/out", "segment").acquire()


def test_a_missing_bucket_is_one_line(s3):
    with pytest.raises(StorageError, match=r"s3://no-such-bucket-here/x: no such bucket 'no-such-bucket-here'"):
        storage.atomic_write("s3://no-such-bucket-here/x", lambda f: f.write(b"x"))


def test_missing_credentials_are_one_line(s3, monkeypatch):
    from s3server import forget_filesystems

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    forget_filesystems()
    with pytest.raises(StorageError, match=rf"s3://{s3}/x: no credentials found; give credentials"):
        storage.read_bytes(f"s3://{s3}/x")


def test_throttling_is_retried_then_reported(s3, s3_server):
    url = f"s3://{s3}/out/a.bin"
    s3_server.fail("PUT", rf"^/{s3}/out/a\.bin$", times=2)  # two SlowDowns, then the store accepts
    storage.atomic_write(url, lambda f: f.write(b"data"))
    assert storage.read_bytes(url) == b"data"
    s3_server.fail("PUT", rf"^/{s3}/out/b\.bin$")  # always
    with pytest.raises(StorageError, match=rf"s3://{s3}/out/b.bin: the store is throttling requests"):
        storage.atomic_write(f"s3://{s3}/out/b.bin", lambda f: f.write(b"data"))
    assert _keys(s3) == ["out/a.bin"]


def test_without_the_cloud_extra_a_url_is_one_line_saying_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "upath", None)  # as if universal-pathlib were not installed
    with pytest.raises(StorageError, match=r"s3://b/x: reading and writing URLs needs fsspec and s3fs; pip install"):
        storage.as_path("s3://b/x")


def test_https_is_read_only():
    with pytest.raises(StorageError, match="https:// URLs are read-only"):
        storage.atomic_write("https://example.com/x.png", lambda f: f.write(b"x"))
