"""Frames per second of fcnseg's video path against a naive per-frame loop and against the model alone, one run.

The clip is a pan across the bundled astronaut photo (H.264, ``--width`` x ``--height``, ``--frames`` frames).

- ``naive``: what a user writes first: decode a frame with PyAV, resize to ``--size`` and normalize, run the
  model, interpolate the logits to the frame's size, argmax, blend the colours, encode the frame with PyAV
  (libx264), one frame after another.
- ``fcnseg``: :func:`fcnseg.video.segment_video` with its defaults (overlay MP4, FFV1 masks, stats CSV): decoding
  in a thread, ``--batch-size`` frames a forward pass, labels upsampled only at class boundaries, encoding in a
  thread. ``--fast`` uses ``optimize="auto"`` (the fastest path for this CPU that passes the accuracy guard).
- ``model alone``: the same forward as fcnseg's on frames decoded and preprocessed beforehand: the floor.

    PYTHONPATH=src python benchmarks/bench_video.py --frames 24 --width 640 --height 360

Prints a table and writes ``benchmarks/results/bench_video.json``. Weights are random (``--weights none``, the
default; no download needed) or a checkpoint path: the speed of the model does not depend on its weights, the
label upsampling's does a little (random weights draw more class boundaries: the fcnseg path's worst case).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))

from fcnseg.optimize import cpu_capabilities, cpu_kind  # noqa: E402
from fcnseg.predict import Segmenter  # noqa: E402
from fcnseg.transforms import IMAGENET_MEAN, IMAGENET_STD, palette  # noqa: E402
from fcnseg.video import VideoReader, segment_video  # noqa: E402


def make_clip(path: Path, frames: int, width: int, height: int) -> None:
    """A pan across the bundled astronaut photo, H.264 yuv420p at 25 fps."""
    import av

    photo = Image.open(SRC / "fcnseg" / "assets" / "astronaut.jpg").convert("RGB")
    photo = photo.resize((width * 2, round(width * 2 * photo.height / photo.width)))
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            x = round(i * (photo.width - width) / max(frames - 1, 1))
            crop = photo.crop((x, 0, x + width, height))
            out.mux(s.encode(av.VideoFrame.from_image(crop)))
        out.mux(s.encode())


def naive_loop(clip: Path, model: torch.nn.Module, out: Path, size: int) -> float:
    """Seconds for decode -> preprocess -> model -> labels -> blend -> encode, one frame at a time."""
    import av

    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    colors = palette(256)
    start = time.perf_counter()
    with av.open(str(clip)) as src, av.open(str(out), "w") as dst:
        enc = None
        for frame in src.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            h, w = rgb.shape[:2]
            x = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)
            scale = size / min(h, w)
            x = F.interpolate(x[None], size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True)
            with torch.inference_mode():
                logits = model((x - mean) / std)["out"]
            labels = F.interpolate(logits, size=(h, w), mode="bilinear").argmax(1)[0].numpy()
            blend = (rgb * 0.5 + colors[labels] * 0.5).astype(np.uint8)
            if enc is None:
                enc = dst.add_stream("libx264", rate=25)
                enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
            dst.mux(enc.encode(av.VideoFrame.from_ndarray(blend, format="rgb24")))
        dst.mux(enc.encode())
    return time.perf_counter() - start


def model_alone(clip: Path, seg: Segmenter) -> float:
    """Seconds of fcnseg's forward passes alone, on frames decoded and preprocessed beforehand."""
    with VideoReader(clip) as reader:
        x = torch.stack([seg.preprocess(f.image) for f in reader.frames()])
    start = time.perf_counter()
    for i in range(0, len(x), seg.batch_size):
        seg.logits(x[i : i + seg.batch_size])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--size", type=int, default=360, help="shorter side fed to the model (default: 360)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--weights", default="none", help="'none' (random) or a checkpoint path")
    parser.add_argument("--fast", action="store_true", help="optimize='auto' for the fcnseg path and the floor")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_video.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = None if args.weights == "none" else args.weights
    seg = Segmenter(
        "fcn_resnet50", weights, device="cpu", size=args.size, batch_size=args.batch_size,
        optimize="auto" if args.fast else "default",
    )  # fmt: skip
    plain = Segmenter("fcn_resnet50", weights, device="cpu", optimize="none").model  # the naive loop's eager model
    plain.load_state_dict(seg.model.state_dict())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = tmp / "pan.mp4"
        make_clip(clip, args.frames, args.width, args.height)
        model_alone(clip, seg)  # warm-up: first-call allocations and, with --fast, the path's own set-up
        times = {
            "naive": naive_loop(clip, plain, tmp / "naive.mp4", args.size),
            "fcnseg": 0.0,
            "model alone": model_alone(clip, seg),
        }
        start = time.perf_counter()
        writer, stop = segment_video(seg, clip, tmp / "pan")
        times["fcnseg"] = time.perf_counter() - start
        assert stop is None and writer.frames == args.frames, stop
    caps = cpu_capabilities()
    fps = {k: args.frames / t for k, t in times.items()}
    load = os.getloadavg()
    print(f"{args.frames} frames {args.width}x{args.height}, model input {args.size} px, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, {caps.name} [{cpu_kind(caps)}], load {load[0]:.1f}")  # fmt: skip
    print(f"{'method':<14}{'frames/s':>10}{'x naive':>10}{'/ floor':>10}")
    for k in ("naive", "fcnseg", "model alone"):
        print(f"{k:<14}{fps[k]:>10.2f}{fps[k] / fps['naive']:>10.2f}{fps[k] / fps['model alone']:>10.2f}")
    if args.fast:
        print(f"--fast ran {seg.speed_path()}")
    result = {
        "frames": args.frames, "width": args.width, "height": args.height, "size": args.size,
        "batch_size": args.batch_size, "fast": args.fast, "speed_path": seg.speed_path(),
        "threads": torch.get_num_threads(), "cpu": caps.name, "cpu_kind": cpu_kind(caps), "load_avg": load,
        "python": platform.python_version(), "torch": torch.__version__, "seconds": times, "fps": fps,
    }  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
