"""How long Label Studio takes to get fcnseg's predictions for N photos, against segmenting them directly.

Needs a running Label Studio (``--label-studio-url``, ``--token``: a legacy API token; started with
``ML_BLOCK_LOCAL_IP=false SSRF_PROTECTION_ENABLED=false`` so it accepts a model on 127.0.0.1). The script:

1. starts ``fcnseg serve`` (this tree, 127.0.0.1, an API key, ``--threads T``, the given weights) fetching task
   images from that Label Studio, and waits until it is ready;
2. creates a brush project, uploads N photos (fcnseg's bundled ones, cycled, each cycle mirrored so that every file
   differs), connects the server as the project's model (Basic auth), and times Label Studio's *Retrieve
   Predictions* action on all tasks (one ``/predict`` with N tasks: fetch from Label Studio, segment with
   confidence and entropy, brush RLE, store), then checks that every task got a prediction;
3. in this process, with the same weights and T threads, times ``Segmenter.predict_batch(confidence=True)`` on the
   same N photos: the model's own share of the work.

Prints a table and writes JSON; the ratio (Label Studio round trip / direct) is what carries over between
machines, the seconds are this machine's under its load at the time (reported).

    PYTHONPATH=src python benchmarks/bench_labelstudio.py --label-studio-url http://127.0.0.1:8080 --token TOKEN \\
        --weights model.pth -n 20 --json benchmarks/results/bench_labelstudio.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parents[1]
ASSETS = HERE / "src" / "fcnseg" / "assets"
CONFIG = """<View><Image name="image" value="$image"/>
<BrushLabels name="label" toName="image">{labels}</BrushLabels></View>"""


def photos(n: int) -> list[tuple[str, bytes]]:
    """``n`` distinct JPEGs: the bundled photos, cycled; odd cycles mirrored."""
    files = sorted(ASSETS.glob("*.jpg"))
    out = []
    for i in range(n):
        image = Image.open(files[i % len(files)]).convert("RGB")
        if (i // len(files)) % 2:
            image = ImageOps.mirror(image)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=92)
        out.append((f"{i:03d}-{files[i % len(files)].name}", buf.getvalue()))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, key: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "LABEL_STUDIO_URL": args.label_studio_url, "LABEL_STUDIO_API_KEY": args.token,
           "PYTHONPATH": str(HERE / "src")}  # fmt: skip
    cmd = [sys.executable, "-m", "fcnseg", "serve", "--weights", args.weights, "--port", str(port), "--api-key", key,
           "--threads", str(args.threads), "--device", "cpu", "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"fcnseg serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    sys.exit("fcnseg serve did not get ready within 600 s")


def through_label_studio(args: argparse.Namespace, files: list[tuple[str, bytes]], categories: list[str]) -> dict:
    key, port = secrets.token_hex(16), free_port()
    server = start_server(args, key, port)
    try:
        ls = httpx.Client(base_url=args.label_studio_url, headers={"Authorization": f"Token {args.token}"},
                          timeout=3600)  # fmt: skip
        labels = "".join(f'<Label value="{name}"/>' for name in categories[1:])
        body = {"title": f"bench {time.strftime('%H%M%S')}", "label_config": CONFIG.format(labels=labels)}
        project = ls.post("/api/projects", json=body).json()["id"]
        upload = [(f"file{i}", (name, data, "image/jpeg")) for i, (name, data) in enumerate(files)]
        ls.post(f"/api/projects/{project}/import", files=upload).raise_for_status()
        ls.post("/api/ml", json={"url": f"http://127.0.0.1:{port}/label-studio", "project": project,
                                 "title": "fcnseg", "auth_method": "BASIC_AUTH", "basic_auth_user": "bench",
                                 "basic_auth_pass": key}).raise_for_status()  # fmt: skip
        t = time.perf_counter()
        ls.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
                json={"selectedItems": {"all": True, "excluded": []}}).raise_for_status()  # fmt: skip
        seconds = time.perf_counter() - t
        tasks = ls.get("/api/tasks", params={"project": project, "fields": "all", "page_size": 10000}).json()["tasks"]
        predicted = sum(1 for task in tasks if task["predictions"])
        return {"seconds": seconds, "tasks": len(tasks), "predicted": predicted, "project": project}
    finally:
        server.terminate()
        server.wait(timeout=60)


def direct(args: argparse.Namespace, files: list[tuple[str, bytes]]) -> tuple[float, list[str]]:
    import torch

    from fcnseg.predict import Segmenter

    torch.set_num_threads(args.threads)
    segmenter = Segmenter("fcn_resnet50", args.weights, device="cpu")
    images = [Image.open(io.BytesIO(data)).convert("RGB") for _, data in files]
    segmenter.predict_batch(images[:1], confidence=True)  # warm-up, as the server's
    t = time.perf_counter()
    for image in images:
        segmenter.predict_batch([image], confidence=True)
    return time.perf_counter() - t, segmenter.categories


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label-studio-url", default=os.environ.get("LABEL_STUDIO_URL"), required=False)
    p.add_argument("--token", default=os.environ.get("LABEL_STUDIO_API_KEY"))
    p.add_argument("--weights", required=True)
    p.add_argument("-n", type=int, default=20, help="photos (default 20)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    from fcnseg.optimize.cpu import cpu_capabilities, cpu_kind

    if not args.label_studio_url or not args.token:
        p.error("--label-studio-url and --token (or LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY) are needed")
    files = photos(args.n)
    load_before = os.getloadavg()
    direct_s, categories = direct(args, files)
    ls = through_label_studio(args, files, categories)
    load_after = os.getloadavg()
    row = {
        "photos": args.n, "threads": args.threads, "direct_s": round(direct_s, 2),
        "label_studio_s": round(ls["seconds"], 2), "ratio": round(ls["seconds"] / direct_s, 2),
        "per_photo_s": round(ls["seconds"] / args.n, 2), "predicted": f"{ls['predicted']}/{ls['tasks']}",
    }  # fmt: skip
    print(f"{'photos':>6} {'threads':>7} {'direct s':>9} {'via LS s':>9} {'ratio':>6} {'s/photo':>8} predicted")
    print(f"{row['photos']:>6} {row['threads']:>7} {row['direct_s']:>9} {row['label_studio_s']:>9} {row['ratio']:>6} "
          f"{row['per_photo_s']:>8} {row['predicted']}")  # fmt: skip
    print(f"{cpu_kind(cpu_capabilities())}, {os.cpu_count()} CPUs, load average before/after: "
          f"{load_before[0]:.1f}/{load_after[0]:.1f}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": {"cpu": cpu_kind(cpu_capabilities()), "cpus": os.cpu_count(),
                        "load_before": load_before, "load_after": load_after},
            "label_studio": args.label_studio_url, "weights": args.weights, **row,
        }, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
