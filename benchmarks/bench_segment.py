"""Throughput of ``fcnseg segment`` (its defaults) against the seed page's loop, on a folder of real-size photos.

The photos are scikit-image's sample pictures, resized and cropped to sizes between 640x480 and 1920x1080.
The baseline does what the PyTorch Hub page does, one image at a time: PIL -> tensor -> model -> argmax,
plus the resize to 520 px that the weights prescribe and a nearest resize of the mask back to the photo.
Both use the same model and the same random-init or cached weights (speed does not depend on the values).

    PYTHONPATH=src python benchmarks/bench_segment.py --count 50 --json benchmarks/results/bench_segment.json

``--large`` also runs the CLI on one 6000x4000 photo and reports its peak memory (the default path never
holds the 24 MP x K-class logit map).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from fcnseg.cli import main as cli_main  # noqa: E402
from fcnseg.models import get_model  # noqa: E402
from fcnseg.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

SAMPLES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


def make_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` JPEGs cut from scikit-image's sample photos, each a random size in 640x480..1920x1080."""
    from skimage import data

    rng = np.random.default_rng(seed)
    sources = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in SAMPLES]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        src = sources[i % len(sources)]
        w, h = int(rng.integers(640, 1921)), int(rng.integers(480, 1081))
        scale = max(w / src.width, h / src.height) * rng.uniform(1.0, 1.3)
        big = src.resize((round(src.width * scale), round(src.height * scale)), Image.BICUBIC)
        x, y = int(rng.integers(0, big.width - w + 1)), int(rng.integers(0, big.height - h + 1))
        paths.append(folder / f"photo{i:03}.jpg")
        big.crop((x, y, x + w, y + h)).save(paths[-1], quality=90)
    return paths


def naive_loop(paths: list[Path], model: torch.nn.Module, out: Path, size: int) -> float:
    """The seed page's recipe, one image at a time; returns seconds."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for p in paths:
        image = Image.open(p).convert("RGB")
        w, h = image.size
        s = size / min(w, h)
        small = image.resize((round(w * s), round(h * s)), Image.BILINEAR)
        x = (torch.from_numpy(np.array(small)).permute(2, 0, 1).float() / 255 - mean) / std
        with torch.no_grad():
            pred = model(x[None])["out"][0].argmax(0).byte().numpy()
        Image.fromarray(pred).resize((w, h), Image.NEAREST).save(out / f"{p.stem}.png")
    return time.perf_counter() - start


def run_cli(args: list[str]) -> tuple[float, str]:
    """Run ``fcnseg segment`` in this process; returns (seconds of its image loop, its summary line)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(["segment", *args, "--quiet"])
    line = buf.getvalue().strip().splitlines()[-1]
    if rc != 0:
        raise SystemExit(f"fcnseg segment failed: {line}")
    return float(re.search(r" in ([\d.]+) s ", line).group(1)), line


def peak_rss_of_cli(args: list[str]) -> tuple[float, float]:
    """Run ``fcnseg segment`` in a fresh process; returns (its peak RSS in MB, wall seconds)."""
    code = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    start = time.perf_counter()
    cmd = [sys.executable, "-c", code, sys.executable, "-m", "fcnseg", "segment", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50, help="number of photos (default: 50)")
    parser.add_argument("--model", default="fcn_resnet50")
    parser.add_argument("--weights", default="none", help="'none' (random init; same speed) or DEFAULT if cached")
    parser.add_argument("--size", type=int, default=520)
    parser.add_argument("--chunk", type=int, default=10, help="photos per interleaved round (default: 10)")
    parser.add_argument("--large", action="store_true", help="also measure peak memory on a 6000x4000 photo")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/bench_segment.json"))
    args = parser.parse_args()

    methods = {
        "naive seed-page loop (mask only)": None,
        "fcnseg segment defaults (mask+overlay)": [],
        "fcnseg segment --save mask": ["--save", "mask"],
        "fcnseg segment --save mask --precision bf16": ["--save", "mask", "--precision", "bf16"],
    }
    per_chunk: dict[str, list[float]] = {m: [] for m in methods}
    lines: dict[str, list[str]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        large = None
        if args.large:
            big = make_photos(tmp / "large", 1)[0]
            Image.open(big).resize((6000, 4000), Image.BICUBIC).save(big, quality=90)
            large = []
            for save in ("mask", "mask,overlay,json"):
                cmd = [str(big), "-o", str(tmp / "large_out"), "--weights", args.weights, "--workers", "0"]
                peak_mb, wall = peak_rss_of_cli([*cmd, "--model", args.model, "--save", save])
                large.append(
                    {"size": "6000x4000", "save": save, "peak_rss_mb": round(peak_mb), "wall_s": round(wall, 1)}
                )
        paths = make_photos(tmp / "photos", args.count)
        weights = None if args.weights == "none" else args.weights
        model = get_model(args.model, weights=weights, aux_loss=False).eval()
        # Interleave the methods over chunks of photos, so that load from other users of the CPU hits all alike.
        for k in range(0, args.count, args.chunk):
            chunk = tmp / f"chunk{k}"
            chunk.mkdir()
            for p in paths[k : k + args.chunk]:
                os.link(p, chunk / p.name)
            for i, (method, extra) in enumerate(methods.items()):
                if extra is None:
                    per_chunk[method].append(naive_loop(sorted(chunk.iterdir()), model, tmp / f"naive{k}", args.size))
                    continue
                common = ["--model", args.model, "--weights", args.weights, "--size", str(args.size)]
                secs, line = run_cli([str(chunk), "-o", str(tmp / f"out{i}_{k}"), *common, *extra])
                per_chunk[method].append(secs)
                lines[method].append(line)
    seconds = {m: sum(t) for m, t in per_chunk.items()}
    rows = [(m, args.count / seconds[m], seconds[m], " | ".join(lines[m])) for m in methods]

    base = rows[0][1]
    print(f"{args.count} photos 640x480..1920x1080, {args.model}, size {args.size}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")  # fmt: skip
    print(f"{'method':42} {'images/s':>9} {'seconds':>8} {'ratio':>6}")
    for label, rate, secs, _ in rows:
        print(f"{label:42} {rate:9.3f} {secs:8.1f} {rate / base:6.2f}")
    for run in large or []:
        print(f"6000x4000 photo, default path, --save {run['save']}: peak RSS {run['peak_rss_mb']} MB, "
              f"{run['wall_s']} s with start-up (its 21-class full-size logits alone would take 1923 MB)")  # fmt: skip
    result = {
        "count": args.count, "model": args.model, "size": args.size, "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "rows": [{"method": m, "images_per_s": r, "seconds": s, "ratio": r / base, "chunk_seconds": per_chunk[m],
                  "cli_summary": line}
                 for m, r, s, line in rows],
        "large_image": large,
        "note": "CLI seconds are its image loop (decode to written outputs), summed over the interleaved chunks",
    }  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
