"""``fcnseg segment`` from and to a bucket on the loopback S3 server: the disk's names, records, skips, lock and
one-line faults, the outputs identical to a local run's."""

from __future__ import annotations

import io
from pathlib import Path

import boto3
import numpy as np
import pytest
from imagefiles import photo
from PIL import Image
from s3server import enforced_auth, forget_filesystems, keys_allowed

from fcnseg.cli import main

PHOTOS = {"in/a.png": (40, 56, 0), "in/b.png": (48, 32, 1), "in/sub/c.png": (36, 36, 2)}  # key: (h, w, seed)


def _png(h: int, w: int, seed: int) -> bytes:
    buf = io.BytesIO()
    photo(h, w, seed=seed).save(buf, format="PNG")
    return buf.getvalue()


def _put(bucket: str, key: str, body: bytes) -> None:
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body)


def _get(bucket: str, key: str) -> bytes:
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def _objects(bucket: str, prefix: str) -> dict[str, str]:
    """key -> ETag of every object under ``prefix``."""
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["ETag"] for o in listing.get("Contents", [])}


def _segment(*args) -> int:
    forget_filesystems()  # each run starts as a new process would: no listing cached from the last one
    return main(["segment", *map(str, args), "--size", "32", "--quiet", "--workers", "0"])


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("fcnseg segment: error:")]


def _summary_line(capsys) -> str:
    return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("fcnseg segment:"))


@pytest.fixture
def photos(s3, tmp_path) -> Path:
    """The photos in the bucket under in/, and the same files in a local folder."""
    local = tmp_path / "in"
    for key, (h, w, seed) in PHOTOS.items():
        _put(s3, key, _png(h, w, seed))
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(_png(h, w, seed))
    return local


def test_bucket_to_bucket_matches_a_local_run_and_a_rerun_rewrites_nothing(
    s3, s3_server, photos, checkpoint, tmp_path, capsys
):
    _put(s3, "w.pth", checkpoint.read_bytes())
    assert _segment(photos, "-o", tmp_path / "out", "--weights", checkpoint) == 0
    assert _segment(f"s3://{s3}/in/", "-o", f"s3://{s3}/out/", "--weights", f"s3://{s3}/w.pth") == 0
    assert "3 segmented, 0 failed, 0 skipped" in _summary_line(capsys)
    local = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    remote = _objects(s3, "out/")
    assert sorted(k.removeprefix("out/") for k in remote) == local  # same names, records and summary
    for name in ("a", "b", "sub/c"):
        mine = np.asarray(Image.open(io.BytesIO(_get(s3, f"out/{name}_mask.png"))))
        assert np.array_equal(mine, np.asarray(Image.open(tmp_path / "out" / f"{name}_mask.png")))
    assert ".fcnseg.lock" not in str(remote)  # released

    before = len(s3_server.requests)
    assert _segment(f"s3://{s3}/in/", "-o", f"s3://{s3}/out/", "--weights", f"s3://{s3}/w.pth") == 0
    assert "0 segmented, 0 failed, 3 skipped" in _summary_line(capsys)
    writes = [p for m, p in s3_server.requests[before:] if m in ("PUT", "POST", "DELETE")]
    assert sorted(writes) == sorted([f"/{s3}/out/.fcnseg.lock", f"/{s3}/out/.fcnseg.lock", f"/{s3}/out/summary.csv"])
    assert {k: v for k, v in _objects(s3, "out/").items() if k != "out/summary.csv"} == {
        k: v for k, v in remote.items() if k != "out/summary.csv"
    }  # every mask, overlay and record is the very object of the first run


def test_an_object_rewritten_in_place_is_segmented_again(s3, photos, checkpoint, tmp_path, capsys):
    args = (f"s3://{s3}/in/", "-o", f"s3://{s3}/out/", "--weights", checkpoint, "--save", "mask")
    assert _segment(*args) == 0
    _put(s3, "in/b.png", _png(48, 32, seed=7))  # same name, same size of image, new content
    capsys.readouterr()
    assert _segment(*args) == 0
    assert "1 segmented, 0 failed, 2 skipped" in _summary_line(capsys)
    photo(48, 32, seed=7).save(tmp_path / "b7.png")
    assert _segment(tmp_path / "b7.png", "-o", tmp_path / "out", "--weights", checkpoint, "--save", "mask") == 0
    mine = np.asarray(Image.open(io.BytesIO(_get(s3, "out/b_mask.png"))))
    assert np.array_equal(mine, np.asarray(Image.open(tmp_path / "out" / "b7_mask.png")))


def test_a_second_run_into_the_same_prefix_is_refused(s3, photos, checkpoint, capsys):
    from fcnseg.storage import run_lock

    held = run_lock(f"s3://{s3}/out", "segment")
    held.acquire()  # a run in progress (this live process)
    try:
        assert _segment(f"s3://{s3}/in/", "-o", f"s3://{s3}/out", "--weights", checkpoint) == 1
    finally:
        held.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"s3://{s3}/out is being written by fcnseg segment (pid" in err[0]
    assert _objects(s3, "out/") == {}


def test_a_corrupt_object_fails_alone(s3, photos, checkpoint, capsys):
    _put(s3, "in/bad.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert _segment(f"s3://{s3}/in/", "-o", f"s3://{s3}/out/", "--weights", checkpoint, "--save", "mask") == 1
    captured = capsys.readouterr()
    assert f"error: s3://{s3}/in/bad.png: corrupt or truncated image" in captured.err
    assert "3 segmented, 1 failed, 0 skipped" in captured.out
    assert sorted(k for k in _objects(s3, "out/") if k.endswith("_mask.png")) == [
        "out/a_mask.png", "out/b_mask.png", "out/sub/c_mask.png",
    ]  # fmt: skip


def test_an_upload_failing_half_way_leaves_no_output_of_that_image_and_a_rerun_redoes_it(
    s3, s3_server, photos, checkpoint, capsys
):
    """b's overlay cannot be uploaded (the store answers 500): b's mask is taken back, its record lists no output,
    the run stops with one line; once the store is well, a re-run does b and skips the others."""
    args = (f"s3://{s3}/in/", "-o", f"s3://{s3}/out/", "--weights", checkpoint)
    s3_server.fail("PUT", rf"^/{s3}/out/b_overlay\.jpg$", code="InternalError", status=500)
    assert _segment(*args) == 1
    err = _errors(capsys)
    assert len(err) == 1 and f"s3://{s3}/out/b_overlay.jpg: the store failed the request (InternalError" in err[0]
    left = _objects(s3, "out/")
    assert "out/b_overlay.jpg" not in left and "out/b_mask.png" not in left
    assert b'"outputs": []' in _get(s3, "out/.fcnseg/b.json")
    s3_server.heal()
    assert _segment(*args) == 0
    assert "1 segmented, 0 failed, 2 skipped" in _summary_line(capsys)
    assert {"out/b_overlay.jpg", "out/b_mask.png"} <= set(_objects(s3, "out/"))


def test_throttling_that_outlasts_the_retries_is_one_line(s3, s3_server, photos, checkpoint, capsys):
    """(Throttling that passes is retried: tests/storage/test_objects.py.)"""
    s3_server.fail("PUT", rf"^/{s3}/out/")  # every write, for good
    assert _segment(f"s3://{s3}/in/", "-o", f"s3://{s3}/out/", "--weights", checkpoint) == 1
    err = _errors(capsys)
    assert len(err) == 1 and "the store is throttling requests (SlowDown" in err[0]


def test_a_missing_bucket_is_one_line(s3, photos, checkpoint, capsys):
    assert _segment(f"s3://{s3}/in/", "-o", "s3://no-such-bucket-x/out", "--weights", checkpoint) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "fcnseg segment: error: s3://no-such-bucket-x/out/.fcnseg.lock: no such bucket 'no-such-bucket-x'; check its "
        "name, and the endpoint (AWS_ENDPOINT_URL)"
    ]


def test_missing_weights_object_is_one_line(s3, photos, capsys):
    assert _segment(f"s3://{s3}/in/", "-o", f"s3://{s3}/out/", "--weights", f"s3://{s3}/nope.pth") == 1
    assert capsys.readouterr().err.strip() == f"fcnseg segment: error: s3://{s3}/nope.pth: no such checkpoint object"


def test_credentials_that_may_only_read_are_refused_in_one_line_before_any_work(
    s3, photos, checkpoint, monkeypatch, capsys
):
    for key, value in keys_allowed(["s3:GetObject", "s3:ListBucket"]).items():
        monkeypatch.setenv(key, value)
    with enforced_auth():
        assert _segment(f"s3://{s3}/in/", "-o", f"s3://{s3}/out/", "--weights", checkpoint) == 1
    assert _errors(capsys) == [
        f"fcnseg segment: error: s3://{s3}/out/.fcnseg.lock: access denied; check that the credentials in use may "
        "write to it (or that they are the right ones)"
    ]
    assert _objects(s3, "out/") == {}


def test_wrong_credentials_are_one_line(s3, photos, checkpoint, monkeypatch, capsys):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with enforced_auth():
        assert _segment(f"s3://{s3}/in/", "-o", str(checkpoint.parent / "out"), "--weights", checkpoint) == 1
    err = _errors(capsys)
    assert len(err) == 1 and err[0].startswith(f"fcnseg segment: error: s3://{s3}/in")
    assert "access denied" in err[0] or "rejected the credentials" in err[0]
