"""Load test of ``fcnseg serve``: K concurrent clients, with micro-batching off (baseline) and on.

Each mode has its own server process (``python -m fcnseg serve``, 127.0.0.1, ephemeral port), warmed up.
The modes then take turns (A B B A ..., ``--rounds`` phases each, so drifting load from other jobs on a shared
CPU hits both alike): in each phase K asyncio clients POST the same small photo (scikit-image's astronaut,
resized) until the phase's share of ``--requests`` is sent or of ``--time-limit`` has passed. Reported per mode:
requests/s, p50/p95 latency, errors (anything but 200) and the mean batch size the server formed (from
``/readyz``). Loopback only; the ratio line compares the two modes measured in the same run.

    PYTHONPATH=src python benchmarks/bench_serve.py --clients 8 --json benchmarks/results/bench_serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"


def photo(side: int) -> bytes:
    """A real photo (scikit-image's astronaut) resized to ``side`` x ``side``, as PNG bytes."""
    try:
        from skimage import data

        image = Image.fromarray(data.astronaut())
    except ImportError:  # a smooth synthetic picture keeps the benchmark runnable without scikit-image
        y, x = np.mgrid[0:512, 0:512]
        image = Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8))
    buf = io.BytesIO()
    image.resize((side, side), Image.BILINEAR).save(buf, format="PNG")
    return buf.getvalue()


def start_server(args: argparse.Namespace, max_batch: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable, "-m", "fcnseg", "serve", "--model", args.model, "--weights", args.weights,
        "--size", str(args.input_size), "--device", args.device, "--threads", str(args.threads),
        "--host", "127.0.0.1", "--port", "0", "--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms),
        "--max-queue", str(4 * args.clients), "--timeout", "120", "--log-level", "info",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 180
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
        if m:  # keep draining the access log, or a full pipe would stall the server
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, m.group(1)
    proc.kill()
    raise RuntimeError("server did not start:\n" + "".join(lines))


async def load(url: str, body: bytes, clients: int, requests: int, time_limit: float) -> dict:
    """One load phase: ``clients`` tasks POST ``body`` until ``requests`` are sent or ``time_limit`` passes."""
    import httpx

    latencies: list[float] = []
    errors = sent = 0
    stop_at = time.monotonic() + time_limit
    headers = {"content-type": "image/png"}

    async with httpx.AsyncClient(timeout=180, limits=httpx.Limits(max_connections=clients)) as client:
        before = (await client.get(f"{url}/readyz")).json()

        async def worker() -> None:
            nonlocal errors, sent
            while sent < requests and time.monotonic() < stop_at:
                sent += 1
                t = time.perf_counter()
                r = await client.post(f"{url}/v1/segment?format=png", content=body, headers=headers)
                latencies.append(time.perf_counter() - t)
                errors += r.status_code != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
        after = (await client.get(f"{url}/readyz")).json()
    return {
        "latencies": latencies,
        "errors": errors,
        "wall_s": wall,
        "batches": after["batches"] - before["batches"],
        "items": after["items"] - before["items"],
    }


async def warm_up(url: str, body: bytes) -> None:
    """First forward passes allocate memory and pick kernels; keep them out of the timings."""
    import httpx

    async with httpx.AsyncClient(timeout=180) as client:
        for _ in range(2):
            await client.post(f"{url}/v1/segment?format=png", content=body, headers={"content-type": "image/png"})


def summarize(phases: list[dict]) -> dict:
    lat = np.array([x for ph in phases for x in ph["latencies"]]) * 1000
    wall = sum(ph["wall_s"] for ph in phases)
    return {
        "requests": int(lat.size),
        "errors": sum(ph["errors"] for ph in phases),
        "wall_s": round(wall, 2),
        "rps": round(lat.size / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "mean_batch": round(sum(ph["items"] for ph in phases) / max(sum(ph["batches"] for ph in phases), 1), 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="fcn_resnet50")
    p.add_argument("--weights", default="none", help="weights name/path, or 'none' (speed does not depend on values)")
    p.add_argument("--image-size", type=int, default=96, help="side of the square test photo (default 96)")
    p.add_argument("--input-size", type=int, default=0, help="model's shorter side; 0 = native (default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch threads in the server (default 2)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients K (default 8)")
    p.add_argument("--requests", type=int, default=48, help="requests per mode, all rounds (default 48)")
    p.add_argument("--time-limit", type=float, default=30.0, help="seconds per mode at most, all rounds (default 30)")
    p.add_argument("--rounds", type=int, default=4, help="alternating load phases per mode (default 4)")
    p.add_argument("--max-batch", type=int, default=8, help="micro-batch limit of the batched mode (default 8)")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()

    body = photo(args.image_size)
    modes = {"no batching": 1, f"micro-batching (max {args.max_batch})": args.max_batch}
    servers = {mode: start_server(args, max_batch) for mode, max_batch in modes.items()}  # idle until loaded
    phases: dict[str, list[dict]] = {mode: [] for mode in modes}
    try:
        for _, url in servers.values():
            asyncio.run(warm_up(url, body))
        # A B B A ...: alternating the order cancels slow drifts of a CPU shared with other jobs
        per_phase, limit = -(-args.requests // args.rounds), args.time_limit / args.rounds
        for r in range(args.rounds):
            for mode in list(modes) if r % 2 == 0 else list(modes)[::-1]:
                phases[mode].append(asyncio.run(load(servers[mode][1], body, args.clients, per_phase, limit)))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    rows = {mode: summarize(ph) for mode, ph in phases.items()}

    cpu = f"{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs"
    print(f"\n{args.model}, {args.image_size}x{args.image_size} PNG, K={args.clients} clients, {args.device}, "
          f"{args.threads} threads, {cpu}")  # fmt: skip
    print(f"{'mode':28} {'requests':>8} {'errors':>6} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'batch':>6}")
    for mode, r in rows.items():
        print(f"{mode:28} {r['requests']:>8} {r['errors']:>6} {r['rps']:>7.2f} {r['p50_ms']:>8.1f} "
              f"{r['p95_ms']:>8.1f} {r['mean_batch']:>6.2f}")  # fmt: skip
    base, batched = rows.values()
    ratio = batched["rps"] / base["rps"] if base["rps"] else float("nan")
    print(f"throughput ratio batched / unbatched: {ratio:.2f}x")
    result = {"config": vars(args) | {"json": str(args.json)}, "results": rows, "throughput_ratio": round(ratio, 3)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0 if all(r["errors"] == 0 for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
