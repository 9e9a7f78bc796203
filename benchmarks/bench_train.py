"""Training throughput of ``fcnseg.train.fit`` on this machine: fp32 vs bf16 autocast, channels_last on/off.

Each configuration runs ``fit`` in its own process (so peak RSS is its own) on a synthetic folder dataset of
640x480 images (COCO-like sizes) with the reference augmentation, ``--steps`` optimizer steps of ``--batch``
images at ``--crop``. The first step is warm-up and not timed. Images/s counts the whole step: loading,
augmentation, forward, loss, backward, SGD. Ratios are against fp32 + contiguous measured in the same run.

    PYTHONPATH=src python benchmarks/bench_train.py                     # crop 480 (slow on 2 CPU cores)
    PYTHONPATH=src python benchmarks/bench_train.py --crop 240 --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = {
    "fp32": {"amp": "none", "channels_last": False},
    "fp32+channels_last": {"amp": "none", "channels_last": True},
    "bf16": {"amp": "bf16", "channels_last": False},
    "bf16+channels_last": {"amp": "bf16", "channels_last": True},
}


def _write_dataset(root: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(f"c{i}" for i in range(21)) + "\n")
    for sub in ("images", "masks"):
        (root / "train" / sub).mkdir(parents=True)
    for i in range(n):
        image = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
        mask = np.repeat(rng.integers(0, 21, size=(480, 1), dtype=np.uint8), 640, axis=1)
        Image.fromarray(image).save(root / "train" / "images" / f"{i:04d}.jpg", quality=90)
        Image.fromarray(mask).save(root / "train" / "masks" / f"{i:04d}.png")


def _child(args: argparse.Namespace) -> None:
    """Run one configuration and print its result as JSON."""
    import torch

    from fcnseg.train import TrainConfig, fit

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        _write_dataset(root, args.batch * args.steps)
        out = Path(tmp) / "run"
        config = TrainConfig(
            data_root=str(root), output_dir=str(out), val_split=None, model=args.model, weights_backbone=None,
            base_size=args.base, crop_size=args.crop, batch_size=args.batch, epochs=1, workers=0,
            progress=False, log_every=1, device="cpu", **CONFIGS[args.one],
        )  # fmt: skip
        fit(config)
        records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["event"] == "train"][1:]  # the first step warms up
    seconds = sum(args.batch / r["images_per_s"] for r in steps)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"images_per_s": len(steps) * args.batch / seconds, "peak_rss_mb": peak_mb}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fcn_resnet50")
    p.add_argument("--crop", type=int, default=480)
    p.add_argument("--base", type=int, default=520, help="base size of the random resize")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per configuration (first is warm-up)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS))
    p.add_argument("--coco-images", type=int, default=92_518, help="training images per epoch for the estimate")
    p.add_argument("--json", default="benchmarks/results/bench_train.json")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return _child(args)
    if args.steps < 2:
        p.error("--steps must be at least 2 (the first is warm-up)")

    rows = []
    for name in args.configs.split(","):
        if name not in CONFIGS:
            p.error(f"unknown config {name!r}; choose from {list(CONFIGS)}")
        cmd = [sys.executable, __file__, "--one", name] + [
            f"--{k}={getattr(args, k)}" for k in ("model", "crop", "base", "batch", "steps", "threads")
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            sys.exit(f"{name} failed:\n{proc.stderr[-2000:]}")
        rows.append({"config": name, **json.loads(proc.stdout.strip().splitlines()[-1])})
        print(f"  {name}: {rows[-1]['images_per_s']:.3f} img/s", file=sys.stderr)

    base = next((r["images_per_s"] for r in rows if r["config"] == "fp32"), rows[0]["images_per_s"])
    epochs = 30
    cpu = f"{platform.machine()}, {os.cpu_count()} CPUs"
    print(f"\n{args.model} training, crop {args.crop}, batch {args.batch}, {args.threads} threads, "
          f"{args.steps - 1} timed steps ({cpu})")  # fmt: skip
    print(f"{'config':22} {'img/s':>8} {'vs fp32':>8} {'peak RSS':>10} {'30 COCO epochs':>15}")
    for r in rows:
        r["speedup_vs_fp32"] = r["images_per_s"] / base
        r["coco_30_epochs_days"] = epochs * args.coco_images / r["images_per_s"] / 86400
        print(f"{r['config']:22} {r['images_per_s']:8.3f} {r['speedup_vs_fp32']:7.2f}x "
              f"{r['peak_rss_mb']:8.0f}MB {r['coco_30_epochs_days']:11.0f} days")  # fmt: skip
    result = {
        "model": args.model, "crop": args.crop, "base_size": args.base, "batch": args.batch, "steps": args.steps,
        "threads": args.threads, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "coco_train_images": args.coco_images, "rows": rows,
    }  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
