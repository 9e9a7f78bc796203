"""What the accuracy guard's threshold costs in mIoU: agreement with fp32 against the change of mIoU on labelled data.

The guard (``fcnseg.optimize.guard``) accepts a path whose argmax agrees with fp32 eager's on >= 99.5 % of all
pixels and >= 98 % of every image's, and loses no class fp32 found. Is that tight enough? On a labelled set, the
generated shapes (``tests/shapes_data.py``, held-out seed) segmented by the trained probe model
(``tests/trained.py``: FCN-ResNet50, golden weights, last layer fitted to the shapes), each path is scored twice:
agreement with fp32 (the guard's view) and mIoU against the ground truth. Paths: the real reduced precisions
this CPU runs, and fp32 logits rounded to coarser and coarser steps (a controlled stand-in for lower precision,
which spans the guard's threshold). The rule is justified when every accepted path changes mIoU by <= 0.1 points.

    PYTHONPATH=src python benchmarks/bench_guard.py --images 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).parent))

from bench_speed import build_model  # noqa: E402
from trained import shapes_batch  # noqa: E402

from fcnseg.metrics import ConfusionMatrix  # noqa: E402
from fcnseg.optimize import PATHS, compare_logits, cpu_capabilities, cpu_kind, optimize  # noqa: E402

STEPS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)  # fp32 logits rounded to these steps


def miou(logits: torch.Tensor, masks: torch.Tensor, num_classes: int) -> float:
    cm = ConfusionMatrix(num_classes)
    cm.update(masks, logits.argmax(1))
    return 100 * float(cm.compute()["miou"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--side", type=int, default=64, help="the probe was fitted on 64x64 shapes")
    p.add_argument("--paths", default="bf16,openvino_bf16,openvino_int8,int8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "guard_threshold.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model("trained")
    images, masks = shapes_batch(args.images, args.side, seed=1)  # seed 0 fitted the probe
    with torch.inference_mode():
        ref = optimize(model, "none")(images)
    k = ref.shape[1]
    base = miou(ref, masks, k)
    candidates: dict[str, torch.Tensor] = {f"fp32 rounded to {s:g}": torch.round(ref / s) * s for s in STEPS}
    calibration = list(shapes_batch(8, args.side, seed=2)[0].split(1))
    for name in [n for n in args.paths.split(",") if n]:
        try:
            fn = optimize(model, PATHS[name], calibration=calibration)
            with torch.inference_mode():
                candidates[name] = torch.cat([fn(x) for x in images.split(8)])
        except Exception as e:  # a path this CPU cannot run
            print(f"{name}: unavailable ({type(e).__name__}: {str(e).splitlines()[0][:100]})")
    caps = cpu_capabilities()
    print(f"{args.images} shapes images {args.side}², trained probe, fp32 mIoU {base:.2f}; {caps.name} "
          f"[{cpu_kind(caps)}], load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'path':>24} {'agreement':>9} {'min/img':>8} {'vanished':>8} {'guard':>6} {'mIoU':>6} {'ΔmIoU':>6}")
    rows = []
    for name, out in candidates.items():
        g = compare_logits(out, ref)
        m = miou(out, masks, k)
        rows.append({"path": name, "agreement": g.agreement, "min_image": min(g.per_image),
                     "vanished": list(g.vanished), "passed": g.passed, "miou": m, "delta_miou": m - base})  # fmt: skip
        print(f"{name:>24} {g.agreement:9.3%} {min(g.per_image):8.2%} {str(list(g.vanished)):>8} "
              f"{'pass' if g.passed else 'fail':>6} {m:6.2f} {m - base:+6.2f}")  # fmt: skip
    accepted = [abs(r["delta_miou"]) for r in rows if r["passed"]]
    worst = max(accepted, default=0.0)
    print(f"largest |ΔmIoU| among accepted paths: {worst:.3f} points (goal <= 0.1)")
    result = {"images": args.images, "side": args.side, "fp32_miou": base, "rows": rows, "worst_accepted": worst,
              "cpu": caps.name, "cpu_kind": cpu_kind(caps), "load": os.getloadavg()}  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
