"""Throughput of ``fcnseg segment`` (its defaults) against the seed page's loop, on a folder of real-size photos.

The photos are fcnseg's bundled sample pictures, resized and cropped to sizes between 640x480 and 1920x1080.
The baseline does what the PyTorch Hub page does, one image at a time: PIL -> tensor -> model -> argmax,
plus the resize to 520 px that the weights prescribe and a nearest resize of the mask back to the photo.
Each method is a whole program, timed from its start (Python, imports, model load) to its last file written.
Both use the same checkpoint: ``trained`` (default) is the golden test weights with the last layer fitted to the
shapes dataset (``tests/trained.py``), whose smooth, decisive label maps are what a trained model gives;
the label upsampling's cost depends on how many pixels lie on class boundaries, so untrained noise would be unfair.

    PYTHONPATH=src python benchmarks/bench_segment.py --count 12 --chunk 6

``--large`` also runs the CLI on one 6000x4000 photo and reports its peak memory (the default path never
holds the 24 MP x K-class logit map).

``--fast-study`` measures instead what ``--fast`` costs and pays on ``--count`` photos, whole programs again: the
default; ``--fast`` with an empty cache (it starts on the default path and builds only what the run can repay);
the build itself (what a long run's background thread does: every candidate built and guarded, one photo, in a
program of its own); ``--fast`` with that warm cache; and the break-even photo count (the build's seconds over
the per-photo saving of warm ``--fast``)::

    PYTHONPATH=src python benchmarks/bench_segment.py --fast-study --count 12
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))

from fcnseg.models import get_model  # noqa: E402
from fcnseg.optimize import cpu_capabilities, cpu_kind  # noqa: E402
from fcnseg.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

SAMPLES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


def make_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` JPEGs cut from the bundled sample photos, each a random size in 640x480..1920x1080."""
    assets = SRC / "fcnseg" / "assets"
    rng = np.random.default_rng(seed)
    sources = [Image.open(assets / f"{name}.jpg").convert("RGB") for name in SAMPLES]
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


def trained_checkpoint(path: Path) -> Path:
    """The golden FCN-ResNet50 with its last layer fitted to the shapes dataset, as a checkpoint file."""
    sys.path.insert(0, str(ROOT / "tests"))
    from golden import state_dict
    from trained import trained_model

    from fcnseg.models import fcn_resnet50
    from fcnseg.weights import VOC_CATEGORIES

    model = fcn_resnet50(num_classes=21, aux_loss=True).eval()
    model.load_state_dict(state_dict("fcn_resnet50"))
    model.aux_classifier = None
    model = trained_model(model, Path(torch.hub.get_dir()).parent / "fcnseg-bench")
    torch.save({"model": model.state_dict(), "categories": VOC_CATEGORIES}, path)
    return path


def whole_program(argv: list[str], extra_env: dict[str, str] | None = None) -> float:
    """Wall seconds of ``python argv...`` from start to exit (imports, model load, every file written)."""
    env = {**os.environ, "PYTHONPATH": str(SRC), **(extra_env or {})}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


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


def fast_study(tmp: Path, weights: str, args: argparse.Namespace) -> dict:
    """``--fast`` against the default on the same photos, cold (empty cache) and warm (after the build), whole
    programs; each ``--fast`` run's last line says what ran (see the module docstring)."""
    common = ["--model", args.model, "--weights", weights, "--size", str(args.size), "--quiet", "--save", "mask"]
    folder = tmp / "study"
    make_photos(folder, args.count, seed=1)
    n = args.count
    cold, warm = tmp / "home_cold", tmp / "home_warm"
    said: dict[str, str] = {}

    def run(label: str, home: Path | None, *extra: str) -> float:
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        if home is not None:
            env.update(TORCH_HOME=str(home), TORCHINDUCTOR_CACHE_DIR=str(home / "inductor"))
        argv = [sys.executable, *extra[:1], *extra[1:]]
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"{label} failed: {proc.stderr.strip().splitlines()[-1:]}")
        said[label] = (proc.stdout.strip().splitlines() or [""])[-1]
        print(f"{label}: {seconds:.1f} s; {said[label]}", flush=True)  # as it goes: the study takes a while
        return seconds

    def segment(label: str, home: Path | None, *flags: str) -> float:
        out = str(tmp / f"o{time.monotonic_ns()}")
        return run(label, home, "-m", "fcnseg", "segment", str(folder), "-o", out, *common, *flags)

    times = {
        f"default, {n} photos": segment("default", None),
        f"--fast, empty cache, {n} photos": segment("fast cold", cold, "--fast"),
        "build (every candidate built and guarded, 1 photo)": run(
            "build", warm, __file__, "--model", args.model, "--build", str(folder), weights, str(args.size)
        ),
        f"--fast, warm cache, {n} photos": segment("fast warm", warm, "--fast"),
    }
    if args.repeat_default:
        times[f"default again, {n} photos"] = segment("default again", None)
    default = statistics.mean(t for k, t in times.items() if k.startswith("default"))
    saving = (default - times[f"--fast, warm cache, {n} photos"]) / n
    build = times["build (every candidate built and guarded, 1 photo)"]
    return {
        "seconds": times,
        "said": said,
        "cold_over_default": times[f"--fast, empty cache, {n} photos"] / default,
        "warm_over_default": times[f"--fast, warm cache, {n} photos"] / default,
        "saving_per_photo_s": saving,
        "break_even_photos": build / saving if saving > 0 else float("inf"),
    }


def build_cache(folder: str, weights: str, size: int, model: str) -> None:
    """What a long ``--fast`` run's background thread does, in the foreground: every candidate built and judged on
    the first photo (topped up with bundled photos), into ``$TORCH_HOME/fcnseg``."""
    from fcnseg.predict import Segmenter

    segmenter = Segmenter(model, None if weights == "none" else weights, size=size, device="cpu", optimize="auto")
    first = sorted(Path(folder).iterdir())[0]
    segmenter.logits(segmenter.preprocess(Image.open(first).convert("RGB"))[None])
    segmenter._forward.wait()
    print("; ".join(segmenter.speed_details()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=12, help="number of photos (default: 12)")
    parser.add_argument("--model", default="fcn_resnet50")
    parser.add_argument("--weights", default="trained", help="'trained' (see above), 'none' or a checkpoint path")
    parser.add_argument("--size", type=int, default=520)
    parser.add_argument("--chunk", type=int, default=6, help="photos per interleaved round (default: 6)")
    parser.add_argument("--large", action="store_true", help="also measure peak memory on a 6000x4000 photo")
    parser.add_argument("--fast-study", action="store_true", help="--fast's build cold/warm and break-even count")
    parser.add_argument("--json", type=Path, help="default: benchmarks/results/bench_segment[_fast].json")
    parser.add_argument("--naive", nargs=4, metavar=("FOLDER", "OUT", "WEIGHTS", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--model-alone", nargs=3, metavar=("FOLDER", "WEIGHTS", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--repeat-default", action=argparse.BooleanOptionalAction, default=True, help="--fast-study: "
                        "run the default a second time, last (against drift in the machine's load)")  # fmt: skip
    parser.add_argument("--build", nargs=3, metavar=("FOLDER", "WEIGHTS", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    if args.naive:  # the baseline as a program of its own: load the model, loop over the folder
        folder, out, weights, size = args.naive
        model = get_model(args.model, weights=None if weights == "none" else weights, aux_loss=False).eval()
        naive_loop(sorted(Path(folder).iterdir()), model, Path(out), int(size))
        return
    if args.build:  # --fast-study: the cache's build, as a program of its own
        build_cache(args.build[0], args.build[1], int(args.build[2]), args.model)
        return
    if args.model_alone:  # the floor for a folder run: decode, preprocess and the default path's forward, no output
        from fcnseg.predict import Segmenter

        folder, weights, size = args.model_alone
        segmenter = Segmenter(args.model, None if weights == "none" else weights, size=int(size), device="cpu")
        for p in sorted(Path(folder).iterdir()):
            segmenter.logits(segmenter.preprocess(Image.open(p).convert("RGB"))[None])
        return

    caps = cpu_capabilities()
    if args.fast_study:
        with tempfile.TemporaryDirectory() as tmp:
            weights = str(trained_checkpoint(Path(tmp) / "trained.pth")) if args.weights == "trained" else args.weights
            study = fast_study(Path(tmp), weights, args)
        print(f"--fast vs default, {args.model} ({args.weights} weights), size {args.size}, {torch.get_num_threads()} "
              f"threads, {caps.name} [{cpu_kind(caps)}], whole programs, load {os.getloadavg()[0]:.1f}")  # fmt: skip
        for k, v in study["seconds"].items():
            print(f"{k:52} {v:8.1f} s")
        for k, v in study["said"].items():
            print(f"{k}: {v}")
        print(f"--fast / default: {study['cold_over_default']:.2f} with an empty cache (goal <= 1.1), "
              f"{study['warm_over_default']:.2f} warm (goal <= 0.67); the build repays after "
              f"{study['break_even_photos']:.0f} photos ({study['saving_per_photo_s']:.2f} s saved per photo)")  # fmt: skip  # noqa: E501
        study.update(cpu=caps.name, cpu_kind=cpu_kind(caps), threads=torch.get_num_threads(), load=os.getloadavg())
        out = args.json or Path("benchmarks/results/bench_segment_fast.json")
        out.write_text(json.dumps(study, indent=2) + "\n")
        return

    methods = {
        "naive seed-page loop (mask only)": None,
        "fcnseg segment defaults (mask+overlay)": [],
        "fcnseg segment --save mask": ["--save", "mask"],
        "model alone (decode + forward, no output)": "model_alone",
    }
    per_chunk: dict[str, list[float]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = str(trained_checkpoint(tmp / "trained.pth")) if args.weights == "trained" else args.weights
        large = None
        if args.large:
            big = make_photos(tmp / "large", 1)[0]
            Image.open(big).resize((6000, 4000), Image.BICUBIC).save(big, quality=90)
            large = []
            for save in ("mask", "mask,overlay", "mask,overlay,json"):
                cmd = [str(big), "-o", str(tmp / "large_out"), "--weights", weights, "--workers", "0", "--overwrite"]
                peak_mb, wall = peak_rss_of_cli([*cmd, "--model", args.model, "--save", save])
                large.append(
                    {"size": "6000x4000", "save": save, "peak_rss_mb": round(peak_mb), "wall_s": round(wall, 1)}
                )
        paths = make_photos(tmp / "photos", args.count)
        # Interleave the methods over chunks of photos, so that load from other users of the CPU hits all alike.
        for k in range(0, args.count, args.chunk):
            chunk = tmp / f"chunk{k}"
            chunk.mkdir()
            for p in paths[k : k + args.chunk]:
                os.link(p, chunk / p.name)
            for i, (method, extra) in enumerate(methods.items()):
                out = str(tmp / f"out{i}_{k}")
                if extra is None:
                    argv = [__file__, "--model", args.model, "--naive", str(chunk), out, weights, str(args.size)]
                elif extra == "model_alone":
                    argv = [__file__, "--model", args.model, "--model-alone", str(chunk), weights, str(args.size)]
                else:
                    common = ["--model", args.model, "--weights", weights, "--size", str(args.size), "--quiet"]
                    argv = ["-m", "fcnseg", "segment", str(chunk), "-o", out, *common, *extra]
                per_chunk[method].append(whole_program(argv))
    seconds = {m: sum(t) for m, t in per_chunk.items()}
    rows = [(m, args.count / seconds[m], seconds[m]) for m in methods]

    base = rows[0][1]
    print(f"{args.count} photos 640x480..1920x1080, {args.model} ({args.weights} weights), size {args.size}, "
          f"{torch.get_num_threads()} threads, {caps.name} [{cpu_kind(caps)}], whole programs timed")  # fmt: skip
    print(f"{'method':42} {'images/s':>9} {'seconds':>8} {'x naive':>7}")
    for label, rate, secs in rows:
        print(f"{label:42} {rate:9.3f} {secs:8.1f} {rate / base:6.2f}")
    for run in large or []:
        print(f"6000x4000 photo, default path, --save {run['save']}: peak RSS {run['peak_rss_mb']} MB, "
              f"{run['wall_s']} s with start-up (its 21-class full-size logits alone would take 1923 MB)")  # fmt: skip
    result = {
        "count": args.count, "model": args.model, "weights": args.weights, "size": args.size,
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "cpu": caps.name, "cpu_kind": cpu_kind(caps), "python": platform.python_version(),
        "rows": [{"method": m, "images_per_s": r, "seconds": s, "ratio": r / base, "chunk_seconds": per_chunk[m]}
                 for m, r, s in rows],
        "large_image": large,
        "note": "whole programs (start-up, model load, every output written), summed over the interleaved chunks; "
                "2-core CPU shared with other jobs: compare ratios within this run",
    }  # fmt: skip
    out = args.json or Path("benchmarks/results/bench_segment.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
