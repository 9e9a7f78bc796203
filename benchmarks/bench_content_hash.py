"""What identity by content costs ``fcnseg segment``: the sha256 of each input, against the stat it used to take.

Rows, for a folder of photo-sized files and one clip-sized file (written once, then read warm from the page
cache, as on a re-run): a stat of every file (the old identity, size + mtime: the floor), the re-run check as
built (:func:`fcnseg.outputs.input_source` with the record's stamp unchanged: a stat, no read) and the check
that hashes every time (what a first run, or a run after a ``touch``, pays). Ratios are against the stat row of
the same run. Prints a table and writes JSON.

    PYTHONPATH=src python benchmarks/bench_content_hash.py --photos 200 --photo-mb 4 --clip-mb 512
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from _machine import cpu_name

from fcnseg._stamp import file_stamp
from fcnseg.outputs import input_source


def _timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--photo-mb", type=float, default=4.0)
    ap.add_argument("--clip-mb", type=float, default=512.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default="benchmarks/results/bench_content_hash.json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photos = []
        for i in range(args.photos):
            path = folder / f"p{i:04d}.jpg"
            path.write_bytes(os.urandom(int(args.photo_mb * 1e6)))
            photos.append(path)
        clip = folder / "clip.mp4"
        with open(clip, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(int(args.clip_mb)):
                f.write(block)
        for label, paths in (
            (f"{args.photos} photos x {args.photo_mb:g} MB", photos),
            (f"1 clip x {args.clip_mb:g} MB", [clip]),
        ):
            known = {p: input_source(p) for p in paths}  # hashed once: the record's source
            mb = sum(p.stat().st_size for p in paths) / 1e6
            stat = _timed(lambda paths=paths: [file_stamp(p) for p in paths], args.repeat)
            trusted = _timed(lambda paths=paths, known=known: [input_source(p, known[p]) for p in paths], args.repeat)
            hashed = _timed(lambda paths=paths: [input_source(p) for p in paths], args.repeat)
            for method, t in (("stat (size, mtime): the old identity", stat),
                              ("re-run check, stamp unchanged (as built)", trusted),
                              ("sha256 of every byte (first run, or after a touch)", hashed)):  # fmt: skip
                rows.append({"input": label, "method": method, "seconds": t, "x_stat": t / stat, "mb": mb,
                             "mb_per_s": mb / t})  # fmt: skip
    info = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "python": platform.python_version(),
    }
    print(f"CPU: {info['cpu']} ({info['cores']} cores), load average {info['load_avg'][0]:.1f}; warm page cache")
    print(f"{'input':<24} {'method':<52} {'seconds':>9} {'x stat':>9} {'MB/s':>9}")
    for r in rows:
        print(f"{r['input']:<24} {r['method']:<52} {r['seconds']:>9.4f} {r['x_stat']:>9.1f} {r['mb_per_s']:>9.0f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": info, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
