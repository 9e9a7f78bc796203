"""The ``fcnseg`` command: one subcommand per job, each a thin layer over a library function."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__

__all__ = ["build_parser", "main"]

# Each module defines ``register(subparsers)``, which adds its subcommand(s) and sets ``func(args) -> int``.
_COMMAND_MODULES = ("models", "segment", "eval", "data", "train", "export", "serve")


class CLIError(Exception):
    """An expected failure: printed as one line, exit code 1."""


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
