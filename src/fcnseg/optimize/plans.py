"""Speed plans: what a path is (precision, backend, layout), the named ones, and which ones ``"auto"`` tries.

What the hardware can do decides what is offered (:mod:`.cpu`): a plan this device would run emulated, slower than
fp32, is refused with the reason.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace

import torch

from . import cpu

__all__ = [
    "BACKENDS",
    "PATHS",
    "PRECISIONS",
    "SpeedPlan",
    "auto_candidates",
    "auto_plan",
    "check_supported",
    "float_base",
    "resolve_plan",
]

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
BACKENDS = ("eager", "compile", "onnxruntime", "openvino")


@dataclass(frozen=True)
class SpeedPlan:
    """How to run the model.

    ``freezing`` lets inductor treat weights as constants (folds BN into convs, prepacks oneDNN weights);
    ``dynamic`` compiles one graph for all image sizes instead of one per size; ``fold_bn`` folds BatchNorm
    into the preceding conv for the eager backend (inductor does it itself when freezing). ``fp32_logits``:
    under autocast the classifier would emit bf16 logits, whose rounding (2^-9 of their size) alone flips
    the argmax wherever two classes are within a fraction of a percent, mostly along class boundaries.
    """

    precision: str = "fp32"
    backend: str = "eager"
    channels_last: bool = False
    freezing: bool = True
    dynamic: bool | None = False  # None: torch.compile's default (static first, dynamic after a size change)
    fold_bn: bool = False
    fp32_logits: bool = True  # bf16/fp16: the last 1x1 conv and the upsampling stay fp32 (0.03% of the FLOPs)
    keep_fp32: tuple[str, ...] = ()  # int8 compile: convs (module names) left in fp32, see .sensitivity

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.precision == "int8" and self.backend == "eager":
            raise ValueError(
                "int8 runs only with backend 'compile' (torchao's x86 quantizer), 'onnxruntime' or 'openvino'"
            )
        if self.backend == "onnxruntime" and self.precision not in ("fp32", "int8"):
            raise ValueError("the onnxruntime backend runs fp32 or int8 only")
        if self.keep_fp32 and not (self.precision == "int8" and self.backend == "compile"):
            raise ValueError("keep_fp32 (mixed precision) applies to int8 compile plans only")
        if self.backend == "openvino" and self.precision == "fp16":
            raise ValueError("the openvino backend runs fp32, bf16 or int8 on a CPU")

    def describe(self) -> str:
        return f"{self.precision} {self.backend}"


# Named paths; ``Segmenter(optimize=name)`` accepts these names (benchmarks/bench_speed.py adds its own).
PATHS: dict[str, SpeedPlan] = {
    "none": SpeedPlan(),  # the reference every other path is judged against
    # the plain path (no flag): BN folded into the convs, channels-last fp32, no compile wait
    "default": SpeedPlan(channels_last=True, fold_bn=True),
    "fold_bn": SpeedPlan(fold_bn=True),
    "channels_last": SpeedPlan(channels_last=True, fold_bn=True),
    "bf16": SpeedPlan(precision="bf16", channels_last=True),
    "compile": SpeedPlan(backend="compile", channels_last=True),
    "compile_bf16": SpeedPlan(precision="bf16", backend="compile", channels_last=True),
    "int8": SpeedPlan(precision="int8", backend="compile", channels_last=True),
    "onnxruntime": SpeedPlan(backend="onnxruntime"),
    # ONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8 activations): its kernels need only AVX2
    "onnxruntime_int8": SpeedPlan(precision="int8", backend="onnxruntime"),
    # OpenVINO's CPU plugin (pip install 'fcnseg[openvino]'); int8 by NNCF's post-training quantization
    "openvino": SpeedPlan(backend="openvino"),
    "openvino_bf16": SpeedPlan(precision="bf16", backend="openvino"),
    "openvino_int8": SpeedPlan(precision="int8", backend="openvino"),
}


def check_supported(plan: SpeedPlan, device: torch.device) -> None:
    """Refuse plans that this device would run emulated (slower than fp32) or not at all."""
    if device.type == "cuda":
        if plan.precision == "int8" or plan.backend in ("onnxruntime", "openvino"):
            raise ValueError(f"{plan.describe()} is a CPU path; use fp16 or bf16 on CUDA")
        return
    if device.type != "cpu":
        if plan != SpeedPlan(precision=plan.precision):
            raise ValueError(f"only eager paths are offered on {device.type}")
        return
    caps = cpu.cpu_capabilities()
    need = {"bf16": (caps.bf16, "AVX512-BF16 or AMX"), "fp16": (caps.fp16, "AVX512-FP16 or AMX-FP16")}
    need["int8"] = (caps.int8, "VNNI or AMX-INT8")
    if plan.backend in ("onnxruntime", "openvino"):  # both have AVX2 int8 kernels (u8s8 through vpmaddubsw) too
        need["int8"] = (caps.int8 or "avx2" in caps.flags, "AVX2")
    ok, what = need.get(plan.precision, (True, ""))
    if not ok:
        raise ValueError(f"precision {plan.precision} needs {what}, which this CPU ({caps.name}) lacks")


def auto_candidates(device: torch.device | str = "cpu") -> list[SpeedPlan]:
    """The paths ``"auto"`` tries, fastest first as measured by ``benchmarks/bench_speed.py`` on this kind of device.

    ``"auto"`` takes the first that passes the accuracy guard for the model at hand; the last one is fp32 and
    differs from eager only by summation order, so it is not guarded. On a CPU with VNNI or AMX-INT8: OpenVINO's
    int8 (NNCF, where installed; ahead of torchao's on both the AMX and the AVX-512 VNNI CPU measured), torchao's
    int8 compiled by inductor; then bf16 where the CPU has native bf16 dot products (OpenVINO's, then inductor's);
    then fp32, OpenVINO's where installed (its build is cached across processes, inductor's frozen graphs are not),
    else inductor's. An AVX2-only CPU gets the int8 of OpenVINO or ONNX Runtime (their AVX2 int8 kernels) where
    installed, then fp32. Whether int8 or bf16 passes depends on the weights and the images: a model whose classes
    are decided by wide logit margins loses no pixels to their rounding, one with near-ties does.
    """
    device = torch.device(device)
    if device.type == "cuda":
        half = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return [SpeedPlan(precision=half, channels_last=True), SpeedPlan(channels_last=True)]
    if device.type != "cpu":
        return [SpeedPlan()]
    caps = cpu.cpu_capabilities()
    has_ov = all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))
    has_ort = importlib.util.find_spec("onnxruntime") is not None
    openvino = [PATHS["openvino_int8"]] if has_ov and (caps.int8 or "avx2" in caps.flags) else []
    if caps.int8:
        int8 = [*openvino, PATHS["int8"]]
    else:  # AVX2-only: OpenVINO's or ONNX Runtime's int8, if installed
        int8 = openvino or [PATHS["onnxruntime_int8"]] * ("avx2" in caps.flags and has_ort)
    compiled = PATHS["compile"]  # static shapes, frozen weights: fastest
    bf16 = [PATHS["openvino_bf16"]] * has_ov + [replace(compiled, precision="bf16")] if caps.bf16 else []
    return int8 + bf16 + [PATHS["openvino"] if has_ov else compiled]


def auto_plan(device: torch.device | str = "cpu") -> SpeedPlan:
    """The first of :func:`auto_candidates`: what ``"auto"`` runs when the model passes its guard."""
    return auto_candidates(device)[0]


def float_base(device: torch.device | str = "cpu") -> SpeedPlan:
    """The first floating-point PyTorch candidate of ``"auto"``: what ``--fast --precision/--backend`` start from
    (a plan of another runtime has no fields to override: ``--backend openvino`` names its own)."""
    candidates = [p for p in auto_candidates(device) if p.precision != "int8" and p.backend != "openvino"]
    return candidates[0] if candidates else PATHS["compile"]


def resolve_plan(choice: str | SpeedPlan | None, device: torch.device | str = "cpu") -> SpeedPlan:
    """``None``/``"none"`` -> eager fp32, ``"auto"`` -> :func:`auto_plan`, a name from :data:`PATHS`, or a plan."""
    if choice is None:
        return PATHS["none"]
    if isinstance(choice, SpeedPlan):
        return choice
    if choice == "auto":
        return auto_plan(device)
    if choice not in PATHS:
        raise ValueError(f"unknown optimize choice {choice!r}; expected 'auto' or one of {', '.join(PATHS)}")
    return PATHS[choice]
