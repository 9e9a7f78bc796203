"""Fast inference paths for FCN, each checked against plain fp32 eager by an accuracy guard.

A *path* is a :class:`SpeedPlan`: a precision (fp32, bf16, fp16, int8), a backend (eager PyTorch,
``torch.compile`` with inductor, ONNX Runtime) and a few layout switches. :func:`optimize` turns a model and a
plan into a callable ``normalized (N, 3, H, W) batch -> (N, K, H, W) logits``, which is all
:class:`fcnseg.predict.Segmenter` needs. ``"auto"`` is the fastest path measured on this kind of device
(``benchmarks/bench_speed.py``) among those that pass :func:`accuracy_guard`.

What the hardware can do decides what is offered: bf16 needs AVX512-BF16 or AMX on a CPU (otherwise it is
emulated and slower than fp32), fp16 on a CPU needs AVX512-FP16/AMX-FP16, and int8 needs VNNI or AMX-INT8.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import torch
from torch import Tensor, nn

from ._atomic import atomic_path

__all__ = [
    "PATHS",
    "CpuCapabilities",
    "GuardResult",
    "SpeedPlan",
    "accuracy_guard",
    "add_speed_arguments",
    "auto_plan",
    "cpu_capabilities",
    "fold_batchnorm",
    "optimize",
    "pick_fastest",
    "resolve_plan",
    "sample_photos",
    "speed_options_from_args",
]

Forward = Callable[[Tensor], Tensor]
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
BACKENDS = ("eager", "compile", "onnxruntime")
GUARD_AGREEMENT = 0.995  # argmax agreement below this never becomes a default
INT8_MIN_SIDE = 9  # the smallest image side the exported int8 graph takes (stride-2 stages); below, fp32 eager


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

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.precision == "int8" and self.backend != "compile":
            raise ValueError("int8 runs only with backend 'compile' (the x86 inductor quantizer's kernels)")
        if self.backend == "onnxruntime" and self.precision != "fp32":
            raise ValueError("the onnxruntime backend runs fp32 only")


# Named paths: the benchmark's candidates; ``Segmenter(optimize=name)`` accepts these names.
PATHS: dict[str, SpeedPlan] = {
    "none": SpeedPlan(),
    "fold_bn": SpeedPlan(fold_bn=True),
    "channels_last": SpeedPlan(channels_last=True, fold_bn=True),
    "bf16": SpeedPlan(precision="bf16", channels_last=True),
    # what a user gets by hand: model.to(memory_format=torch.channels_last) under bf16 autocast, and then
    # torch.compile of that with its default settings
    "byhand_bf16": SpeedPlan(precision="bf16", channels_last=True, fp32_logits=False),
    "byhand_compile_bf16": SpeedPlan(
        precision="bf16", backend="compile", channels_last=True, freezing=False, dynamic=None, fp32_logits=False
    ),
    "compile": SpeedPlan(backend="compile", channels_last=True),
    "compile_bf16": SpeedPlan(precision="bf16", backend="compile", channels_last=True),
    "compile_bf16_dynamic": SpeedPlan(precision="bf16", backend="compile", channels_last=True, dynamic=True),
    "int8": SpeedPlan(precision="int8", backend="compile", channels_last=True),
    "onnxruntime": SpeedPlan(backend="onnxruntime"),
}


# ---------------------------------------------------------------------------------------------- capabilities


@dataclass(frozen=True)
class CpuCapabilities:
    """What this CPU accelerates: from ``/proc/cpuinfo`` flags and ``torch.backends.cpu.get_cpu_capability()``."""

    name: str
    isa: str  # the kernels PyTorch dispatched to: "AVX512", "AVX2", "DEFAULT", ...
    flags: frozenset[str] = field(repr=False)

    @property
    def amx(self) -> bool:
        return {"amx_tile", "amx_bf16"} <= self.flags

    @property
    def bf16(self) -> bool:
        """Native bf16 dot products (AVX512-BF16 or AMX); without them bf16 is emulated and slower than fp32."""
        return "avx512_bf16" in self.flags or self.amx

    @property
    def fp16(self) -> bool:
        return "avx512_fp16" in self.flags or "amx_fp16" in self.flags

    @property
    def int8(self) -> bool:
        """Native int8 dot products (VNNI or AMX-INT8), which oneDNN's quantized convolutions need to be fast."""
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)


@cache
def cpu_capabilities() -> CpuCapabilities:
    name, flags = "unknown", frozenset()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown":
                name = value.strip()
            elif key.strip() == "flags":
                flags = frozenset(value.split())
                break
    if not flags and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        flags = frozenset({"avx512_bf16"})  # no cpuinfo (macOS, Windows): trust oneDNN's own check
    return CpuCapabilities(name=name, isa=torch.backends.cpu.get_cpu_capability(), flags=flags)


def check_supported(plan: SpeedPlan, device: torch.device) -> None:
    """Refuse plans that this device would run emulated (slower than fp32) or not at all."""
    if device.type == "cuda":
        if plan.precision == "int8" or plan.backend == "onnxruntime":
            raise ValueError(f"{plan.precision}/{plan.backend} is a CPU path; use fp16 or bf16 on CUDA")
        return
    if device.type != "cpu":
        if plan != SpeedPlan(precision=plan.precision):
            raise ValueError(f"only eager paths are offered on {device.type}")
        return
    caps = cpu_capabilities()
    need = {"bf16": (caps.bf16, "AVX512-BF16 or AMX"), "fp16": (caps.fp16, "AVX512-FP16 or AMX-FP16")}
    need["int8"] = (caps.int8, "VNNI or AMX-INT8")
    ok, what = need.get(plan.precision, (True, ""))
    if not ok:
        raise ValueError(f"precision {plan.precision} needs {what}, which this CPU ({caps.name}) lacks")


def auto_candidates(device: torch.device | str = "cpu") -> list[SpeedPlan]:
    """The paths ``"auto"`` tries, fastest first as measured by ``benchmarks/bench_speed.py`` on this kind of device.

    ``"auto"`` takes the first that passes :func:`accuracy_guard` for the model at hand; the last one is fp32 and
    differs from eager only by summation order, so it always passes. On a CPU: int8 where it has VNNI or AMX-INT8
    (2x the bf16 path on the AMD EPYC measured), then inductor with frozen weights, static shapes and
    channels-last in bf16 where it has native bf16 dot products, then the same in fp32. Whether int8 or bf16
    passes depends on the weights: a model whose classes are decided by wide logit margins loses no pixels to
    their rounding, one with near-ties does (the golden test weights: int8 96%, bf16 99.1%; both fall through).
    """
    device = torch.device(device)
    if device.type == "cuda":
        half = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return [SpeedPlan(precision=half, channels_last=True), SpeedPlan(channels_last=True)]
    if device.type != "cpu":
        return [SpeedPlan()]
    caps = cpu_capabilities()
    compiled = SpeedPlan(backend="compile", channels_last=True)  # static shapes, frozen weights: fastest
    return [PATHS["int8"]] * caps.int8 + [replace(compiled, precision="bf16")] * caps.bf16 + [compiled]


def auto_plan(device: torch.device | str = "cpu") -> SpeedPlan:
    """The first of :func:`auto_candidates`: what ``"auto"`` runs when the model passes its guard."""
    return auto_candidates(device)[0]


def _float_base(device: torch.device | str = "cpu") -> SpeedPlan:
    """The first floating-point candidate of ``"auto"``: what ``--fast --precision/--backend`` start from."""
    return next(p for p in auto_candidates(device) if p.precision != "int8")


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


# ---------------------------------------------------------------------------------------------- building paths


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) whose BatchNorms are folded into the preceding convs: fewer passes over memory.

    Relies on the ResNet/FCN layout where every BN directly follows its conv in the same parent module.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for parent in model.modules():
        names = list(parent._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = parent._modules[a], parent._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                parent._modules[a] = fuse_conv_bn_eval(conv, bn)
                parent._modules[b] = nn.Identity()
    return model


def _out(model: nn.Module) -> Forward:
    return lambda x: model(x)["out"]


def optimize(
    model: nn.Module,
    plan: str | SpeedPlan | None = "auto",
    *,
    calibration: Sequence[Tensor] = (),
    cache_dir: str | Path | None = None,
    guard_images: Sequence[Tensor] | None = None,
) -> Forward:
    """Return ``f(batch) -> logits`` running ``model`` (eval mode, on its device) the way ``plan`` says.

    Args:
        plan: see :func:`resolve_plan`.
        calibration: normalized (N, 3, H, W) batches for int8's activation ranges (photos, not noise);
            :func:`sample_photos` when empty.
        cache_dir: where inductor keeps compiled kernels and ONNX Runtime its exported model, so later
            runs skip most of the compile time (default: inductor's own cache and ``$TORCH_HOME/fcnseg``).
        guard_images: normalized batches on which ``"auto"`` checks each candidate against fp32 eager
            (default: :func:`sample_photos` cropped to the first batch's shape).

    Compiled paths compile on their first call (tens of seconds to minutes); static shapes recompile
    for each new image size, ``dynamic=True`` does not.
    """
    model = model.eval()
    device = next(model.parameters()).device
    if plan == "auto":
        return _Auto(model, device, cache_dir, guard_images)
    plan = resolve_plan(plan, device)
    check_supported(plan, device)
    if cache_dir is not None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache_dir) / "inductor")
    if plan.backend == "onnxruntime":
        return _onnxruntime(model, cache_dir)
    if plan.precision == "int8":
        return _int8(model, plan, calibration or [x.to(device) for x in calibration_photos(384)])
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(plan.precision)
    memory_format = torch.channels_last if plan.channels_last else torch.contiguous_format
    if plan.fold_bn:
        model = fold_batchnorm(model)
    elif plan.channels_last or dtype:
        model = copy.deepcopy(model)  # changed below; the caller's model stays as it is
    model.to(memory_format=memory_format)
    classifier = getattr(model, "classifier", None)
    if dtype and plan.fp32_logits and isinstance(classifier, nn.Sequential):
        model.classifier = nn.Sequential(*list(classifier)[:-1], _FullPrecision(classifier[-1]))
    fn = _out(model)
    if plan.backend == "compile":
        fn = _compiled(fn, plan)

    def forward(x: Tensor) -> Tensor:
        x = x.contiguous(memory_format=memory_format)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return fn(x).float()

    return forward


class _FullPrecision(nn.Module):
    """Runs ``module`` in fp32 inside an autocast region (so the logits, and their upsampling, are fp32)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.module(x.float())


class _Auto:
    """``"auto"``: the first of :func:`auto_candidates` whose logits pass :func:`accuracy_guard` for this very model.

    The choice waits for the first batch: the guard then runs on photos cropped to that batch's shape, so a
    static-shape compile happens once, for the shape that is actually used. ``plan`` tells what was chosen.
    """

    def __init__(self, model: nn.Module, device: torch.device, cache_dir: str | Path | None, images) -> None:
        self.model, self.device, self.cache_dir, self.images = model, device, cache_dir, images
        self.plan: SpeedPlan | None = None
        self.guard: GuardResult | None = None
        self.rejected: list[tuple[SpeedPlan, GuardResult]] = []  # faster candidates the guard turned down
        self._fn: Forward | None = None

    def _choose(self, shape: torch.Size) -> None:
        *fast, safe = auto_candidates(self.device)
        images = self.images
        if images is None:
            try:
                images = _photos_shaped(shape, self.device)
            except ValueError:  # no scikit-image: nothing to check reduced precision on, so keep fp32
                fast = []
        reference = _out(self.model)
        for plan in fast:
            try:
                fn = optimize(self.model, plan, cache_dir=self.cache_dir)
            except ValueError:  # its optional dependency (torchao, scikit-image) is missing
                continue
            guard = accuracy_guard(fn, reference, images)
            if guard.passed:
                self.plan, self.guard, self._fn = plan, guard, fn
                return
            self.rejected.append((plan, guard))
        self.plan, self._fn = safe, optimize(self.model, safe, cache_dir=self.cache_dir)

    def __call__(self, x: Tensor) -> Tensor:
        if self._fn is None:
            self._choose(x.shape)
        return self._fn(x)  # type: ignore[misc]

    def describe(self) -> str | None:
        """One line for people: the path chosen and why faster ones were not (``None`` before the first batch)."""
        if self.plan is None:
            return None
        name = f"{self.plan.precision} {self.plan.backend}"
        line = name + (f" ({self.guard.agreement:.2%} agreement with fp32 eager)" if self.guard else "")
        for plan, guard in self.rejected:
            line += f"; {plan.precision} {plan.backend}: {guard.agreement:.2%}, below the {guard.threshold:.1%} guard"
        return line


def _photos_shaped(shape: torch.Size, device: torch.device) -> list[Tensor]:
    """One (N, 3, H, W) batch of the sample photos, each scaled to cover H x W and cropped to it."""
    n, _, h, w = shape
    photos = sample_photos(max(h, w))
    batch = torch.cat([photos[i % len(photos)][..., :h, :w] for i in range(n)])
    return [batch.to(device)]


def _allow_recompiles() -> None:
    """Static shapes compile once per image size, and dynamo keeps one cache for all models with the same forward
    code; its default of 8 entries would silently fall back to eager after a few sizes or paths."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)


STATIC_SHAPES = 8  # input shapes that get their own static-shape graph before the rest share a dynamic one


class _ShapeSwitch:
    """Static-shape graphs (the fastest kernels) for the first :data:`STATIC_SHAPES` input shapes, then one
    dynamic-shape graph for every other shape.

    A folder of photos resized to a shorter side of 520 has one shape per aspect ratio. Compiling each would cost
    seconds per new shape and, past dynamo's recompile limit, silently fall back to eager; one dynamic graph costs
    a single compile and runs every later shape compiled.
    """

    def __init__(self, fn: Forward, dynamic: bool | None, freezing: bool) -> None:
        _allow_recompiles()
        self.freezing = freezing
        self.static = torch.compile(fn, dynamic=dynamic)
        self.shapes: set[torch.Size] = set()
        self.dynamic: Forward | None = None
        if dynamic is False:  # a second code object, so that the two graphs keep separate dynamo caches

            def any_shape(x: Tensor) -> Tensor:
                return fn(x)

            self.dynamic = torch.compile(any_shape, dynamic=True)

    def __call__(self, x: Tensor) -> Tensor:
        from torch._inductor import config

        # freezing is read when a graph compiles (first call per shape), so it is set around every call
        with config.patch(freezing=self.freezing):
            if self.dynamic is None or x.shape in self.shapes or len(self.shapes) < STATIC_SHAPES:
                self.shapes.add(x.shape)
                return self.static(x)
            return self.dynamic(x)


def _compiled(fn: Forward, plan: SpeedPlan) -> Forward:
    return _ShapeSwitch(fn, plan.dynamic, plan.freezing)


def _int8(model: nn.Module, plan: SpeedPlan, calibration: Sequence[Tensor]) -> Forward:
    """PT2E post-training quantization (x86 inductor quantizer: int8 convs, fp32 rest), compiled with freezing."""
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as e:  # PT2E moved out of torch.ao into torchao
        raise ValueError("int8 needs torchao (pip install 'fcnseg[speed]')") from e

    example = calibration[0][:1].expand(2, -1, -1, -1)  # batch 2: a batch of 1 would pin the batch size to 1
    h, w = torch.export.Dim("h", min=INT8_MIN_SIDE), torch.export.Dim("w", min=INT8_MIN_SIDE)
    dims = {0: torch.export.Dim("n", min=1), 2: h, 3: w}  # any size; compile specializes unless plan.dynamic
    exported = torch.export.export(_OutOnly(model), (example,), dynamic_shapes=(dims,))
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    graph = exported.module()
    for node in graph.graph.nodes:
        # ResNet calls one ``self.relu`` three times per block; the quantizer groups nodes by the module that made
        # them, sees one ReLU "partition" with three outputs and gives up. Naming each call apart fixes that.
        stack = node.meta.get("nn_module_stack")
        if node.op == "call_function" and stack and str(list(stack.values())[-1][1]).endswith("ReLU"):
            key, (fqn, cls) = list(stack.items())[-1]
            node.meta["nn_module_stack"] = {**stack, key: (f"{fqn}@{node.name}", cls)}
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for x in calibration:
            prepared(x)
    quantized = move_exported_model_to_eval(convert_pt2e(prepared))
    compiled = _ShapeSwitch(quantized, plan.dynamic, freezing=True)
    memory_format = torch.channels_last if plan.channels_last else torch.contiguous_format
    fp32 = _out(model)

    def forward(x: Tensor) -> Tensor:
        with torch.no_grad():
            if min(x.shape[-2:]) < INT8_MIN_SIDE:  # smaller than the exported graph allows: plain fp32
                return fp32(x).float()
            return compiled(x.contiguous(memory_format=memory_format)).float()

    return forward


class _OutOnly(nn.Module):
    """The model with a tensor output, as export and ONNX want."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)["out"]


def _onnxruntime(model: nn.Module, cache_dir: str | Path | None) -> Forward:
    """Export once to ONNX (dynamic batch and size), then run with ONNX Runtime's CPU provider."""
    import hashlib

    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ValueError("the onnxruntime backend needs onnxruntime (pip install 'fcnseg[onnx]')") from e

    digest = hashlib.sha256(f"torch {torch.__version__}, dynamo, opset default, dynamic n/h/w, out only".encode())
    for k, v in model.state_dict().items():  # every byte: two models differing in one BN statistic differ here
        digest.update(f"{k} {v.dtype} {tuple(v.shape)}".encode())
        digest.update(v.detach().cpu().reshape(-1).view(torch.uint8).numpy())
    root = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()).parent / "fcnseg"
    path = root / "onnx" / f"fcn-{digest.hexdigest()[:16]}.onnx"
    if not path.exists():
        with atomic_path(path) as tmp:
            torch.onnx.export(
                _OutOnly(model).cpu(),
                (torch.zeros(1, 3, 64, 64),),
                tmp,
                input_names=["input"],
                output_names=["out"],
                dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "out": {0: "n", 2: "h", 3: "w"}},
                dynamo=True,
                verbose=False,
            )
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(x: Tensor) -> Tensor:
        (out,) = session.run(None, {"input": x.detach().cpu().float().contiguous().numpy()})
        return torch.from_numpy(out)

    return forward


# ---------------------------------------------------------------------------------------------- accuracy guard


@dataclass(frozen=True)
class GuardResult:
    """How a path's logits compare with fp32 eager's over some images."""

    agreement: float  # share of pixels whose argmax class is the same
    mean_abs_diff: float  # mean |Δlogit|
    max_abs_diff: float
    threshold: float = GUARD_AGREEMENT

    @property
    def passed(self) -> bool:
        return self.agreement >= self.threshold


def sample_photos(size: int = 520, names: Sequence[str] = ("astronaut", "coffee", "chelsea", "rocket")) -> list[Tensor]:
    """scikit-image's bundled sample photos through the inference preset (shorter side ``size``), each (1, 3, h, w)."""
    data = _skimage_data()
    return _preset([getattr(data, name)() for name in names], size)


def calibration_photos(size: int = 384) -> list[Tensor]:
    """int8's default calibration images: scikit-image photos other than the guard's, so that the guard judges
    int8 on images its activation ranges were not fitted to."""
    data = _skimage_data()
    images = [data.stereo_motorcycle()[0], data.hubble_deep_field(), data.retina(), data.immunohistochemistry()]
    return _preset(images, size)


def _preset(images: Sequence, size: int) -> list[Tensor]:
    from .transforms import SemanticSegmentation

    preset = SemanticSegmentation(resize_size=size)
    return [preset(image)[None] for image in images]


def _skimage_data():
    try:
        import skimage.data
    except ImportError as e:
        raise ValueError("the accuracy guard's photos come from scikit-image (pip install scikit-image)") from e
    return skimage.data


def accuracy_guard(
    fast: Forward, reference: Forward, images: Sequence[Tensor], threshold: float = GUARD_AGREEMENT
) -> GuardResult:
    """Compare ``fast`` with ``reference`` (fp32 eager) on ``images``: argmax agreement and |Δlogit|."""
    same = total = 0
    abs_sum, abs_max = 0.0, 0.0
    with torch.inference_mode():
        for x in images:
            ref, out = reference(x).float().cpu(), fast(x).float().cpu()
            diff = (out - ref).abs()
            same += int((out.argmax(1) == ref.argmax(1)).sum())
            total += ref[:, 0].numel()
            abs_sum += float(diff.sum()) / ref.shape[1]
            abs_max = max(abs_max, float(diff.max()))
    return GuardResult(agreement=same / total, mean_abs_diff=abs_sum / total, max_abs_diff=abs_max, threshold=threshold)


def pick_fastest(latency: dict[str, float], guard: dict[str, GuardResult]) -> str:
    """The name with the lowest latency among those whose guard passed; ``"none"`` (the reference) otherwise."""
    passing = [name for name in latency if name == "none" or (name in guard and guard[name].passed)]
    return min(passing, key=latency.__getitem__) if passing else "none"


# ---------------------------------------------------------------------------------------------- CLI options


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """``--fast``, ``--precision`` and ``--backend``, for any subcommand that runs the model."""
    group = parser.add_argument_group("speed")
    group.add_argument(
        "--fast", action="store_true", help="the fastest path measured for this device that passes the accuracy guard"
    )
    group.add_argument("--precision", choices=PRECISIONS, help="numeric precision (default fp32, or auto with --fast)")
    group.add_argument("--backend", choices=BACKENDS, help="how the model runs (default eager, or auto with --fast)")


def speed_options_from_args(args: argparse.Namespace) -> str | SpeedPlan:
    """The ``optimize=`` value for :class:`~fcnseg.predict.Segmenter` from :func:`add_speed_arguments`' options.

    ``--fast`` alone is ``"auto"``; ``--precision``/``--backend`` override the fields of auto's first CPU candidate
    (of channels-last eager fp32 without ``--fast``); int8 implies the compile backend. Impossible combinations
    (``--precision int8 --backend eager``) raise ``ValueError`` with a one-line message.
    """
    precision, backend = getattr(args, "precision", None), getattr(args, "backend", None)
    fast = getattr(args, "fast", False)
    if precision is None and backend is None:
        return "auto" if fast else "none"
    if backend == "onnxruntime":
        return SpeedPlan(precision=precision or "fp32", backend=backend)  # fp32 only: others raise ValueError
    if precision == "int8" and backend in (None, "compile"):
        return PATHS["int8"]
    base = _float_base("cpu") if fast else SpeedPlan(channels_last=True)
    fields = {k: v for k, v in (("precision", precision), ("backend", backend)) if v is not None}
    return replace(base, **fields)
