"""Fast inference paths for FCN, each checked against plain fp32 eager by an accuracy guard.

A *path* is a :class:`SpeedPlan`: a precision (fp32, bf16, fp16, int8), a backend (eager PyTorch,
``torch.compile`` with inductor, ONNX Runtime, OpenVINO) and a few layout switches. :func:`optimize` turns a model and a
plan into a callable ``normalized (N, 3, H, W) batch -> (N, K, H, W) logits``, which is all
:class:`fcnseg.predict.Segmenter` needs. ``"default"`` (BN folded, channels-last fp32) is what runs without a
flag; ``"auto"`` (``--fast``) is the fastest path measured on this kind of device that passes the guard.

One module per part: :mod:`.cpu` (what the CPU accelerates), :mod:`.plans` (paths and auto's candidates),
:mod:`.backends` (building each path), :mod:`.guard` (the accuracy guard and its photos), :mod:`.cache` (what a
build leaves for the next run), :mod:`.auto` (choosing, and falling back to eager when a path breaks). The
command-line options live in :mod:`fcnseg.cli.speed`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from torch import Tensor, nn

from .auto import Auto, WithFallback
from .backends import build, fold_batchnorm
from .cpu import CpuCapabilities, cpu_capabilities, cpu_kind
from .guard import GuardResult, accuracy_guard, calibration_photos, compare_logits, pick_fastest, sample_photos
from .plans import BACKENDS, PATHS, PRECISIONS, SpeedPlan, auto_candidates, auto_plan, check_supported, resolve_plan

__all__ = [
    "BACKENDS",
    "PATHS",
    "PRECISIONS",
    "CpuCapabilities",
    "GuardResult",
    "SpeedPlan",
    "accuracy_guard",
    "auto_candidates",
    "auto_plan",
    "calibration_photos",
    "compare_logits",
    "cpu_capabilities",
    "cpu_kind",
    "fold_batchnorm",
    "optimize",
    "pick_fastest",
    "resolve_plan",
    "sample_photos",
]


def optimize(
    model: nn.Module,
    plan: str | SpeedPlan | None = "auto",
    *,
    calibration: Sequence[Tensor] = (),
    cache_dir: str | Path | None = None,
    guard_images: Sequence[Tensor] | None = None,
    background: bool = True,
) -> Callable[[Tensor], Tensor]:
    """Return ``f(batch) -> logits`` running ``model`` (eval mode, on its device) the way ``plan`` says.

    Args:
        plan: see :func:`resolve_plan`.
        calibration: normalized (N, 3, H, W) batches for int8's activation ranges (photos, not noise);
            :func:`calibration_photos` when empty.
        cache_dir: where builds are kept for later runs (:mod:`.cache`, default ``$TORCH_HOME/fcnseg``):
            AOTInductor packages, ONNX and OpenVINO files, OpenVINO's compiled blobs, the guard's verdicts and
            the build costs.
        guard_images: normalized batches on which ``"auto"`` checks each candidate against fp32, besides the
            user's images it has run (default: bundled photos at their size, up to the guard's minimums).
        background: ``"auto"`` builds and judges in a background thread while the default path answers
            (``False``: in the calling thread, at the first call of each input size class).

    A plan this device lacks the instructions for raises ``ValueError``. Compiled paths compile on their first
    call per input shape (minutes; a package in the cache loads in a second instead); if that or any later call
    fails, the path warns and runs eager fp32 from then on.
    """
    model = model.eval()
    device = next(model.parameters()).device
    if plan == "auto":
        return Auto(model, cache_dir, guard_images, background=background)
    plan = resolve_plan(plan, device)
    check_supported(plan, device)
    fn = build(model, plan, calibration=calibration, cache_dir=cache_dir)
    return fn if plan.backend == "eager" else WithFallback(fn, model, plan.describe())
