"""Which convolutions int8 hurts most: a per-layer sensitivity pass, and the mixed-precision plan it leads to.

int8 costs agreement unevenly: a layer whose input has a few outlier channels loses everything else to the
per-tensor activation scale; a layer near the logits turns small errors into flipped pixels. As NNCF's
accuracy-aware quantization does, each conv is tried alone in int8 (simulated in eager PyTorch: its input rounded
to uint8 over the range seen on calibration images, its weights to per-channel int8, the same scheme as the x86
quantizer) while every other layer stays fp32; the share of argmax pixels it flips against fp32 ranks it.
The costliest few then stay in floating point (``SpeedPlan.keep_fp32``), the rest run int8.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from ..models.logits import out_logits

__all__ = ["input_ranges", "keep_fp32", "layer_sensitivity", "simulated_int8"]


def _fake_quant_weight(w: Tensor) -> Tensor:
    """Per-output-channel symmetric int8, as the x86 quantizer's default config."""
    scale = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True).clamp(min=1e-12) / 127
    return torch.round(w / scale).clamp(-128, 127) * scale


def _fake_quant_input(x: Tensor, lo: float, hi: float) -> Tensor:
    """Per-tensor asymmetric uint8 over [lo, hi] (0 always representable), as the x86 quantizer's activations."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-12) / 255
    zero = round(-lo / scale)
    return (torch.round(x / scale + zero).clamp(0, 255) - zero) * scale


def input_ranges(model: nn.Module, calibration: Sequence[Tensor]) -> dict[str, tuple[float, float]]:
    """(min, max) of every conv's input over the calibration images."""
    ranges: dict[str, tuple[float, float]] = {}

    def observe(name: str):
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            lo, hi = float(args[0].min()), float(args[0].max())
            old = ranges.get(name, (lo, hi))
            ranges[name] = (min(old[0], lo), max(old[1], hi))

        return hook

    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    handles = [m.register_forward_pre_hook(observe(n)) for n, m in convs]
    try:
        with torch.inference_mode():
            for x in calibration:
                out_logits(model, x)
    finally:
        for h in handles:
            h.remove()
    return ranges


def simulated_int8(model: nn.Module, ranges: dict[str, tuple[float, float]], layers: Iterable[str]) -> nn.Module:
    """A copy of ``model`` whose convs named in ``layers`` run simulated int8 (weights and input rounded, inputs over
    ``ranges`` from :func:`input_ranges`), the rest fp32: what the x86 quantizer's int8 does to those layers'
    numbers, without compiling anything."""
    model = copy.deepcopy(model).eval()
    for name in layers:
        conv = model.get_submodule(name)
        lo, hi = ranges[name]
        with torch.no_grad():
            conv.weight.copy_(_fake_quant_weight(conv.weight))
        conv.register_forward_pre_hook(lambda m, args, lo=lo, hi=hi: (_fake_quant_input(args[0], lo, hi),))
    return model


def layer_sensitivity(model: nn.Module, images: Sequence[Tensor], calibration: Sequence[Tensor]) -> dict[str, float]:
    """Each conv's cost in int8 alone: the share of argmax pixels on ``images`` that flip against fp32 when only that
    conv runs simulated int8. Costliest first."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    ranges = input_ranges(model, calibration)
    with torch.inference_mode():
        want = [out_logits(model, x).argmax(1) for x in images]
    cost = {}
    for name in convs:
        single = simulated_int8(model, ranges, [name])
        with torch.inference_mode():
            flips = sum(int((out_logits(single, x).argmax(1) != w).sum()) for x, w in zip(images, want, strict=True))
        cost[name] = flips / sum(w.numel() for w in want)
    return dict(sorted(cost.items(), key=lambda kv: -kv[1]))


def keep_fp32(sensitivity: dict[str, float], budget: float, count: int = 4) -> tuple[str, ...]:
    """The layers to leave in floating point: the costliest (at most ``count``) while each costs more than
    ``budget`` (a share of pixels) on its own."""
    return tuple(name for name, cost in list(sensitivity.items())[:count] if cost > budget)
