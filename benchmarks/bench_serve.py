"""Overload test of ``fcnseg serve``: this tree's server against another tree's (e.g. 239b6b3), in one run.

Each server is its own process (``python -m fcnseg serve``, 127.0.0.1, ephemeral port, its tree's ``src`` first on
PYTHONPATH), with the same model, input size, threads and timeout. Then, for each server in turn:

1. capacity: eight clients send photos back to back for ``--capacity-s`` seconds, enough to keep the model busy
   while the next uploads decode (requests/s of this tree's server is the capacity C every level is relative to);
2. closed-loop load at 1x, 2x and 4x C: ``--clients`` clients (40+), each sending a photo then thinking for
   ``clients / (f * C)`` seconds minus its last latency, for ``--phase-s`` seconds; photos are scikit-image's
   samples of mixed sizes (300x451 to 427x640); a phase lasts at least one think time, so that every client
   sends. Reported: goodput (200/s), p50/p99 latency of the 200s, the
   share of 503 (shed) and their p50/max latency ("time to a 503"), the count of 504 and other errors, and the
   server's peak RSS during the phase (VmHWM, reset before each phase through /proc/PID/clear_refs);
3. a flood of ``--flood`` concurrent uploads of a 16-bit 4000x4000 grayscale PNG (a few tens of KB): status
   counts and peak RSS. The other tree's flood uses ``--flood-other`` uploads: 239b6b3 decodes each to float64
   (about 384 MB a decode), and a 40-upload flood would take about 15 GB of a machine others share.

4. slow and idle clients (``--phases slow``): ``--idle`` connections that send nothing and ``--slow`` clients that
   send a request's headers announcing a 100 kB upload, then its body at one byte a second, for ``--slow-s``
   seconds; meanwhile a normal client sends a photo every 2 s (retrying after a 503 as Retry-After says).
   Reported: seconds until the normal client's first mask, its status counts, how each slow client ended (408,
   closed without an answer, or still connected at the end) and when, how many idle connections the server
   closed, and the server's peak RSS.

Load levels alternate between the servers (ours 1x, theirs 1x, ours 2x...), so drifting load from other jobs
on a shared CPU hits both alike. Everything runs on loopback; every loop is bounded by time.

    git worktree add /tmp/base239 239b6b3
    PYTHONPATH=src python benchmarks/bench_serve.py --other /tmp/base239 --json benchmarks/results/bench_serve.json
    # the slow-client phase alone, at the server's defaults (timeout 60 s) and size 128:
    PYTHONPATH=src python benchmarks/bench_serve.py --other /tmp/base133 --phases slow --input-size 128 --timeout 60
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "cat")  # 300x451 to 427x640


def photos() -> list[bytes]:
    """scikit-image's sample photos (mixed sizes), as PNG bytes."""
    from skimage import data

    out = []
    for name in PHOTOS:
        buf = io.BytesIO()
        Image.fromarray(getattr(data, name)()).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def png16(side: int = 4000) -> bytes:
    """A smooth 16-bit grayscale PNG of ``side`` x ``side``: tiny on the wire, 16 MP to decode."""
    y, x = np.mgrid[0:side, 0:side]
    buf = io.BytesIO()
    Image.fromarray(((x + y) * 65535 // (2 * side)).astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def start_server(tree: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """``fcnseg serve`` from ``tree``'s sources; returns the process and its URL once it listens."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    cmd = [
        sys.executable, "-m", "fcnseg", "serve", "--model", args.model, "--weights", "none",
        "--size", str(args.input_size), "--device", "cpu", "--threads", str(args.threads),
        "--host", "127.0.0.1", "--port", "0", "--timeout", str(args.timeout), "--log-level", "info",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline, lines = time.monotonic() + 300, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
        if m:  # keep draining the log, or a full pipe would stall the server
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, m.group(1)
    proc.kill()
    raise RuntimeError(f"server from {tree} did not start:\n" + "".join(lines))


async def wait_ready(url: str, limit_s: float = 600) -> float:
    """Seconds until ``/readyz`` answers 200 (warm-up done)."""
    import httpx

    t = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as client:
        while (await client.get(f"{url}/readyz")).status_code != 200:
            if time.monotonic() - t > limit_s:
                raise RuntimeError(f"{url} not ready after {limit_s} s")
            await asyncio.sleep(0.2)
    return time.monotonic() - t


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


async def closed_loop(url: str, bodies: list[bytes], *, clients: int, think_s: float, phase_s: float,
                      timeout: float, seed: int) -> list[tuple[int, float]]:  # fmt: skip
    """``clients`` clients for ``phase_s`` seconds, each: send, wait, think; returns (status, latency) per request."""
    import httpx

    rng = random.Random(seed)
    out: list[tuple[int, float]] = []
    stop_at = time.monotonic() + phase_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(timeout=timeout + 30, limits=limits) as client:

        async def one(k: int) -> None:
            await asyncio.sleep(rng.uniform(0, think_s))  # staggered starts: no synchronized burst
            while time.monotonic() < stop_at:
                body = bodies[rng.randrange(len(bodies))]
                t = time.perf_counter()
                try:
                    r = await client.post(f"{url}/v1/segment?format=png", content=body,
                                          headers={"content-type": "image/png"})  # fmt: skip
                    status = r.status_code
                except httpx.HTTPError:
                    status = -1
                latency = time.perf_counter() - t
                out.append((status, latency))
                await asyncio.sleep(max(0.0, think_s - latency))

        await asyncio.gather(*(one(k) for k in range(clients)))
    return out


def summarize(results: list[tuple[int, float]], wall_s: float) -> dict:
    ok = np.array([lat for s, lat in results if s == 200]) * 1000
    shed = np.array([lat for s, lat in results if s == 503]) * 1000
    n = max(len(results), 1)

    def pct(a: np.ndarray, q: float) -> float | None:
        return round(float(np.percentile(a, q)), 1) if a.size else None

    return {
        "requests": len(results),
        "ok": int(ok.size),
        "goodput_rps": round(ok.size / wall_s, 3),
        "p50_ms": pct(ok, 50),
        "p99_ms": pct(ok, 99),
        "shed": int(shed.size),
        "shed_share": round(shed.size / n, 3),
        "shed_p50_ms": pct(shed, 50),
        "shed_max_ms": pct(shed, 100),
        "timeouts_504": sum(s == 504 for s, _ in results),
        "other": sum(s not in (200, 503, 504) for s, _ in results),
    }


async def flood(url: str, body: bytes, n: int, timeout: float) -> dict:
    """``n`` concurrent uploads of ``body``; status counts and the wall time."""
    import httpx

    async with httpx.AsyncClient(timeout=timeout + 60, limits=httpx.Limits(max_connections=n)) as client:

        async def one() -> int:
            try:
                r = await client.post(f"{url}/v1/segment?format=png", content=body,
                                      headers={"content-type": "image/png"})  # fmt: skip
                return r.status_code
            except httpx.HTTPError:
                return -1

        t = time.perf_counter()
        codes = await asyncio.gather(*(one() for _ in range(n)))
    return {"uploads": n, "codes": {str(c): codes.count(c) for c in sorted(set(codes))},
            "wall_s": round(time.perf_counter() - t, 1)}  # fmt: skip


SLOW_HEADERS = (
    b"POST /v1/segment?format=png HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
    b"Content-Length: 100000\r\n\r\n"
)


async def slow_client(port: int, phase_s: float, t0: float) -> tuple[str, float]:
    """Headers at once, then the body at one byte a second: ('408' or another status, 'closed' or 'open', seconds
    since ``t0`` when it ended)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(SLOW_HEADERS)
        while time.monotonic() - t0 < phase_s:
            writer.write(b"\0")
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(4096), 1.0)
            except asyncio.TimeoutError:
                continue
            return (data[9:12].decode() if data else "closed"), time.monotonic() - t0
        return "open", time.monotonic() - t0
    except OSError:
        return "closed", time.monotonic() - t0
    finally:
        writer.close()


async def idle_client(port: int, phase_s: float, t0: float) -> tuple[str, float]:
    """A connection that sends nothing: ('closed' or 'open', seconds since ``t0``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        data = await asyncio.wait_for(reader.read(4096), max(0.0, phase_s - (time.monotonic() - t0)))
        return ("closed" if not data else "answered"), time.monotonic() - t0
    except asyncio.TimeoutError:
        return "open", time.monotonic() - t0
    except OSError:
        return "closed", time.monotonic() - t0
    finally:
        writer.close()


async def normal_client(url: str, body: bytes, phase_s: float, t0: float) -> list[tuple[float, int, float]]:
    """A photo every 2 s, or after Retry-After when refused: (seconds since ``t0``, status, latency) per request."""
    import httpx

    out = []
    async with httpx.AsyncClient(timeout=90) as client:
        while time.monotonic() - t0 < phase_s:
            t = time.monotonic()
            try:
                r = await client.post(f"{url}/v1/segment?format=png", content=body,
                                      headers={"content-type": "image/png"})  # fmt: skip
                status, wait = r.status_code, float(r.headers.get("retry-after", 2))
            except httpx.HTTPError:
                status, wait = -1, 2.0
            out.append((round(t - t0, 2), status, round(time.monotonic() - t, 2)))
            await asyncio.sleep(max(0.0, min(wait, 5.0) - (time.monotonic() - t)))
    return out


async def slow_phase(url: str, body: bytes, *, slow: int, idle: int, phase_s: float) -> dict:
    """``slow`` trickling uploads and ``idle`` silent connections against ``url`` while a normal client asks."""
    port = int(url.rsplit(":", 1)[1])
    t0 = time.monotonic()
    idles = [asyncio.ensure_future(idle_client(port, phase_s, t0)) for _ in range(idle)]
    slows = [asyncio.ensure_future(slow_client(port, phase_s, t0)) for _ in range(slow)]
    await asyncio.sleep(1.0)  # every attacker connected and sending before the normal client starts
    normal = await normal_client(url, body, phase_s, t0)
    ends, idle_ends = await asyncio.gather(*slows), await asyncio.gather(*idles)
    ok = [t + lat for t, status, lat in normal if status == 200]
    return {
        "first_mask_s": round(ok[0] - 1.0, 1) if ok else None,  # from the normal client's first try
        "normal_codes": {str(c): [s for _, s, _ in normal].count(c) for c in sorted({s for _, s, _ in normal})},
        "slow_ends": {k: sum(e == k for e, _ in ends) for k in sorted({e for e, _ in ends})},
        "slow_last_end_s": round(max((t for e, t in ends if e != "open"), default=0.0), 1),
        "idle_closed": sum(e == "closed" for e, _ in idle_ends),
        "idle_last_close_s": round(max((t for e, t in idle_ends if e == "closed"), default=0.0), 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--other", type=Path, required=True, help="the tree to compare with (e.g. a checkout of 239b6b3)")
    p.add_argument("--model", default="fcn_resnet50")
    p.add_argument("--input-size", type=int, default=64, help="model's shorter side (default 64: short runs)")
    p.add_argument("--threads", type=int, default=2, help="torch threads in each server (default 2)")
    p.add_argument("--timeout", type=float, default=2.0,
                   help="server's per-request timeout (default 2 s: some 20 single-image times at input 64, as 60 s "
                   "is some 10 at 520)")  # fmt: skip
    p.add_argument("--clients", type=int, default=40, help="concurrent clients in the load phases (default 40)")
    p.add_argument("--capacity-s", type=float, default=10.0, help="seconds of the capacity run (default 10)")
    p.add_argument("--phase-s", type=float, default=15.0, help="seconds per load phase, at least (default 15)")
    p.add_argument("--levels", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--flood", type=int, default=40, help="concurrent 16-bit 4000x4000 uploads (default 40)")
    p.add_argument("--flood-other", type=int, default=8, help="the same for the other tree (default 8; see above)")
    p.add_argument("--phases", nargs="+", choices=("overload", "slow"), default=["overload", "slow"])
    p.add_argument("--slow", type=int, default=64, help="clients trickling an upload at 1 byte/s (default 64)")
    p.add_argument("--idle", type=int, default=200, help="connections that send nothing (default 200)")
    p.add_argument("--slow-s", type=float, default=130.0, help="seconds of the slow-client phase (default 130)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()

    bodies, deep = photos(), png16()
    trees = {"this checkout": HERE, "other": args.other.resolve()}
    servers = {name: start_server(tree, args) for name, tree in trees.items()}
    results: dict[str, dict] = {name: {} for name in trees}
    try:
        for name, (_, url) in servers.items():
            results[name]["ready_s"] = round(asyncio.run(wait_ready(url)), 1)
        for name, (proc, url) in servers.items() if "slow" in args.phases else ():
            reset_peak_rss(proc.pid)
            row = asyncio.run(slow_phase(url, bodies[1], slow=args.slow, idle=args.idle, phase_s=args.slow_s))
            row["peak_rss_mb"] = round(peak_rss_mb(proc.pid))
            results[name]["slow"] = row
            print(f"{name} slow clients: {row}", flush=True)
        if "overload" in args.phases:
            overload(servers, results, bodies, deep, args)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=60)
    report(results, trees, args)
    return 0


def overload(servers: dict, results: dict, bodies: list[bytes], deep: bytes, args: argparse.Namespace) -> None:
    """Phases 1-3: capacity, closed-loop load levels, the 16-bit flood (results under each server's name)."""
    capacity = {}
    for name, (_, url) in servers.items():
        runs = asyncio.run(closed_loop(url, bodies, clients=8, think_s=0, phase_s=args.capacity_s,
                                       timeout=args.timeout, seed=0))  # fmt: skip
        capacity[name] = sum(s == 200 for s, _ in runs) / args.capacity_s
        results[name]["capacity_rps"] = round(capacity[name], 3)
    c = capacity["this checkout"]
    for i, f in enumerate(args.levels):
        order = list(servers.items()) if i % 2 == 0 else list(servers.items())[::-1]
        think = args.clients / (f * c)
        for name, (proc, url) in order:
            reset_peak_rss(proc.pid)
            t = time.perf_counter()
            load = closed_loop(url, bodies, clients=args.clients, think_s=think,
                               phase_s=max(args.phase_s, think), timeout=args.timeout, seed=i)  # fmt: skip
            runs = asyncio.run(load)
            row = summarize(runs, time.perf_counter() - t)
            row["peak_rss_mb"] = round(peak_rss_mb(proc.pid))
            results[name][f"{f:g}x"] = row
            print(f"{name} {f:g}x: {row}", flush=True)
    for name, (proc, url) in servers.items():
        reset_peak_rss(proc.pid)
        n = args.flood if name == "this checkout" else args.flood_other
        row = asyncio.run(flood(url, deep, n, args.timeout))
        row["peak_rss_mb"] = round(peak_rss_mb(proc.pid))
        results[name]["flood16"] = row
        print(f"{name} flood: {row}", flush=True)


def report(results: dict, trees: dict, args: argparse.Namespace) -> None:
    """The tables, and the JSON file when asked."""
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs, load {os.getloadavg()[0]:.1f}"
    print(f"\n{args.model} at shorter side {args.input_size}, fp32 random weights, {args.threads} threads, "
          f"timeout {args.timeout:g} s; {machine}")  # fmt: skip
    if "overload" in args.phases:
        caps = ", ".join(f"{name} {results[name]['capacity_rps']:.2f}" for name in trees)
        print(f"{args.clients} clients; capacity req/s: {caps} (load levels relative to this checkout's)")
        head = f"{'server':13} {'load':>5} {'goodput/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'shed':>6} "
        print(head + f"{'503 p50/max ms':>15} {'504':>4} {'other':>5} {'RSS MB':>7}")
        for f in args.levels:
            for name in trees:
                r = results[name][f"{f:g}x"]
                shed_ms = f"{r['shed_p50_ms'] or 0:.0f}/{r['shed_max_ms'] or 0:.0f}"
                print(f"{name:13} {f:>4g}x {r['goodput_rps']:>9.2f} {r['p50_ms'] or 0:>8.0f} "
                      f"{r['p99_ms'] or 0:>8.0f} {r['shed_share']:>6.0%} {shed_ms:>15} {r['timeouts_504']:>4} "
                      f"{r['other']:>5} {r['peak_rss_mb']:>7}")  # fmt: skip
        for name in trees:
            r = results[name]["flood16"]
            print(f"{name:13} 16-bit 4000x4000 flood: {r['uploads']} uploads, codes {r['codes']}, {r['wall_s']} s, "
                  f"peak RSS {r['peak_rss_mb']} MB")  # fmt: skip
    if "slow" in args.phases:
        print(f"slow clients: {args.slow} trickling 1 byte/s + {args.idle} idle connections for {args.slow_s:g} s")
        for name in trees:
            r = results[name]["slow"]
            print(f"{name:13} first mask after {r['first_mask_s']} s, normal client codes {r['normal_codes']}; "
                  f"slow clients ended {r['slow_ends']} (last at {r['slow_last_end_s']} s); idle closed "
                  f"{r['idle_closed']}/{args.idle} (last at {r['idle_last_close_s']} s); "
                  f"peak RSS {r['peak_rss_mb']} MB")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"config": config, "results": results, "machine": machine}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
