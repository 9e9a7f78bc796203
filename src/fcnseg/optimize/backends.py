"""Turning a model and a concrete :class:`~.plans.SpeedPlan` into ``f(normalized batch) -> logits``.

Five ways to run: eager PyTorch (optionally BN folded, channels-last, bf16/fp16 autocast), ``torch.compile`` with
inductor, int8 through PT2E quantization compiled by inductor, ONNX Runtime's CPU provider, and OpenVINO's CPU
plugin (fp32, bf16, int8 quantized by NNCF).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .._atomic import atomic_path
from ..models.logits import OutLogits, out_logits
from . import cache
from .guard import calibration_photos
from .plans import SpeedPlan

__all__ = [
    "CHANNELS_LAST_MIN_PIXELS",
    "INT8_MIN_SIDE",
    "STATIC_SHAPES",
    "build",
    "fold_batchnorm",
    "is_built",
    "quantize_pt2e",
    "quiet_third_party",
]

Forward = Callable[[Tensor], Tensor]
INT8_MIN_SIDE = 9  # the smallest image side the exported int8 graph takes (stride-2 stages); below, fp32 eager
CHANNELS_LAST_MIN_PIXELS = 96 * 96  # eager: smaller inputs run faster in the contiguous layout
STATIC_SHAPES = 8  # input shapes that get their own static-shape graph before the rest share a dynamic one
# OpenVINO compiles a model per shape in seconds, not minutes, but a folder of photos has one shape per aspect
# ratio: past the first two, one dynamic-shape model (compiled once, and kept in its blob cache) runs the rest
OPENVINO_STATIC_SHAPES = 2
NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "nncf")
ONNX_EXPORT = {"dynamo": True, "example": (1, 3, 64, 64)}  # part of the cache key, with the torch version


def build(
    model: nn.Module, plan: SpeedPlan, *, calibration: Sequence[Tensor] = (), cache_dir: str | Path | None = None
) -> Forward:
    """``model`` (eval mode, on its device) run the way ``plan`` says; the caller's model is never changed."""
    device = next(model.parameters()).device
    if cache_dir is not None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache_dir) / "inductor")
    if plan.backend == "openvino":
        return _openvino(model, plan, cache_dir, calibration or [x for s in (256, 384) for x in calibration_photos(s)])
    if plan.backend == "onnxruntime":
        return _onnxruntime(model, cache_dir, int8=plan.precision == "int8", calibration=calibration)
    if plan.precision == "int8":
        calibration = calibration or [x.to(device) for x in calibration_photos(384)]
        return _int8(model, plan, calibration, _packages(model, plan, cache_dir, calibration))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(plan.precision)
    memory_format = torch.channels_last if plan.channels_last else torch.contiguous_format
    if plan.fold_bn:
        model = fold_batchnorm(model)
    elif plan.channels_last or dtype:
        model = copy.deepcopy(model)  # changed below; the caller's model stays as it is
    classifier = getattr(model, "classifier", None)
    if dtype and plan.fp32_logits and isinstance(classifier, nn.Sequential):
        model.classifier = nn.Sequential(*list(classifier)[:-1], _FullPrecision(classifier[-1]))
    if plan.backend == "compile":
        model.to(memory_format=memory_format)
        packages = _packages(model, plan, cache_dir) if device.type == "cpu" else None
        fn: Forward = _ShapeSwitch(_Autocast(model, dtype), plan.dynamic, plan.freezing, packages)
        dtype = None  # inside the graph
    else:
        fn = _LayoutBySize(model) if plan.channels_last else OutLogits(model)

    def forward(x: Tensor) -> Tensor:
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return fn(x.contiguous(memory_format=memory_format) if plan.backend == "compile" else x).float()

    return forward


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with each BatchNorm that is applied directly to a conv's output folded into
    that conv: fewer passes over memory, the same function.

    What is applied to what comes from the traced graph (:func:`torch.fx.symbolic_trace`), never from the order in
    which modules were registered. A pair is left alone when the conv's output has another user (the BN-free value
    would change), the conv module is called more than once (its other calls would change), or the BN tracks no
    running statistics. A model that cannot be traced (data-dependent control flow) is returned unfolded.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()  # the caller's module is never changed
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception:  # not traceable: folding needs the graph, so nothing is folded
        return model
    modules = dict(traced.named_modules())
    calls = Counter(node.target for node in traced.graph.nodes if node.op == "call_module")
    for node in list(traced.graph.nodes):
        conv_node = node.args[0] if node.op == "call_module" and node.args else None
        if not (isinstance(modules.get(node.target), nn.BatchNorm2d) and isinstance(conv_node, torch.fx.Node)):
            continue
        conv, bn = modules.get(conv_node.target), modules[node.target]
        if conv_node.op != "call_module" or type(conv) is not nn.Conv2d or not bn.track_running_stats:
            continue
        if len(conv_node.users) > 1 or calls[conv_node.target] > 1 or len(node.args) + len(node.kwargs) > 1:
            continue
        parent, _, name = conv_node.target.rpartition(".")
        setattr(traced.get_submodule(parent), name, fuse_conv_bn_eval(conv, bn))
        node.replace_all_uses_with(conv_node)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced


class _LayoutBySize:
    """Eager channels-last only for inputs of at least :data:`CHANNELS_LAST_MIN_PIXELS` pixels.

    oneDNN's channels-last convolutions win on large inputs and lose on small ones (measured on the AVX-512 CPU,
    BN folded: 0.88-0.92x the contiguous layout at 64², 1.08x at 128², 1.3-1.6x at 520²). The model's weights
    are switched in place when the input crosses the threshold (a copy of the weights, once per switch), so
    that a run of one size holds one copy of the model.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model, self.layout = model, torch.contiguous_format

    def __call__(self, x: Tensor) -> Tensor:
        big = x.shape[-2] * x.shape[-1] >= CHANNELS_LAST_MIN_PIXELS
        layout = torch.channels_last if big else torch.contiguous_format
        if layout != self.layout:
            self.model.to(memory_format=layout)
            self.layout = layout
        return out_logits(self.model, x.contiguous(memory_format=layout))


class _FullPrecision(nn.Module):
    """Runs ``module`` in fp32 inside an autocast region (so the logits, and their upsampling, are fp32)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.module(x.float())


class _Autocast(nn.Module):
    """``model``'s logits under autocast to ``dtype`` (none: fp32), with autocast inside ``forward`` so that an
    exported graph (AOTInductor) carries it."""

    def __init__(self, model: nn.Module, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: Tensor) -> Tensor:
        if self.dtype is None:
            return out_logits(self.model, x)
        with torch.autocast(x.device.type, dtype=self.dtype):
            return out_logits(self.model, x).float()


class _ShapeSwitch:
    """Static-shape graphs (the fastest kernels) for the first :data:`STATIC_SHAPES` input shapes, then one
    dynamic-shape graph for every other shape.

    A folder of photos resized to a shorter side of 520 has one shape per aspect ratio. Compiling each would cost
    seconds per new shape and, past dynamo's recompile limit, silently fall back to eager; one dynamic graph costs
    a single compile and runs every later shape compiled. With ``packages`` (shape -> file), each static graph is
    compiled ahead of time by AOTInductor into that file, weights included, and a later process loads it instead
    of compiling (``loaded`` lists those shapes, ``compiled`` the ones compiled here).
    """

    def __init__(
        self,
        fn: Forward,
        dynamic: bool | None,
        freezing: bool,
        packages: Callable[[tuple[int, ...]], Path] | None = None,
    ) -> None:
        # dynamo keeps one cache for all models with the same forward code; its default of 8 entries would
        # silently fall back to eager after a few sizes or paths
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        self.fn, self.freezing, self.packages = fn, freezing, packages
        self.static = torch.compile(fn, dynamic=dynamic)
        self.shapes: set[torch.Size] = set()
        self.graphs: dict[tuple[int, ...], Forward] = {}
        self.loaded: list[tuple[int, ...]] = []
        self.compiled: list[tuple[int, ...]] = []
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
                if self.packages is not None and self.dynamic is not None:
                    return self._package(x)(x)
                return self.static(x)
            return self.dynamic(x)

    def _package(self, x: Tensor) -> Forward:
        """The AOTInductor package for ``x``'s shape: loaded from the cache, or compiled into it."""
        shape = tuple(x.shape)
        if shape not in self.graphs:
            path = self.packages(shape)
            if path.exists():
                self.loaded.append(shape)
                cache.touch(path)
            else:
                with torch.no_grad(), quiet_third_party():
                    exported = torch.export.export(self.fn, (x,))
                with atomic_path(path) as tmp:
                    named = tmp.with_suffix(".pt2")  # AOTInductor insists on the suffix
                    try:
                        torch._inductor.aoti_compile_and_package(
                            exported, package_path=str(named), inductor_configs={"freezing": self.freezing}
                        )
                        named.replace(tmp)
                    finally:
                        named.unlink(missing_ok=True)
                self.compiled.append(shape)
            self.graphs[shape] = torch._inductor.aoti_load_package(str(path))
        return self.graphs[shape]


def _calibration_digest(calibration: Sequence[Tensor], recipe: str) -> str:
    digest = hashlib.sha256(recipe.encode())
    for x in calibration:
        digest.update(x.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:8]


def _packages(
    model: nn.Module, plan: SpeedPlan, cache_dir: str | Path | None, calibration: Sequence[Tensor] = ()
) -> Callable[[tuple[int, ...]], Path]:
    """Where the AOTInductor package of ``model`` run by ``plan`` at each input shape lives: under the model's
    bytes, the plan, the CPU and the library versions (:func:`~.cache.build_key`), and int8's calibration images."""
    digest = cache.model_digest(model)
    extra = _calibration_digest(calibration, "pt2e-x86") if calibration else ""
    slug = plan.describe().replace(" ", "-")

    def path(shape: tuple[int, ...]) -> Path:
        n, _, h, w = shape
        key = cache.build_key(digest + extra, plan, shape)
        return cache.cache_root(cache_dir) / "aoti" / f"{slug}-{w}x{h}-b{n}-{key}.pt2"

    return path


def is_built(model: nn.Module, plan: SpeedPlan, cache_dir: str | Path | None, shape: tuple[int, ...]) -> bool:
    """Whether :func:`build` of ``plan`` (with its default calibration) would load its files from the cache rather
    than make them: the OpenVINO or ONNX files, or the AOTInductor package for ``shape``."""
    if plan.backend == "eager":
        return True
    calibration: list[Tensor] = []
    if plan.precision == "int8":
        sides = (384,) if plan.backend == "compile" else (256, 384)
        calibration = [x for s in sides for x in calibration_photos(s)]
    if plan.backend == "compile":
        source = fold_batchnorm(model) if plan.fold_bn else model
        return _packages(source, plan, cache_dir, calibration)(tuple(shape)).exists()
    if plan.backend == "openvino":
        return all(p.exists() for p in _openvino_files(model, plan, cache_dir, calibration))
    path = cache.cache_root(cache_dir) / "onnx" / f"fcn-{_onnx_cache_key(model)}.onnx"
    return path.exists() and (plan.precision != "int8" or _onnx_int8_path(path, calibration).exists())


def quantize_pt2e(model: nn.Module, plan: SpeedPlan, calibration: Sequence[Tensor]) -> torch.fx.GraphModule:
    """PT2E post-training quantization (x86 inductor quantizer: int8 convs, fp32 rest, the convs named in
    ``plan.keep_fp32`` too), calibrated on ``calibration``: a graph of quantize/dequantize pairs that runs as is
    (slowly) and that inductor turns into int8 kernels."""
    try:
        with quiet_third_party():
            import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
            from torchao.quantization.pt2e import move_exported_model_to_eval
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as e:  # PT2E moved out of torch.ao into torchao
        raise ValueError("int8 needs torchao (pip install 'fcnseg[speed]')") from e

    example = calibration[0][:1].expand(2, -1, -1, -1)  # batch 2: a batch of 1 would pin the batch size to 1
    h, w = torch.export.Dim("h", min=INT8_MIN_SIDE), torch.export.Dim("w", min=INT8_MIN_SIDE)
    dims = {0: torch.export.Dim("n", min=1), 2: h, 3: w}  # any size; compile specializes unless plan.dynamic
    exported = torch.export.export(OutLogits(model), (example,), dynamic_shapes=(dims,))
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    for name in plan.keep_fp32:  # mixed precision: these convs stay fp32 (OutLogits names the model "model")
        quantizer.set_module_name_qconfig(f"model.{name}", None)
    graph = exported.module()
    for node in graph.graph.nodes:
        # ResNet calls one ``self.relu`` three times per block; the quantizer groups nodes by the module that made
        # them, sees one ReLU "partition" with three outputs and gives up. Naming each call apart fixes that.
        stack = node.meta.get("nn_module_stack")
        if node.op == "call_function" and stack and str(list(stack.values())[-1][1]).endswith("ReLU"):
            key, (fqn, cls) = list(stack.items())[-1]
            node.meta["nn_module_stack"] = {**stack, key: (f"{fqn}@{node.name}", cls)}
    with quiet_third_party():
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for x in calibration:
                prepared(x)
        return move_exported_model_to_eval(convert_pt2e(prepared))


def _int8(
    model: nn.Module, plan: SpeedPlan, calibration: Sequence[Tensor], packages: Callable[[tuple[int, ...]], Path]
) -> Forward:
    """:func:`quantize_pt2e` compiled by inductor with freezing (int8 convs fused with their requantization), each
    static shape an AOTInductor package in the cache."""
    quantized = quantize_pt2e(model, plan, calibration)
    compiled = _ShapeSwitch(quantized, plan.dynamic, freezing=True, packages=packages)
    memory_format = torch.channels_last if plan.channels_last else torch.contiguous_format
    fp32 = OutLogits(model)

    def forward(x: Tensor) -> Tensor:
        with torch.no_grad():
            if min(x.shape[-2:]) < INT8_MIN_SIDE:  # smaller than the exported graph allows: plain fp32
                return fp32(x).float()
            return compiled(x.contiguous(memory_format=memory_format)).float()

    return forward


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Keep out of the user's output what third-party libraries say that tells a user of fcnseg nothing: torchao's
    "Failed to load ..._C_mxfp8" lines (optional CUDA kernels), torch's note on torchao's enum registration, and
    deprecation warnings raised inside them. Errors still pass."""
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _onnx_cache_key(model: nn.Module) -> str:
    """The model's bytes (:func:`~.cache.model_digest`) plus the export settings: a model differing anywhere, or
    exported differently, never reuses another's file."""
    settings = repr(sorted(ONNX_EXPORT.items())) + torch.__version__
    return hashlib.sha256((cache.model_digest(model) + settings).encode()).hexdigest()[:16]


def _onnxruntime(
    model: nn.Module, cache_dir: str | Path | None, *, int8: bool = False, calibration: Sequence[Tensor] = ()
) -> Forward:
    """Export once to ONNX (dynamic batch and size), quantize once for int8, then run with ONNX Runtime's CPU
    provider; both files are cached under a key of every byte of the model."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ValueError("the onnxruntime backend needs onnxruntime (pip install 'fcnseg[speed]')") from e

    path = cache.cache_root(cache_dir) / "onnx" / f"fcn-{_onnx_cache_key(model)}.onnx"
    if not path.exists():
        with atomic_path(path) as tmp:
            torch.onnx.export(
                OutLogits(model).cpu(),
                (torch.zeros(ONNX_EXPORT["example"]),),
                tmp,
                input_names=["input"],
                output_names=["out"],
                dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "out": {0: "n", 2: "h", 3: "w"}},
                dynamo=ONNX_EXPORT["dynamo"],
                external_data=False,  # one file, so that the atomic rename moves all of it
                verbose=False,
            )
    if int8:
        path = _onnx_int8(path, calibration or [x for s in (256, 384) for x in calibration_photos(s)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(x: Tensor) -> Tensor:
        (out,) = session.run(None, {"input": x.detach().cpu().float().contiguous().numpy()})
        return torch.from_numpy(out)

    return forward


def _onnx_int8_path(fp32: Path, calibration: Sequence[Tensor]) -> Path:
    return fp32.with_name(f"{fp32.stem}-int8-{_calibration_digest(calibration, 'qdq-per-channel-u8s8-minmax')}.onnx")


def _onnx_int8(fp32: Path, calibration: Sequence[Tensor]) -> Path:
    """ONNX Runtime static quantization of ``fp32``: QDQ, per-channel int8 weights, uint8 activations calibrated
    (min/max) on ``calibration``. The classifier's last conv and the logits' upsampling stay fp32: logits quantized
    to 8 bits would flip every pixel whose top-2 margin is under one step. Cached next to ``fp32``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    path = _onnx_int8_path(fp32, calibration)
    if path.exists():
        cache.touch(path)
        return path
    nodes = onnx.load(str(fp32), load_external_data=False).graph.node
    keep_fp32 = [n.name for n in nodes if n.op_type == "Conv"][-1:] + [n.name for n in nodes if n.op_type == "Resize"]

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict | None:
            x = next(self.batches, None)
            return None if x is None else {"input": x.detach().cpu().float().numpy()}

    with atomic_path(path) as tmp:
        quantize_static(
            str(fp32),
            str(tmp),
            Photos(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_fp32,
        )
    return path


OPENVINO_INT8 = "nncf-ptq-mixed-fast-bias-correction-fp32-logits-and-adds"  # the recipe, part of the file's key


def _openvino(
    model: nn.Module, plan: SpeedPlan, cache_dir: str | Path | None, calibration: Sequence[Tensor]
) -> Forward:
    """OpenVINO's CPU plugin: the model converted once to OpenVINO's IR (and for int8 quantized once by NNCF's
    post-training quantization), both files cached under the model's bytes; compiled per input shape with
    OpenVINO's own blob cache (``CACHE_DIR``), so a later process loads the compiled model instead of compiling."""
    try:
        import openvino as ov
    except ImportError as e:
        raise ValueError("the openvino backend needs openvino and nncf (pip install 'fcnseg[openvino]')") from e

    root = cache.cache_root(cache_dir) / "openvino"
    fp32, path = _openvino_files(model, plan, cache_dir, calibration)
    _saved_ir(fp32, lambda: _ov_convert(model))
    if plan.precision == "int8":
        _saved_ir(path, lambda: _nncf_int8(ov.Core().read_model(fp32), calibration))
    cache.touch(fp32, fp32.with_suffix(".bin"), path, path.with_suffix(".bin"), root / "blobs")
    core = ov.Core()
    core.set_property({"CACHE_DIR": str(root / "blobs")})
    config = {
        "INFERENCE_PRECISION_HINT": "bf16" if plan.precision == "bf16" else "f32",
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        "PERFORMANCE_HINT": "LATENCY",
    }
    source = core.read_model(path)
    compiled: dict[tuple[int, ...], object] = {}

    def forward(x: Tensor) -> Tensor:
        shape = tuple(x.shape) if len(compiled) < OPENVINO_STATIC_SHAPES else ()  # past that, one dynamic model
        if shape not in compiled:
            graph = source.clone()
            if shape:
                graph.reshape({graph.input(0): ov.PartialShape(list(shape))})
            compiled[shape] = core.compile_model(graph, "CPU", config)
        out = compiled[shape](x.detach().cpu().float().contiguous().numpy())[0]
        return torch.from_numpy(out.copy())

    return forward


def _openvino_files(
    model: nn.Module, plan: SpeedPlan, cache_dir: str | Path | None, calibration: Sequence[Tensor]
) -> tuple[Path, Path]:
    """The fp32 IR of ``model`` and the IR ``plan`` runs (the same, or its int8 version for ``calibration``)."""
    import openvino as ov

    root = cache.cache_root(cache_dir) / "openvino"
    name = f"fcn-{cache.model_digest(model)[:16]}-ov{ov.__version__.split('-')[0]}"
    fp32 = root / f"{name}.xml"
    if plan.precision != "int8":
        return fp32, fp32
    return fp32, root / f"{name}-int8-{_calibration_digest(calibration, OPENVINO_INT8)}.xml"


def _ov_convert(model: nn.Module):
    import openvino as ov

    with torch.no_grad(), quiet_third_party():  # its tracer's deprecation warnings
        return ov.convert_model(OutLogits(model).cpu().eval(), example_input=torch.zeros(1, 3, 64, 64))


def _nncf_int8(fp32, calibration: Sequence[Tensor]):
    """NNCF post-training quantization: symmetric int8 weights, activations as its mixed preset (asymmetric where
    they are signed), calibrated on ``calibration`` with fast bias correction. The last conv (the logits) stays
    fp32, as in :func:`_onnx_int8`, and so do the additions: NNCF quantizes each bias and residual sum's output
    (and the logits on their way to the upsampling) to 8 bits: on the trained probe at 520² agreement with fp32
    rose from 99.51 % to 99.68 % without them, at the same speed (AVX2 EPYC, benchmarks/bench_int8_recipes.py)."""
    with quiet_third_party():
        import nncf

    convs = [op.get_friendly_name() for op in fp32.get_ordered_ops() if op.get_type_name() == "Convolution"]
    dataset = nncf.Dataset([x.detach().cpu().float().numpy() for x in calibration])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # progress bars
        return nncf.quantize(
            fp32,
            dataset,
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(calibration),
            fast_bias_correction=True,
            ignored_scope=nncf.IgnoredScope(names=convs[-1:], types=["Add", "Interpolate"], validate=False),
        )


def _saved_ir(path: Path, make: Callable[[], object]) -> Path:
    """``path`` (an OpenVINO ``.xml`` and its ``.bin``), written by ``make()`` unless it is there already. Written in
    a private folder and moved into place ``.bin`` first, so a reader that finds the ``.xml`` finds a whole pair."""
    import tempfile

    import openvino as ov

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".tmp-") as tmp:
        ov.save_model(make(), Path(tmp) / "model.xml", compress_to_fp16=False)
        os.replace(Path(tmp) / "model.bin", path.with_suffix(".bin"))
        os.replace(Path(tmp) / "model.xml", path)
    return path
