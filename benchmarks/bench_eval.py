"""Evaluation throughput at the reference preset (shorter side 520) on a generated COCO-format sample.

Rows: data loading alone (JPEG decode + COCO masks + preset; the floor any evaluation pays), then the full
evaluation at batch size 1 (the reference's setting, the baseline) and larger batches (images grouped by size).
The weights are random (the official ones cannot be downloaded here): compute per image is the same.
Prints a table, writes JSON, and extrapolates to COCO val2017 (5,000 images).

    PYTHONPATH=src python benchmarks/bench_eval.py --images 6 --batch-sizes 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fcnseg.data import CocoSegmentation
from fcnseg.evaluate import evaluate_dataset
from fcnseg.models import get_model
from fcnseg.transforms import SegmentationEval

COCO_SIZES = [(480, 640), (640, 480), (427, 640), (480, 640)]  # (H, W): the most common COCO val2017 shapes
COCO_VAL_IMAGES = 5000


def make_sample(root: Path, n: int, seed: int = 0) -> None:
    """``n`` COCO-sized JPEGs with a few polygon instances each, in the COCO val2017 layout."""
    rng = np.random.default_rng(seed)
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    for i in range(1, n + 1):
        h, w = COCO_SIZES[(i - 1) % len(COCO_SIZES)]
        # smooth colour gradients plus noise: closer to a photo's JPEG decode cost than pure noise
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (h + w)], axis=2)
        pixels = (base + rng.integers(0, 40, (h, w, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "val2017" / f"{i:012d}.jpg", quality=90)
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "height": h, "width": w})
        for _ in range(rng.integers(2, 6)):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(20, 150)
            t = np.sort(rng.uniform(0, 2 * np.pi, 12))
            poly = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1).clip(0, [w - 1, h - 1])
            cat = int(rng.choice([1, 3, 17, 18, 62, 44, 27]))  # mostly VOC classes, one not
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "iscrowd": 0,
                         "segmentation": [poly.reshape(-1).round(2).tolist()], "area": float(np.pi * r * r),
                         "bbox": [0, 0, 1, 1]})  # fmt: skip
    data = {"images": images, "annotations": anns, "categories": []}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))


def time_data_only(ds: CocoSegmentation, size: int) -> float:
    preset = SegmentationEval(resize_size=size)
    start = time.perf_counter()
    for i in range(len(ds)):
        preset(*ds[i])
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--size", type=int, default=520)
    p.add_argument("--batch-sizes", default="1,2")
    p.add_argument("--model", default="fcn_resnet50")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=1, help="rounds over all configs, interleaved; the best is kept")
    p.add_argument("--out", default="benchmarks/results/bench_eval.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_sample(root, args.images)
        ds = CocoSegmentation(root, "val")
        model = get_model(args.model, num_classes=21, aux_loss=False).eval().to(device)
        with torch.inference_mode():  # warm-up: first-call allocations and kernel selection
            model(torch.zeros(1, 3, args.size, args.size, device=device))

        rows = [{"config": "data only (decode + masks + preset)", "batch_size": None, "seconds": float("inf")}]
        rows += [{"config": f"eval, batch size {b}", "batch_size": int(b), "seconds": float("inf")}
                 for b in args.batch_sizes.split(",")]  # fmt: skip
        # interleaved rounds, best time kept: the CPU is shared, so load drifts between configs
        for _ in range(args.repeat):
            for r in rows:
                if r["batch_size"] is None:
                    seconds = time_data_only(ds, args.size)
                else:
                    kw = {"resize_size": args.size, "batch_size": r["batch_size"], "device": device}
                    seconds = evaluate_dataset(model, ds, 21, **kw).seconds
                r["seconds"] = min(r["seconds"], seconds)
    base = next(r["seconds"] for r in rows if r["batch_size"] is not None)
    for r in rows:
        r["images_per_s"] = args.images / r["seconds"]
        r["speedup_vs_bs1"] = base / r["seconds"] if r["batch_size"] is not None else None
        r["coco_val2017_hours"] = COCO_VAL_IMAGES / r["images_per_s"] / 3600

    print(f"{args.model}, {args.images} COCO-sized images (640x480 / 480x640 / 640x427), shorter side {args.size}, ")
    print(f"device {device}, {args.threads} threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'config':38} {'images/s':>9} {'vs bs 1':>8} {'COCO val2017 (5,000 images)':>28}")
    for r in rows:
        ratio = f"{r['speedup_vs_bs1']:.2f}x" if r["speedup_vs_bs1"] is not None else "-"
        print(f"{r['config']:38} {r['images_per_s']:9.3f} {ratio:>8} {r['coco_val2017_hours']:25.2f} h")
    result = {
        "model": args.model,
        "images": args.images,
        "resize_size": args.size,
        "device": str(device),
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "repeat": args.repeat,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
