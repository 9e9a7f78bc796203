"""``fcnseg export``: ONNX or TorchScript file with its metadata, followed by a parity check against PyTorch."""

from __future__ import annotations

import argparse
import math

from .. import storage
from . import CLIError, add_model_arguments, add_size_argument


def _sizes(text: str) -> list[tuple[int, int]]:
    """``"64x64,75x101"`` -> [(64, 64), (75, 101)] as (height, width)."""
    try:
        sizes = [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW[,HxW...], got {text!r}") from None
    if not sizes or any(len(s) != 2 or min(s) < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected HxW[,HxW...] with positive sizes, got {text!r}")
    return sizes  # type: ignore[return-value]


def _tolerance(text: str) -> float:
    """A finite tolerance >= 0 (a negative or NaN one would pass or fail every check whatever the file holds)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _export(args: argparse.Namespace) -> int:
    from ..faults import describe

    output = storage.as_path(args.output)  # a file, or a URL (s3://b/model.onnx): uploaded once checked
    try:
        return _export_checked(args, output)
    except OSError as e:  # a write fault: --output is as it was
        kept = f"the previous {output} is unchanged" if storage.is_file(output) else "nothing was written"
        raise CLIError(describe(e, kept=kept, todo="export again")) from e


def _export_checked(args: argparse.Namespace, output: storage.AnyPath) -> int:
    import torch

    from ..export import RESIZED_MIN_AGREEMENT, check_parity, export_model
    from ..predict import Segmenter

    if args.threads:
        torch.set_num_threads(args.threads)
    weights = args.weights
    seg = Segmenter(args.model, weights, device="cpu", size=args.size)
    inside = args.with_preprocessing and args.format == "onnx"
    print(seg.describe_size() + ("" if inside else "; recorded in the file, done by the caller"))
    runtime = "ONNX Runtime (CPU)" if args.format == "onnx" else "TorchScript (torch.jit.load)"
    # checked under a temporary name: --output is replaced (renamed onto, or uploaded to) only by a good file
    with storage.atomic_path(output) as tmp:
        _, module = export_model(
            seg.model,
            tmp,
            fmt=args.format,
            model_name=seg.model_name,
            weights=str(weights) if weights is not None else None,
            categories=seg.categories,
            preprocessing=args.with_preprocessing,
            argmax=args.argmax,
            opset=args.opset,
            mean=seg.preprocess.mean,
            std=seg.preprocess.std,
            resize_size=seg.preprocess.resize_size,
            size_reason=seg.size_reason,
        )
        print(
            f"exported {args.format} ({tmp.stat().st_size / 1e6:.1f} MB): {module.describe()['input']} -> "
            f"{module.describe()['output']}"
        )
        if module.resize_size is not None:
            print(
                f"parity: {runtime} vs PyTorch eager, pass if the output has the input's size and argmax agreement "
                f">= {RESIZED_MIN_AGREEMENT:.0%} (resized inside: the two runtimes' resizing differs by a uint8 level)"
            )
        else:
            print(
                f"parity: {runtime} vs PyTorch eager, pass if max|dlogit| <= {args.rtol:g} * max(1, max|logit|) and "
                "no class change where the top-2 margin exceeds that"
            )
        reports = check_parity(tmp, module, sizes=args.check_sizes, batch_sizes=(1, 2), rtol=args.rtol)
        for r in reports:
            print("  " + r.line())
        failed = [r for r in reports if not r.ok]
        if failed:
            kept = "the previous file is kept" if storage.is_file(output) else "nothing written"
            raise CLIError(f"{output}: parity check failed on {len(failed)} of {len(reports)} shapes; {kept}")
    print(f"parity ok on {len(reports)} shapes; wrote {output}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX or TorchScript and check it against PyTorch",
        description="Export to ONNX (opset >= 17, dynamic batch/height/width) or TorchScript, with categories, "
        "mean/std, palette, input size (resize_size: the size rule of every command) and version stored in the "
        "file; an ONNX file --with-preprocessing also resizes each image to that size and its output back. "
        "The export is then run on several input sizes "
        "and compared with PyTorch before it replaces --output; a mismatch beyond the tolerance fails the command "
        "and leaves --output as it was.",
    )
    add_model_arguments(p, device=False)
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    add_size_argument(p)
    p.add_argument(
        "--output", "-o", required=True,
        help="output file (.onnx, or .pt for TorchScript; --format decides), or a URL (s3://b/model.onnx): uploaded "
             "whole once the parity check passed",
    )  # fmt: skip
    p.add_argument(
        "--with-preprocessing",
        nargs="?",
        const="nhwc",
        choices=("nhwc", "nchw"),
        help="take uint8 RGB (NHWC by default, or NCHW) and normalize inside the model",
    )
    p.add_argument("--argmax", action="store_true", help="output a uint8 (N, H, W) class mask instead of logits")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 17 (default: 18)")
    p.add_argument(
        "--check-sizes",
        type=_sizes,
        default=[(64, 64), (75, 101), (120, 56)],
        help="HxW list for the parity check, each at batch 1 and 2 (default: 64x64,75x101,120x56)",
    )
    p.add_argument(
        "--rtol", type=_tolerance, default=1e-4, help="parity tolerance relative to max|logit| (default 1e-4)"
    )
    p.add_argument("--threads", type=int, default=0, help="limit CPU threads (0: torch default)")
    p.set_defaults(func=_export)
