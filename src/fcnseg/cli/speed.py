"""``--fast``, ``--precision`` and ``--backend``: the speed options of every subcommand that runs the model."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..optimize.plans import SpeedPlan

__all__ = ["BACKENDS", "PRECISIONS", "add_speed_arguments", "require_speed_extras", "speed_options_from_args"]

# fcnseg.optimize.plans' choices, repeated here so that the parser is built without importing torch (the optimize
# package needs it); tests/cli/test_startup.py checks that the two agree.
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
BACKENDS = ("eager", "compile", "onnxruntime", "openvino")


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """``--fast``, ``--precision`` and ``--backend``, for any subcommand that runs the model."""
    group = parser.add_argument_group(
        "speed",
        "Without a flag: BN folded, channels-last fp32, no compile wait, the same labels as plain PyTorch. --fast "
        "starts on that path at once while faster ones (int8, bf16; OpenVINO where installed, or compiled by "
        "inductor) are built in the background and judged on your images (topped up with bundled photos at their "
        "size to >= 4 images and 65536 pixels, again for each new size class): the first whose labels agree with "
        "fp32 (>= 99.8% of all pixels, >= 98% of each image's, no class lost) takes over. When the run is too "
        "short to repay a build it is skipped, and says so. What is built is cached under $TORCH_HOME/fcnseg "
        "(see 'fcnseg cache list'), so later runs load it in seconds. See README 'Faster inference'.",
    )
    group.add_argument(
        "--fast", action="store_true", help="the fastest path for this CPU that passes the accuracy guard (see above)"
    )
    group.add_argument(
        "-v", "--verbose", action="store_true", help="with --fast: what each candidate did (guard, build time, cache)"
    )
    group.add_argument("--precision", choices=PRECISIONS, help="numeric precision (default fp32, or auto with --fast)")
    group.add_argument(
        "--backend",
        choices=BACKENDS,
        help="how the model runs (default eager, or auto with --fast); openvino needs pip install 'fcnseg[openvino]'",
    )


def require_speed_extras(args: argparse.Namespace) -> None:
    """What the chosen path needs (``--backend onnxruntime``/``openvino``, ``--precision int8``), checked before any
    work; ``--fast`` alone needs nothing: it skips the paths this machine lacks."""
    from ._extras import require

    backend, precision = getattr(args, "backend", None), getattr(args, "precision", None)
    if backend == "onnxruntime":
        require("speed", "--backend onnxruntime", ("onnxruntime", "onnx", "onnxscript"))
    elif backend == "openvino":
        require("openvino", "--backend openvino")
    elif precision == "int8":
        require("speed", "--precision int8", ("torchao",))


def speed_options_from_args(args: argparse.Namespace) -> str | SpeedPlan:
    """The ``optimize=`` value for :class:`~fcnseg.predict.Segmenter` from :func:`add_speed_arguments`' options.

    No option is ``"default"`` (BN folded, channels-last fp32 eager); ``--fast`` alone is ``"auto"``;
    ``--precision``/``--backend`` override the fields of auto's first floating-point candidate (of the default
    path without ``--fast``); int8 implies the compile backend. Impossible combinations
    (``--precision int8 --backend eager``) raise ``ValueError`` with a one-line message.
    """
    from ..optimize.plans import PATHS, SpeedPlan, float_base

    precision, backend = getattr(args, "precision", None), getattr(args, "backend", None)
    fast = getattr(args, "fast", False)
    if precision is None and backend is None:
        return "auto" if fast else "default"
    if backend in ("onnxruntime", "openvino"):  # plans of their own: unsupported precisions raise ValueError
        return SpeedPlan(precision=precision or "fp32", backend=backend)
    if precision == "int8" and backend in (None, "compile"):
        return PATHS["int8"]
    base = float_base("cpu") if fast else SpeedPlan(channels_last=True)
    fields = {k: v for k, v in (("precision", precision), ("backend", backend)) if v is not None}
    return replace(base, **fields)
