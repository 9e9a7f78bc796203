"""``--engine ray`` from and to a bucket on the loopback S3 server (``tests/s3server.py``): the actors read the
objects and write the outputs themselves, the masks are the local engine's, a rerun writes nothing but the lock
and the summary, and a store that refuses the workers' credentials stops the run in one line."""

from __future__ import annotations

import io

import boto3
import numpy as np
from PIL import Image
from rayrun import SETTINGS, segment
from s3server import forget_filesystems

RAY = ["--engine", "ray", "--batch-size", "2"]


def _upload(bucket: str, photos) -> None:
    client = boto3.client("s3")
    for path in photos.rglob("*.jpg"):
        client.put_object(Bucket=bucket, Key=f"in/{path.relative_to(photos)}", Body=path.read_bytes())


def _segment(*argv) -> int:
    forget_filesystems()  # as a new process starts: no listing cached from the last run
    return segment(*argv)


def test_bucket_to_bucket_on_ray_writes_the_local_masks_and_a_rerun_writes_nothing(
    ray_local, s3, s3_server, photos, weights, local_run, capsys
):
    _upload(s3, photos)
    argv = (f"s3://{s3}/in/", "-o", f"s3://{s3}/out/", "--weights", weights, *RAY, *SETTINGS)
    assert _segment(*argv) == 1  # the corrupt object
    assert "7 segmented, 1 failed, 0 skipped" in capsys.readouterr().out
    client = boto3.client("s3")
    for mask in local_run.rglob("*_mask.png"):
        key = f"out/{mask.relative_to(local_run)}"
        mine = np.asarray(Image.open(io.BytesIO(client.get_object(Bucket=s3, Key=key)["Body"].read())))
        assert np.array_equal(mine, np.asarray(Image.open(mask))), key

    before = len(s3_server.requests)
    assert _segment(*argv) == 1
    assert "0 segmented, 1 failed, 7 skipped" in capsys.readouterr().out
    writes = sorted(p for m, p in s3_server.requests[before:] if m in ("PUT", "POST", "DELETE"))
    assert writes == sorted([f"/{s3}/out/.fcnseg.lock"] * 2 + [f"/{s3}/out/summary.csv"])


def test_credentials_the_store_rejects_in_the_workers_stop_the_run_in_one_line(
    ray_local, s3, s3_server, photos, weights, capsys
):
    _upload(s3, photos)
    # the driver lists and HEADs the objects; reading them (GET), as the Ray tasks do, is refused
    s3_server.fail("GET", rf"^/{s3}/in/.+", code="InvalidAccessKeyId", status=403)
    argv = (f"s3://{s3}/in/", "-o", f"s3://{s3}/out/", "--weights", weights, *RAY, *SETTINGS)
    assert _segment(*argv) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fcnseg segment: error:")]
    assert len(errors) == 1 and errors[0].startswith("fcnseg segment: error: s3://"), errors
    assert "credentials" in errors[0]
