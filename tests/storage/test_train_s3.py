"""``fcnseg train`` with its dataset and its run folder in a bucket on the loopback S3 server."""

from __future__ import annotations

import io

import boto3
import pytest
import torch
from s3server import forget_filesystems
from shapes_data import write_shapes_dataset

from fcnseg.cli import main


def _objects(bucket: str, prefix: str) -> dict[str, str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["ETag"] for o in listing.get("Contents", [])}


def _train(*args) -> int:
    forget_filesystems()  # each command as a new process
    return main(["train", *map(str, args), "--no-progress"])


@pytest.fixture
def data_in_bucket(s3, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("FCNSEG_CACHE", str(tmp_path / "cache"))
    local = write_shapes_dataset(tmp_path / "shapes", n_train=8, n_val=2, seed=3)
    client = boto3.client("s3")
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.put_object(Bucket=s3, Key=f"data/{path.relative_to(local)}", Body=path.read_bytes())
    return f"s3://{s3}/data"


@pytest.mark.slow
def test_a_run_reads_its_data_from_a_bucket_and_keeps_its_folder_there(s3, s3_server, data_in_bucket, capsys):
    run = f"s3://{s3}/runs/a"
    recipe = ("--weights-backbone", "none", "--epochs", "1", "-b", "4", "--base-size", "32", "--crop-size", "32",
              "--workers", "0")  # fmt: skip
    assert _train("--data-root", data_in_bucket, *recipe, "--output-dir", run) == 0
    assert f"last checkpoint: {run}/last.pth" in capsys.readouterr().out
    kept = _objects(s3, "runs/a/")
    assert sorted(kept) == ["runs/a/best.pth", "runs/a/last.pth", "runs/a/log.jsonl"]  # the lock object is gone
    body = boto3.client("s3").get_object(Bucket=s3, Key="runs/a/last.pth")["Body"].read()
    ckpt = torch.load(io.BytesIO(body), weights_only=True)  # a whole checkpoint
    assert ckpt["categories"] == ["background", "disc", "square"] and (ckpt["epoch"], ckpt["step"]) == (1, 2)

    # a second run into the prefix finds the first one's files there, as on disk
    assert _train("--data-root", data_in_bucket, *recipe, "--output-dir", run) == 1
    assert "already holds a run (best.pth, last.pth, log.jsonl); continue it with --resume" in capsys.readouterr().err

    # resuming from the bucket: the finished run has nothing to do, its objects stay as they were, and the data
    # mirror is not fetched again
    before = len(s3_server.requests)
    assert _train("--resume", f"{run}/last.pth") == 0
    assert _objects(s3, "runs/a/") == kept
    assert not [p for m, p in s3_server.requests[before:] if m == "GET" and p.startswith(f"/{s3}/data/")]
