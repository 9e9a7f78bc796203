"""The Ray engine against the local engine on one machine: ``fcnseg segment --engine ray`` vs ``fcnseg segment``.

Both segment the same folder of photos (the bundled sample pictures, resized and cropped to 640x480..1920x1080,
as ``bench_segment.py`` makes them) at the default size (520), each as a whole program in a fresh process: the local
engine as it runs by default, the Ray engine starting its own local Ray (as a user without a cluster gets it) with
one model actor. Two times per run: the whole program (start-up, model load, Ray's start for the Ray engine) and
the segmenting part that fcnseg's final line reports (from the first image to the summary; for Ray this includes
starting the actor pool and loading the model in it). The Ray engine's overhead per image is the difference of the
two engines' times divided by the number of photos. Goal: Ray >= 0.85x the local engine on one node.

``--weights none`` (the default here) runs a random-init FCN-ResNet50: the speed is that of the trained model, and
the masks are noise (many class boundaries, which makes the label upsampling a little dearer for both engines).

    PYTHONPATH=src python benchmarks/bench_scale.py --count 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench_segment import make_photos  # noqa: E402

from fcnseg.optimize import cpu_capabilities, cpu_kind  # noqa: E402

ENGINES = {"local": [], "ray (1 node, 1 actor)": ["--engine", "ray"]}
FINAL = re.compile(r"(\d+) segmented.* in ([\d.]+) s \(([\d.]+) images/s")


def run(argv: list[str]) -> dict[str, float]:
    """Whole-program seconds of ``fcnseg segment argv`` and the segmenting seconds its final line reports."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("RAY_ADDRESS", None)  # a local Ray for the run, never a cluster the user has around
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fcnseg", "segment", *argv], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    found = FINAL.search(proc.stdout)
    if proc.returncode or found is None:
        raise SystemExit(f"fcnseg segment {' '.join(argv)} failed: {proc.stderr.strip().splitlines()[-3:]}")
    return {"whole_s": wall, "segment_s": float(found[2]), "segmented": int(found[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=64, help="number of photos (default: 64)")
    parser.add_argument("--weights", default="none", help="'none' (random init, see above) or a checkpoint")
    parser.add_argument("--size", default="520", help="shorter side before the model (default: 520)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each engine, interleaved (default: 1)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_scale.json")
    args = parser.parse_args()

    caps = cpu_capabilities()
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {e: [] for e in ENGINES}
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        make_photos(photos, args.count)
        common = ["--weights", args.weights, "--size", args.size, "--save", "mask", "--quiet"]
        for r in range(args.rounds):
            order = list(ENGINES) if r % 2 == 0 else list(reversed(ENGINES))  # ABBA: drift in the load hits both
            for engine in order:
                out = Path(tmp) / f"out_{len(runs[engine])}_{engine.split()[0]}"
                runs[engine].append(run([str(photos), "-o", str(out), *common, *ENGINES[engine]]))
                assert runs[engine][-1]["segmented"] == args.count
    load_after = os.getloadavg()

    n = args.count
    total = {e: {k: sum(r[k] for r in rs) / len(rs) for k in ("whole_s", "segment_s")} for e, rs in runs.items()}
    local, ray = total["local"], total["ray (1 node, 1 actor)"]
    print(
        f"{n} photos 640x480..1920x1080, fcn_resnet50 ({args.weights} weights), size {args.size}, {os.cpu_count()} "
        f"cores, {caps.name} [{cpu_kind(caps)}], load {load_before[0]:.1f} before / {load_after[0]:.1f} after"
    )
    print(f"{'engine':24} {'images/s':>9} {'segment s':>10} {'whole s':>8} {'x local':>8} {'x local (whole)':>16}")
    for engine, t in total.items():
        print(
            f"{engine:24} {n / t['segment_s']:9.3f} {t['segment_s']:10.1f} {t['whole_s']:8.1f} "
            f"{local['segment_s'] / t['segment_s']:8.2f} {local['whole_s'] / t['whole_s']:16.2f}"
        )
    per_image = (ray["segment_s"] - local["segment_s"]) / n
    whole_per_image = (ray["whole_s"] - local["whole_s"]) / n
    print(f"Ray overhead per image: {per_image * 1e3:.0f} ms segmenting, {whole_per_image * 1e3:.0f} ms whole program")
    result = {
        "count": n, "weights": args.weights, "size": args.size, "rounds": args.rounds, "cpu": caps.name,
        "cpu_kind": cpu_kind(caps), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "python": platform.python_version(), "load_before": load_before, "load_after": load_after,
        "runs": runs, "mean": total,
        "ray_vs_local_segment": local["segment_s"] / ray["segment_s"],
        "ray_vs_local_whole": local["whole_s"] / ray["whole_s"],
        "ray_overhead_per_image_s": {"segment": per_image, "whole": whole_per_image},
        "images_per_s_per_core_local": n / local["segment_s"] / (os.cpu_count() or 1),
    }  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
