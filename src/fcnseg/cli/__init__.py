"""The ``fcnseg`` command: one subcommand per job, each a thin layer over a library function."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from ..faults import DEBUG_ENV, debug_requested, describe, io_fault, is_out_of_memory
from ._grammar import (
    add_dataset_arguments,
    add_deprecated_alias,
    add_output_argument,
    add_progress_arguments,
    resolve_dataset,
)

__all__ = [
    "CLIError",
    "add_dataset_arguments",
    "add_deprecated_alias",
    "add_model_arguments",
    "add_output_argument",
    "add_progress_arguments",
    "add_size_argument",
    "build_parser",
    "main",
    "resolve_dataset",
]

# Each module defines ``register(subparsers)``, which adds its subcommand(s) and sets ``func(args) -> int``.
_COMMAND_MODULES = ("models", "segment", "eval", "data", "train", "export", "serve", "rank", "cache")


class CLIError(Exception):
    """An expected failure: printed as one line, exit code 1."""


def _weights(text: str) -> str | None:
    return None if text.lower() == "none" else text


def add_model_arguments(p: argparse.ArgumentParser, *, device: bool = True) -> None:
    """``--model``, ``--weights`` (``none`` -> None) and ``--device``, the same for every command that runs a model."""
    from ..weights import MODEL_WEIGHTS

    p.add_argument(
        "--model", choices=list(MODEL_WEIGHTS),
        help="default: the model a checkpoint given with --weights records, else fcn_resnet50",
    )  # fmt: skip
    p.add_argument(
        "--weights", default="DEFAULT", type=_weights,
        help="weights name (default: DEFAULT, the COCO/VOC checkpoint), a checkpoint file (.pth/.pt/.safetensors) "
             "or URL (s3://b/w.pth, https://...; fetched once per content into the hub cache), or 'none' for random "
             "initialisation (testing only: meaningless predictions)",
    )  # fmt: skip
    if device:
        p.add_argument("--device", default="auto", help="auto (CUDA when present; default), cpu, cuda, cuda:1...")


def _size(text: str) -> int | str:
    if text.lower() in ("auto", "native"):
        return text.lower()
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a pixel count, 'auto' or 'native', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {value}")
    return value


def add_size_argument(p: argparse.ArgumentParser, *, tiles: bool = False) -> None:
    """``--size``, spelled and resolved the same in every command (:func:`fcnseg.predict.input_size`)."""
    p.add_argument(
        "--size", type=_size, default="auto", metavar="{auto,native,N}",
        help="shorter side the images are resized to before the model: N pixels, 'native' (each image as it is), "
             "or 'auto' (default): the size a training checkpoint was validated at (its base_size), else 520 as "
             f"for the official weights{', native with --tile' if tiles else ''}. The command says which it used.",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcnseg",
        description="Semantic segmentation with FCN-ResNet50/101 (torchvision-compatible weights).",
    )
    parser.add_argument("--version", action="version", version=f"fcnseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(f".{name}", __name__).register(sub)
    _add_debug(parser)
    return parser


def _add_debug(parser: argparse.ArgumentParser, *, top: bool = True) -> None:
    """``--debug`` on every (sub)command, so that it works wherever it is typed."""
    parser.add_argument(
        "--debug", action="store_true", default=False if top else argparse.SUPPRESS,
        help=f"on an error, also print the traceback (or set {DEBUG_ENV}=1)",
    )  # fmt: skip
    for action in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
            _add_debug(child, top=False)


def _error_line(e: BaseException) -> str | None:
    """The one line for an expected failure (bad input, an I/O fault, too little memory); None for a bug."""
    from ..imageio import ImageDecodeError
    from ..weights import WeightsError

    if isinstance(e, (CLIError, WeightsError, ImageDecodeError)) or (isinstance(e, OSError) and e.errno is None):
        return str(e)  # ours, or an OSError raised with a message of its own
    if (fault := io_fault(e)) is not None:
        return describe(fault)
    if is_out_of_memory(e):
        return f"out of memory ({str(e).splitlines()[0][:200]}); use a smaller --batch-size or input size"
    if isinstance(e, ValueError):
        return str(e)
    if isinstance(e, ModuleNotFoundError):
        from ._extras import extra_line

        return extra_line(e)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as e:  # Ctrl-C; SIGTERM where a command raises it as one, with its signum (143)
        print(f"fcnseg {args.command}: {str(e) or 'interrupted'}", file=sys.stderr)
        return 128 + getattr(e, "signum", signal.SIGINT)
    except Exception as e:
        line = _error_line(e)
        if line is None:
            raise
        if debug_requested(args.debug):
            traceback.print_exc()
        print(f"fcnseg {args.command}: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
