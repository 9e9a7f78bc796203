"""The ``fcnseg`` command: one subcommand per job, each a thin layer over a library function."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__

__all__ = ["CLIError", "add_model_arguments", "build_parser", "main"]

# Each module defines ``register(subparsers)``, which adds its subcommand(s) and sets ``func(args) -> int``.
_COMMAND_MODULES = ("models", "segment", "eval", "data", "train", "export", "serve")


class CLIError(Exception):
    """An expected failure: printed as one line, exit code 1."""


def _weights(text: str) -> str | None:
    return None if text.lower() == "none" else text


def add_model_arguments(p: argparse.ArgumentParser, *, device: bool = True) -> None:
    """``--model``, ``--weights`` (``none`` -> None) and ``--device``, the same for every command that runs a model."""
    from ..models import list_models

    p.add_argument("--model", default="fcn_resnet50", choices=list_models(), help="default: fcn_resnet50")
    p.add_argument(
        "--weights", default="DEFAULT", type=_weights,
        help="weights name (default: DEFAULT, the COCO/VOC checkpoint), a checkpoint file (.pth/.pt/.safetensors), "
             "or 'none' for random initialisation (testing only: meaningless predictions)",
    )  # fmt: skip
    if device:
        p.add_argument("--device", default="auto", help="auto (CUDA when present; default), cpu, cuda, cuda:1...")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcnseg",
        description="Semantic segmentation with FCN-ResNet50/101 (torchvision-compatible weights).",
    )
    parser.add_argument("--version", action="version", version=f"fcnseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(f".{name}", __name__).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ..imageio import ImageDecodeError
    from ..weights import WeightsError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, WeightsError, ImageDecodeError, FileNotFoundError, ValueError) as e:
        print(f"fcnseg {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fcnseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
