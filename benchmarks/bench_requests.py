"""Requests an S3 store receives per image from ``fcnseg segment s3://.../in/ -o s3://.../out/``: a first run and a
re-run (all skipped), by kind. Counts, not times: the input of the "At scale" cost model (a store bills and
throttles by request). Run against moto's S3 server on 127.0.0.1 (``pip install 'moto[server]'``), which answers
the same requests a real bucket would get from s3fs.

    python benchmarks/bench_requests.py --images 16
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fcnseg.cli import main
from fcnseg.models import fcn_resnet50

RESULTS = Path(__file__).resolve().parent / "results" / "bench_requests.json"
KINDS = ("GET", "HEAD", "LIST", "PUT", "DELETE", "POST")


class CountingS3:
    """moto's S3 app on a free loopback port; ``log`` holds (method, path?query) of every request."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)
        self.log: list[tuple[str, str]] = []

        def counting(environ, start_response):
            self.log.append((environ["REQUEST_METHOD"], f"{environ['PATH_INFO']}?{environ.get('QUERY_STRING', '')}"))
            return app(environ, start_response)

        self.server = make_server("127.0.0.1", 0, counting, threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"


def _kind(method: str, path: str) -> str:
    return "LIST" if method == "GET" and "list-type" in path else method


def main_(n: int) -> dict:
    s3 = CountingS3()
    os.environ.update(AWS_ENDPOINT_URL=s3.url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket="bench")
    rng = np.random.default_rng(0)
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
        client.put_object(Bucket="bench", Key=f"in/photo{i:04d}.jpg", Body=buf.getvalue())
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        weights = Path(tmp) / "w.pth"
        torch.save({"model": fcn_resnet50(num_classes=3, aux_loss=False).state_dict(), "categories": list("abc")},
                   weights)  # fmt: skip
        rows = {}
        for run in ("first run", "re-run"):
            start = len(s3.log)
            code = main(["segment", "s3://bench/in/", "-o", "s3://bench/out/", "--weights", str(weights),
                         "--size", "32", "--quiet"])  # fmt: skip
            assert code == 0, code
            counts = collections.Counter(_kind(m, p) for m, p in s3.log[start:])
            rows[run] = {k: counts[k] / n for k in KINDS}
            rows[run]["total"] = (len(s3.log) - start) / n
    return {"images": n, "outputs": "mask,overlay (default)", "per_image": rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    result = main_(parser.parse_args().images)
    print(f"requests per image, {result['images']} images, bucket -> bucket, {result['outputs']}")
    print(f"{'run':<10} " + " ".join(f"{k:>7}" for k in ("GET", "HEAD", "LIST", "PUT", "DELETE", "POST", "total")))
    for run, row in result["per_image"].items():
        print(
            f"{run:<10} "
            + " ".join(f"{row[k]:7.2f}" for k in ("GET", "HEAD", "LIST", "PUT", "DELETE", "POST", "total"))
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
