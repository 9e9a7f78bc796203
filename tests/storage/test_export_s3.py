"""``fcnseg export -o s3://...``: the checked file is uploaded whole; a failed check leaves the object as it was."""

from __future__ import annotations

import boto3
from s3server import forget_filesystems

from fcnseg.cli import main
from fcnseg.export import ParityReport, read_metadata


def _export(*args) -> int:
    forget_filesystems()
    return main(["export", *map(str, args), "--format", "torchscript", "--check-sizes", "32x40", "--threads", "2"])


def test_an_export_to_a_bucket_is_uploaded_once_checked_and_a_failed_check_keeps_the_old_object(
    s3, checkpoint, tmp_path, monkeypatch, capsys
):
    url = f"s3://{s3}/models/model.pt"
    assert _export("--weights", checkpoint, "-o", url) == 0
    assert f"parity ok on 2 shapes; wrote {url}" in capsys.readouterr().out
    client = boto3.client("s3")
    local = tmp_path / "model.pt"
    local.write_bytes(client.get_object(Bucket=s3, Key="models/model.pt")["Body"].read())
    assert read_metadata(local)["categories"] == ["background", "thing", "stuff"]
    before = client.head_object(Bucket=s3, Key="models/model.pt")["ETag"]

    def failing(*args, **kwargs):
        return [ParityReport((1, 3, 8, 8), 1.0, 0.5, 7, 1e-4, ok=False)]

    monkeypatch.setattr("fcnseg.export.check_parity", failing)
    assert _export("--weights", checkpoint, "-o", url) == 1
    assert "parity check failed on 1 of 1 shapes; the previous file is kept" in capsys.readouterr().err
    assert client.head_object(Bucket=s3, Key="models/model.pt")["ETag"] == before
