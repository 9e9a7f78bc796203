"""Which OpenVINO int8 recipe keeps fp32's labels? Each NNCF variant's agreement with eager fp32 and its speed.

    PYTHONPATH=src python benchmarks/bench_int8_recipes.py                  # ~10 min on 2 cores
    PYTHONPATH=src python benchmarks/bench_int8_recipes.py --recipes shipped,adds_int8 --reps 3

``--fast`` offers OpenVINO int8 only when it passes the accuracy guard (>= 99.8 % of pixels keep fp32's class,
>= 98 % on every image). This script quantizes the trained probe model (``bench_speed.build_model``) with NNCF
in several ways and judges each on the guard's four photos at ``--size`` against eager fp32, with its latency at
``--size``² batch 1 against eager fp32 and OpenVINO fp32 in the same run (repetitions interleaved). The recipes:
what fcnseg ships (:func:`fcnseg.optimize.backends._nncf_int8`: NNCF's mixed preset, the additions and the
logits kept fp32), the recipe before (additions rounded to 8 bits), full bias correction, the overflow fix on
every layer, SmoothQuant on convolutions, calibration on the judged photos themselves (an upper bound no user
run has), whole stages left in fp32, and the convs the per-layer sensitivity pass (:mod:`fcnseg.optimize.
sensitivity`) ranks costliest left in fp32. ``--accuracy-control`` adds NNCF's accuracy-aware quantization with
the guard's agreement on the calibration photos as its metric (slow: it ranks every quantizer, then re-ranks
after each one it reverts). Prints a table, writes JSON; the CPU kind is named with every number.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import time
from pathlib import Path

import torch
from bench_speed import build_model

from fcnseg.optimize import backends, calibration_photos, cpu_capabilities, cpu_kind, sample_photos
from fcnseg.optimize.guard import GuardResult, compare_logits
from fcnseg.optimize.sensitivity import layer_sensitivity

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"classifier": ("classifier.",), "layer4": ("backbone.layer4.",), "layer3": ("backbone.layer3.",),
          "layer1-2": ("backbone.layer1.", "backbone.layer2.")}  # fmt: skip
RECIPES = ("shipped", "adds_int8", "full_bias_correction", "overflow_fix", "smoothquant", "calibrated_on_judged",
           *(f"fp32_{s}" for s in STAGES), "fp32_sensitive6")  # fmt: skip


def quantize(ir, calibration, *, fp32_convs=(), adds=False, **options):
    """NNCF post-training quantization as fcnseg ships it, changed by ``options``; ``fp32_convs`` stay fp32, and
    ``adds=True`` lets NNCF round the additions (and the logits) to 8 bits as its mixed preset does."""
    import nncf

    convs = [op.get_friendly_name() for op in ir.get_ordered_ops() if op.get_type_name() == "Convolution"]
    scope = nncf.IgnoredScope(names=[*fp32_convs, convs[-1]], types=[] if adds else ["Add", "Interpolate"])
    dataset = nncf.Dataset([x.numpy() for x in calibration])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return nncf.quantize(ir, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=len(calibration),
                             fast_bias_correction=options.pop("fast_bias_correction", True), ignored_scope=scope,
                             **options)  # fmt: skip


def conv_names(ir, prefixes) -> list[str]:
    """OpenVINO names of the convs of modules whose name starts with one of ``prefixes`` (the IR of a BN-folded
    model keeps each conv's module name)."""
    names = [op.get_friendly_name() for op in ir.get_ordered_ops() if op.get_type_name() == "Convolution"]
    return [n for n in names if any(n.startswith(f"__module.model.{p}") for p in prefixes)]


def accuracy_controlled(ir, calibration, reference):
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    def agreement(compiled, items) -> tuple[float, list[float]]:
        per = [float((compiled(x)[0].argmax(1) == want).mean()) for x, want in items]
        return statistics.fmean(per), per

    items = [(x.numpy(), reference(x).argmax(1).numpy()) for x in calibration]
    convs = [op.get_friendly_name() for op in ir.get_ordered_ops() if op.get_type_name() == "Convolution"]
    with contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize_with_accuracy_control(
            ir, nncf.Dataset([x.numpy() for x in calibration]), nncf.Dataset(items), agreement, max_drop=0.002,
            preset=nncf.QuantizationPreset.MIXED, subset_size=len(calibration),
            ignored_scope=nncf.IgnoredScope(names=convs[-1:], types=["Add", "Interpolate"]),
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(num_ranking_workers=1),
        )  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma list from {','.join(RECIPES)}")
    p.add_argument("--accuracy-control", action="store_true", help="also NNCF's accuracy-aware quantization (slow)")
    p.add_argument("--size", type=int, default=520)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--weights", default="trained", help="trained | golden | random | a state-dict path")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "int8_recipes.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import openvino as ov

    caps = cpu_capabilities()
    model = build_model(args.weights)
    ir = backends._ov_convert(backends.fold_batchnorm(model))
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY"}

    def compiled(graph):
        run = core.compile_model(graph, "CPU", config)
        return lambda x: torch.from_numpy(run(x.numpy())[0].copy())

    def eager(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)["out"]

    judged = sample_photos(args.size)
    wanted = [eager(x) for x in judged]
    calibration = [x for s in (256, 384) for x in calibration_photos(s)]
    paths = {"eager fp32": eager, "openvino fp32": compiled(ir)}
    made: dict[str, dict] = {}
    recipes = [r for r in args.recipes.split(",") if r] + ["accuracy_control"] * args.accuracy_control
    ranked: list[str] = []
    for name in recipes:
        options: dict = {}
        if name == "adds_int8":
            options["adds"] = True
        elif name == "full_bias_correction":
            options["fast_bias_correction"] = False
        elif name in ("overflow_fix", "smoothquant"):
            from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters as Advanced
            from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters, OverflowFix

            advanced = (Advanced(overflow_fix=OverflowFix.ENABLE) if name == "overflow_fix"
                        else Advanced(smooth_quant_alphas=AdvancedSmoothQuantParameters(convolution=0.15)))  # fmt: skip
            options["advanced_parameters"] = advanced
        elif name.startswith("fp32_") and name[5:] in STAGES:
            options["fp32_convs"] = conv_names(ir, STAGES[name[5:]])
        elif name == "fp32_sensitive6":
            if not ranked:
                ranked = list(layer_sensitivity(backends.fold_batchnorm(model), calibration[:3], calibration[:3]))
            options["fp32_convs"] = conv_names(ir, [f"{n}/" for n in ranked[:6]])
        start = time.perf_counter()
        if name == "accuracy_control":
            graph = accuracy_controlled(ir, calibration, paths["openvino fp32"])
        elif name == "shipped":
            graph = backends._nncf_int8(ir, calibration)
        else:
            graph = quantize(ir, judged if name == "calibrated_on_judged" else calibration, **options)
        build_s = time.perf_counter() - start
        paths[name] = compiled(graph)
        results = [compare_logits(paths[name](x), want) for x, want in zip(judged, wanted, strict=True)]
        guard: GuardResult = sum(results[1:], results[0])
        made[name] = {"build_s": build_s, "agreement": guard.agreement, "worst_image": min(guard.per_image),
                      "passed": guard.passed, "fp32_convs": len(options.get("fp32_convs", ()))}  # fmt: skip
        print(f"{name}: {guard.summary()}, built in {build_s:.0f} s", flush=True)

    x = judged[0][..., : args.size, : args.size]
    times: dict[str, list[float]] = {name: [] for name in paths}
    for fn in paths.values():
        fn(x)  # warm-up
    for _ in range(args.reps):  # interleaved: load from elsewhere hits every path alike
        for name, fn in paths.items():
            start = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}

    print(f"\nOpenVINO int8 recipes, {args.weights} weights, judged on {len(judged)} guard photos at {args.size} px, "
          f"latency {args.size}² batch 1, {args.threads} threads, {caps.name} [{cpu_kind(caps)}], "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'path':24} {'median s':>9} {'x eager':>8} {'x OV fp32':>9} {'agreement':>10} {'worst':>8}  guard")
    for name, seconds in median.items():
        row = made.get(name, {"agreement": 1.0, "worst_image": 1.0, "passed": None})
        verdict = {True: "passes", False: "fails", None: "-"}[row["passed"]]
        ratios = f"{median['eager fp32'] / seconds:8.2f} {median['openvino fp32'] / seconds:9.2f}"
        print(f"{name:24} {seconds:9.3f} {ratios} {row['agreement']:10.2%} {row['worst_image']:8.2%}  {verdict}")
    report = {"cpu": caps.name, "cpu_kind": cpu_kind(caps), "threads": args.threads, "size": args.size,
              "weights": args.weights, "load": os.getloadavg(), "median_s": median, "recipes": made}  # fmt: skip
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
