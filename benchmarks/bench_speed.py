"""Latency of each fcnseg speed path against eager fp32, measured in the same run, with the accuracy guard.

    PYTHONPATH=src python benchmarks/bench_speed.py                       # quick default (~10 min on 2 cores)
    PYTHONPATH=src python benchmarks/bench_speed.py --paths none,bf16 --sizes 520 --batches 1 --reps 5

Repetitions are interleaved (rep 1 of every path, then rep 2, ...) so that load from other processes on a shared
CPU hits every path alike; report the ratios to eager fp32 (same run) rather than absolute times.
Per path: build + first-call time (compile), latency median/p90, images/s, achieved GFLOP/s (conv FLOPs counted
from the model's own shapes) against the peak of this CPU's fp32 / bf16 / int8 kernels measured in the same run
(:class:`KernelPeaks`), argmax agreement / mean |Δlogit| against eager fp32 on the guard's photos
(fcnseg/assets), and peak RSS (each path alone in a subprocess, 520² batch 1). Ends with issue 8's goals at
520² batch 1 as ratios of this run and the share of the measured peak each goal would need. Writes JSON and a
PNG plot of latency vs size. The CPU kind (AVX2-only, AVX-512 with BF16/VNNI, AMX) is named with every number.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fcnseg.models import fcn_resnet50
from fcnseg.optimize import (
    PATHS,
    SpeedPlan,
    accuracy_guard,
    auto_candidates,
    auto_plan,
    cpu_capabilities,
    cpu_kind,
    optimize,
    sample_photos,
)

ROOT = Path(__file__).resolve().parents[1]
QUICK_PATHS = (
    "none,channels_last,byhand_bf16,byhand_compile_bf16,compile_bf16,compile_bf16_dynamic,auto,int8,onnxruntime"
)
if importlib.util.find_spec("openvino"):  # what an Intel-CPU user would pick instead: OpenVINO (+ NNCF for int8)
    QUICK_PATHS += ",default,openvino,openvino_bf16,openvino_int8"
FULL_PATHS = QUICK_PATHS + ",fold_bn,bf16,compile"
# Paths measured for comparison only (not offered by fcnseg): what a user gets by hand, model.to(channels_last)
# under bf16 autocast and then torch.compile of that with its default settings; and bf16 with one dynamic graph.
BENCH_PATHS: dict[str, SpeedPlan] = {
    **PATHS,
    "byhand_bf16": SpeedPlan(precision="bf16", channels_last=True, fp32_logits=False),
    "byhand_compile_bf16": SpeedPlan(
        precision="bf16", backend="compile", channels_last=True, freezing=False, dynamic=None, fp32_logits=False
    ),
    "compile_bf16_dynamic": SpeedPlan(precision="bf16", backend="compile", channels_last=True, dynamic=True),
}


def build_path(model: nn.Module, name: str):
    """``optimize()`` of a path name; ``auto`` chooses in the calling thread at its first call (not in the
    background while the default path answers), so that what is timed is the path it picked."""
    return optimize(model, plan_of(name), **({"background": False} if name == "auto" else {}))


def plan_of(name: str) -> str | SpeedPlan:
    """A path name of this benchmark as ``optimize()`` takes it (``auto`` stays a name)."""
    return "auto" if name == "auto" else BENCH_PATHS[name]


def build_model(weights: str) -> nn.Module:
    """FCN-ResNet50 (21 classes) with golden deterministic weights (realistic BN statistics), ``trained`` (the
    golden weights with the last layer fitted to the shapes dataset by ``tests/trained.py``: a trained model's
    decisive logits, cached after the first run), random, or a state-dict path.

    Without the aux head, for every path: it only helps training, and ``torch.compile`` drops it anyway when
    only ``out`` is used, so a by-hand compiled model does not pay for it either.
    """
    model = fcn_resnet50(num_classes=21, aux_loss=False).eval()
    if weights in ("golden", "trained"):
        sys.path.insert(0, str(ROOT / "tests"))
        from golden import state_dict

        state = state_dict("fcn_resnet50")
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("aux_")})
        if weights == "trained":
            from trained import trained_model

            model = trained_model(model, Path(torch.hub.get_dir()).parent / "fcnseg-bench")
    elif weights != "random":
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=False)
    return model


def conv_gflop(model: nn.Module, batch: int, size: int) -> float:
    """Multiply-adds x 2 of every convolution for a (batch, 3, size, size) input, from shapes on the meta device."""
    total = 0

    def hook(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    meta = copy.deepcopy(model).to("meta")
    for m in meta.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        meta(torch.empty(batch, 3, size, size, device="meta"))
    return total / 1e9


class _ConvChain(nn.Module):
    """Six 3x3 conv + ReLU layers: activations stay int8 between layers, as inside the quantized model."""

    def __init__(self, channels: int = 512, layers: int = 6) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for conv in self.convs:
            x = torch.relu(conv(x))
        return {"out": x}


class KernelPeaks:
    """The best GFLOP/s (GOP/s for int8) this CPU's kernels reach on large dense problems: the ceiling for a path.

    fp32 and bf16: the faster of a 2048^3 GEMM and a 3x3 convolution (1024 channels, 64x64, channels-last: the
    oneDNN kernels the model runs). On AMD CPUs ``torch.matmul`` in fp32 goes through MKL without AVX-512, so
    the convolution is the real fp32 ceiling there. int8: the faster of ``torch._int_mm`` (2048^3) and a chain of
    six 3x3 convolutions (512 channels, 64x64) through fcnseg's own int8 path. :meth:`measure` can be called
    between timed repetitions: on a shared CPU the peak only means something in the same time window.
    """

    def __init__(self, int8: bool) -> None:
        self.best: dict[str, float] = {}
        self.ops: dict[str, list[tuple[float, Callable[[], object]]]] = {}
        n, c, side = 2048, 1024, 64
        conv_flop = 2 * c * c * 9 * side * side
        for key, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            x = torch.randn(1, c, side, side, dtype=dtype).contiguous(memory_format=torch.channels_last)
            w = torch.randn(c, c, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
            self.ops[key] = [
                (2 * n**3, lambda a=a, b=b: torch.matmul(a, b)),
                (conv_flop, lambda x=x, w=w: nn.functional.conv2d(x, w, padding=1)),
            ]
        if int8:
            qa = torch.randint(-128, 128, (n, n), dtype=torch.int8)
            qb = torch.randint(-128, 128, (n, n), dtype=torch.int8)
            chain, x = _ConvChain().eval(), torch.randn(1, 512, side, side)
            run = optimize(chain, "int8", calibration=[x])
            self.ops["int8"] = [
                (2 * n**3, lambda: torch._int_mm(qa, qb)),
                (2 * 512 * 512 * 9 * side * side * len(chain.convs), lambda: run(x)),
            ]
        self.measure(reps=2)  # the first round warms up (and compiles the int8 chain)

    def measure(self, reps: int = 1) -> dict[str, float]:
        with torch.inference_mode():
            for _ in range(reps):
                for key, ops in self.ops.items():
                    for flop, fn in ops:
                        t = time.perf_counter()
                        fn()
                        self.best[key] = max(self.best.get(key, 0.0), flop / (time.perf_counter() - t) / 1e9)
        return self.best

    def of(self, precision: str) -> float:
        """The peak a path of this precision is measured against (fp16 runs on bf16-class units here)."""
        return self.best.get(precision, self.best["bf16" if precision == "fp16" else "fp32"])


def agreement_by_margin(fast, reference, images, margins=(0.0, 0.01, 0.03, 0.1, 0.3)) -> dict[str, dict[str, float]]:
    """Argmax agreement over the pixels where fp32's top-2 logit margin is at least m, and their share, per m.

    Reduced precision flips only pixels that fp32 itself barely decides; how many such pixels a model has depends
    on its weights (trained models are far more confident than the golden fixtures), so this tells what the guard's
    single number would be for a more confident model.
    """
    ref_parts, out_parts = [], []
    with torch.inference_mode():
        for x in images:
            r, o = reference(x).float(), fast(x).float()
            ref_parts.append(r.movedim(1, -1).reshape(-1, r.shape[1]))
            out_parts.append(o.movedim(1, -1).reshape(-1, o.shape[1]))
    ref, out = torch.cat(ref_parts), torch.cat(out_parts)
    top2 = ref.topk(2, dim=1).values
    margin, same = top2[:, 0] - top2[:, 1], ref.argmax(1) == out.argmax(1)
    report = {}
    for m in margins:
        keep = margin >= m
        share = float(keep.float().mean())
        report[f">={m:g}"] = {"share": share, "agreement": float(same[keep].float().mean()) if share else float("nan")}
    return report


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux's VmHWM starts afresh at exec; ru_maxrss would carry over the parent's peak
    from the fork, which is the whole benchmark's for the children that measure one path."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_rss(path: str, weights: str, size: int) -> dict:
    """In a fresh process: build ``path`` and run it twice at size² batch 1 (``--child rss``). Its first call
    reuses the kernels inductor cached on disk during the main run: the cost of a later run, not a first one."""
    x = torch.randn(1, 3, size, size)
    t = time.perf_counter()
    fn = build_path(build_model(weights), path)
    fn(x)
    first = time.perf_counter() - t
    fn(x)
    return {"peak_rss_mb": peak_rss_mb(), "first_call_fresh_process_s": first}


def child_big_photo(weights: str, width: int = 6000, height: int = 4000) -> dict:
    """In a fresh process: the default Segmenter path on a random-content photo (``--child big_photo``)."""
    import numpy as np

    from fcnseg.predict import Segmenter

    segmenter = Segmenter(build_model(weights), weights=None)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    before = peak_rss_mb()
    mask = segmenter.predict(image).mask
    return {
        "photo": f"{width}x{height}",
        "mask_shape": list(mask.shape),
        "rss_before_mb": before,
        "peak_rss_mb": peak_rss_mb(),
    }


def in_subprocess(args: argparse.Namespace, *child: str) -> dict:
    """Rerun this script as ``--child ...`` so that peak RSS belongs to one job alone."""
    cmd = [sys.executable, __file__, "--weights", args.weights, "--threads", str(args.threads), "--child", *child]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="every path, per-path peak RSS, the 6000x4000 photo")
    p.add_argument("--paths", help=f"comma list from auto,{','.join(BENCH_PATHS)} (default: {QUICK_PATHS})")
    p.add_argument("--sizes", default="256,520,1024")
    p.add_argument("--batches", default="1,4")
    p.add_argument("--batched-up-to", type=int, help="largest size run at batch > 1 (default 256)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per (size, batch) below 1024")
    p.add_argument("--reps-large", type=int, default=2, help="timed repetitions at sizes >= 1024")
    p.add_argument("--weights", default="trained", help="trained | golden | random | a state-dict path")
    p.add_argument("--guard-size", type=int, default=256, help="side of the guard's (square-cropped) photos")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rss", help="comma list of paths to rerun alone for peak RSS at 520² (--full: a few)")
    p.add_argument("--big-photo", action=argparse.BooleanOptionalAction, help="6000x4000 RSS check (--full)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)  # internal: rss PATH | big_photo
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed.json"))
    args = p.parse_args()
    args.paths = args.paths or (FULL_PATHS if args.full else QUICK_PATHS)
    args.batched_up_to = args.batched_up_to or 256
    args.rss = args.rss if args.rss is not None else ("none,byhand_compile_bf16,compile_bf16,int8" if args.full else "")
    args.big_photo = args.full if args.big_photo is None else args.big_photo
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.child:
        kind, *rest = args.child
        print(json.dumps(child_rss(rest[0], args.weights, 520) if kind == "rss" else child_big_photo(args.weights)))
        return

    caps = cpu_capabilities()
    paths = [s for s in args.paths.split(",") if s]
    if "none" not in paths:
        paths.insert(0, "none")
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    model = build_model(args.weights)
    print(
        f"CPU: {caps.name} [{cpu_kind(caps)}] ({caps.isa}; bf16={caps.bf16} amx={caps.amx} int8/vnni={caps.int8}), "
        f"{args.threads} threads, torch {torch.__version__}; auto = {auto_plan('cpu')}",
        flush=True,
    )
    peaks = KernelPeaks(int8=caps.int8)
    print(f"kernel peaks (start): {format_peaks(peaks.best)}", flush=True)

    s = args.guard_size  # square crops: one shape, so static-shape paths compile once for the guard
    photos = [x[..., :s, :s] for x in sample_photos(s)]
    reference = optimize(model, "none")
    fns, info, plans = {}, {}, {}
    for name in paths:
        t = time.perf_counter()
        try:
            fn = build_path(model, name)  # int8 calibrates on its default photos
            guard = accuracy_guard(fn, reference, photos)  # also the first call(s): compiles
        except Exception as e:  # a path this machine cannot run is reported, not fatal
            info[name] = {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
            print(f"{name:>22}: unavailable ({info[name]['error']})", flush=True)
            continue
        fns[name] = fn
        plans[name] = plan = getattr(fn, "plan", None) or BENCH_PATHS[name]  # auto: its pick
        info[name] = {
            "plan": plan.__dict__,
            "build_and_guard_s": time.perf_counter() - t,
            "agreement": guard.agreement,
            "mean_abs_dlogit": guard.mean_abs_diff,
            "max_abs_dlogit": guard.max_abs_diff,
            "guard_passed": guard.passed,
            "agreement_by_fp32_margin": agreement_by_margin(fn, reference, photos),
        }
        print(
            f"{name:>22}: {plan}\n{'':>22}  built+guarded in {info[name]['build_and_guard_s']:.1f}s, agreement "
            f"{guard.agreement:.4%}, mean|dlogit| {guard.mean_abs_diff:.2e}; where fp32's top-2 margin is "
            + ", ".join(
                f"{m}: {v['agreement']:.2%} ({v['share']:.0%} of pixels)"
                for m, v in info[name]["agreement_by_fp32_margin"].items()
                if m != ">=0"
            ),
            flush=True,
        )

    print(f"auto's rule on this CPU ({cpu_kind(caps)}): {auto_rule(info)}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": caps.name, "kind": cpu_kind(caps), "isa": caps.isa, "bf16": caps.bf16, "amx": caps.amx}
    machine["vnni"] = caps.int8
    machine.update(threads=args.threads, torch=torch.__version__, python=platform.python_version())
    machine["note"] = "2-core CPU shared with other jobs: compare ratios within this run"
    rows: list[dict] = []
    result = {"machine": machine, "kernel_peaks": peaks.best, "weights": args.weights, "paths": info, "rows": rows}
    for size in sizes:
        for batch in batches:
            if batch > 1 and size > args.batched_up_to:
                continue
            x = torch.randn(batch, 3, size, size)
            gflop = conv_gflop(model, batch, size)
            times: dict[str, list[float]] = {n: [] for n in fns}
            warm: dict[str, float] = {}
            for n, fn in fns.items():  # warm-up: includes the compile of a new shape for static-shape paths
                t = time.perf_counter()
                fn(x)
                warm[n] = time.perf_counter() - t
            for _ in range(args.reps_large if size >= 1024 else args.reps):
                # the peak too is re-measured between reps: on a shared CPU it is only meaningful in the same window
                peaks.measure()
                for n, fn in fns.items():
                    t = time.perf_counter()
                    fn(x)
                    times[n].append(time.perf_counter() - t)
            base = statistics.median(times["none"])
            for n in fns:
                med = statistics.median(times[n])
                row = {
                    "path": n,
                    "size": size,
                    "batch": batch,
                    "median_s": med,
                    "p90_s": pct(times[n], 0.9),
                    "images_per_s": batch / med,
                    "speedup_vs_eager": base / med,
                    "warmup_s": warm[n],
                    "gflop": gflop,
                    "gflops": gflop / med,
                    "of_peak": gflop / med / peaks.of(plans[n].precision),
                    "times_s": times[n],
                }
                rows.append(row)
                print(
                    f"{size:5d}² b{batch} {n:>22}: median {med:7.3f}s p90 {row['p90_s']:7.3f}s "
                    f"{row['images_per_s']:6.2f} img/s  x{row['speedup_vs_eager']:5.2f} vs eager  "
                    f"{row['gflops']:6.0f} GFLOP/s ({row['of_peak']:.0%} of peak)",
                    flush=True,
                )
            out.write_text(json.dumps(result, indent=1))  # partial results survive an interrupted run

    print(f"\nkernel peaks (best of the run): {format_peaks(peaks.best)}")
    print(
        f"{'size':>6} {'b':>2} {'path':>20} {'median s':>9} {'p90 s':>7} {'img/s':>6} {'x eager':>7} "
        f"{'warmup s':>8} {'GFLOP/s':>7} {'of peak':>7}"
    )
    for row in rows:  # of_peak against the best peak of the whole run, for the path's precision
        row["of_peak"] = row["gflops"] / peaks.of(plans[row["path"]].precision)
        print(
            f"{row['size']:>6} {row['batch']:>2} {row['path']:>20} {row['median_s']:>9.3f} {row['p90_s']:>7.3f} "
            f"{row['images_per_s']:>6.2f} {row['speedup_vs_eager']:>7.2f} {row['warmup_s']:>8.1f} "
            f"{row['gflops']:>7.0f} {row['of_peak']:>7.0%}"
        )
    for n in [n for n in args.rss.split(",") if n in fns]:
        info[n].update(in_subprocess(args, "rss", n))
        print(f"{n:>22}: alone at 520² b1: {info[n].get('peak_rss_mb', info[n].get('error'))} MB peak RSS", flush=True)
    big = in_subprocess(args, "big_photo") if args.big_photo else None
    if big:
        print(f"6000x4000 photo, default Segmenter path: {big}", flush=True)

    result.update(big_photo=big, peak_rss_mb_whole_run=peak_rss_mb(), goals=goals(rows, peaks))
    result["vs_openvino"] = vs_openvino(rows, info)
    out.write_text(json.dumps(result, indent=1))
    plot(rows, out.with_suffix(".png"), caps.name)
    print(f"wrote {out} and {out.with_suffix('.png')}")


def auto_rule(info: dict[str, dict]) -> str:
    """What ``"auto"`` picks on this CPU by its rule (the first candidate passing the guard), from the guards
    measured here; a candidate that was not measured is named as such."""
    named = {plan: name for name, plan in BENCH_PATHS.items()}
    tried = []
    for plan in auto_candidates("cpu"):
        name = named.get(plan, str(plan))
        guard = info.get(name, {})
        if plan == auto_candidates("cpu")[-1]:
            return "; ".join([*tried, f"{name} (last candidate, not guarded)"])
        if "agreement" not in guard:
            tried.append(f"{name}: not measured")
        elif guard["guard_passed"]:
            return "; ".join([*tried, f"{name} ({guard['agreement']:.2%} agreement, passes)"])
        else:
            tried.append(f"{name}: {guard['agreement']:.2%}, fails the guard")
    return "; ".join(tried)


def format_peaks(best: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f} G{'OP' if k == 'int8' else 'FLOP'}/s" for k, v in best.items())


def goals(rows: list[dict], peaks: KernelPeaks, size: int = 520) -> dict | None:
    """Issue 8's goals at size² batch 1, as ratios of this run, and what meeting each would take of the peaks.

    A goal that needs more than 100% of the measured peak for its precision cannot be met by faster kernels
    on this CPU, only by doing fewer operations.
    """
    at = {r["path"]: r for r in rows if r["size"] == size and r["batch"] == 1}
    byhand = [r for n, r in at.items() if n.startswith("byhand_compile")]
    if "none" not in at or not byhand:
        return None
    eager, best_byhand = at["none"], min(byhand, key=lambda r: r["median_s"])
    flop = eager["gflop"]
    report = {
        "best_byhand": best_byhand["path"],
        "best_byhand_s": best_byhand["median_s"],
        "target_1.3x_byhand_s": best_byhand["median_s"] / 1.3,
        "target_1.3x_byhand_of_bf16_peak": flop / (best_byhand["median_s"] / 1.3) / peaks.of("bf16"),
        "target_10x_eager_s": eager["median_s"] / 10,
        "target_10x_eager_of_int8_peak": flop / (eager["median_s"] / 10) / peaks.of("int8"),
    }
    for n in ("compile_bf16", "auto", "int8"):
        if n in at:
            report[f"{n}_x_eager"] = eager["median_s"] / at[n]["median_s"]
            report[f"{n}_x_best_byhand"] = best_byhand["median_s"] / at[n]["median_s"]
    print(f"\ngoals at {size}² batch 1 (fcnseg runs {flop:.0f} GFLOP per image):")
    for k, v in report.items():
        print(f"  {k:>34}: {v:.3f}" if isinstance(v, float) else f"  {k:>34}: {v}")
    return report


def vs_openvino(rows: list[dict], info: dict[str, dict], size: int = 520) -> dict | None:
    """Issue 21's comparisons at size² batch 1, ratios of this run: the default path against OpenVINO fp32, and the
    fastest fcnseg path that passes the guard against the fastest OpenVINO path that passes it."""
    at = {r["path"]: r for r in rows if r["size"] == size and r["batch"] == 1}
    ov = {n: r for n, r in at.items() if n.startswith("openvino")}
    if not ov or "default" not in at:
        return None
    passed = {n: r for n, r in at.items() if info[n].get("guard_passed") or n in ("none", "default")}
    best_ov = min((r for n, r in passed.items() if n in ov), key=lambda r: r["median_s"], default=None)
    best_ours = min((r for n, r in passed.items() if n not in ov), key=lambda r: r["median_s"])
    report = {
        "default_x_openvino_fp32": at["openvino"]["median_s"] / at["default"]["median_s"] if "openvino" in at else None
    }
    if best_ov:
        report.update(best_guarded_openvino=best_ov["path"], best_guarded_fcnseg=best_ours["path"])
        report["fcnseg_x_openvino"] = best_ov["median_s"] / best_ours["median_s"]
    print(f"vs OpenVINO at {size}² batch 1: {report}")
    return report


def plot(rows: list[dict], path: Path, cpu: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n in dict.fromkeys(r["path"] for r in rows):
        pts = sorted((r["size"], r["median_s"]) for r in rows if r["path"] == n and r["batch"] == 1)
        ax.plot([s for s, _ in pts], [t for _, t in pts], marker="o", label=n)
    ax.set(xlabel="image side (px), batch 1", ylabel="median latency (s)", yscale="log", title=f"FCN-ResNet50 on {cpu}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
