"""Export a model to ONNX or TorchScript, with its metadata inside the file, and check it against PyTorch.

ONNX goes through ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export``-based exporter, the default
since torch 2.9). ``benchmarks/compare_onnx_exporters.py`` tried both paths with torch 2.13: each keeps
batch, height and width dynamic, final bilinear upsample included (max |logit diff| < 2e-5 on four shapes
unlike the traced one). The legacy TorchScript-based exporter (``dynamo=False``) is deprecated and warns on
every call, loses the static class count (the output's axis 1 becomes ``Resizelogits_dim_1``) and, when it
restores the caller's train/eval mode afterwards, turns the submodules of a wrapper left in training mode to
training mode (hence :class:`ExportModule` starts in eval mode); it exports about 4x faster, which does not
matter here.
So fcnseg uses dynamo. Either way :func:`check_parity` runs the exported file on sizes different from the
example it was traced with, which is how a fixed-size export (the classic trap of this model) is caught.

The exported module is the plain model (``float32 NCHW normalized -> float32 (N, K, H, W) logits``), or with
``preprocessing`` a uint8 RGB input (NHWC or NCHW) normalized inside, and with ``argmax`` a uint8 (N, H, W)
mask output. The metadata records ``resize_size``, the shorter side the model is meant to see (the size rule of
:func:`fcnseg.predict.input_size`; null for native resolution). An ONNX file with ``preprocessing`` applies it
itself (``resized_inside``), as :class:`~fcnseg.predict.Segmenter` does: the image is resized (antialiased
bilinear, rounded to uint8 levels), run, and the logits resized back, so any image size goes in and the output
has that size. Otherwise the input is run as given and resizing is left to the caller (TorchScript's tracer
would freeze the computed size into the file).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._atomic import atomic_path
from .models.logits import out_logits
from .transforms import IMAGENET_MEAN, IMAGENET_STD, normalize, palette, resized_size

__all__ = [
    "DEFAULT_CHECK_SIZES",
    "ExportModule",
    "ParityReport",
    "check_parity",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "read_metadata",
]

Layout = Literal["nhwc", "nchw"]
ONNX_OPSET = 18
DEFAULT_CHECK_SIZES: tuple[tuple[int, int], ...] = ((64, 64), (75, 101), (120, 56))
EXAMPLE_SHAPE = (2, 72, 88)  # (N, H, W) traced with; batch 2 so torch.export does not specialize it to 1
METADATA_FILE = "fcnseg.json"  # TorchScript extra file holding the metadata
RESIZED_MIN_AGREEMENT = 0.99  # parity of a file that resizes inside: share of pixels of the same class


class ExportModule(nn.Module):
    """The model as it is exported: one tensor in, one tensor out, optional normalization and argmax inside."""

    def __init__(
        self,
        model: nn.Module,
        *,
        preprocessing: Layout | None = None,
        argmax: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        resize_size: int | None = None,
    ) -> None:
        super().__init__()
        if preprocessing not in (None, "nhwc", "nchw"):
            raise ValueError(f"preprocessing must be None, 'nhwc' or 'nchw', got {preprocessing!r}")
        self.model = model
        self.preprocessing = preprocessing
        self.resize_size = resize_size  # applied with preprocessing only (see the module docstring)
        self.argmax = argmax
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.eval()  # the wrapper too: exporters that restore the mode afterwards must restore eval, not train

    def forward(self, x: Tensor) -> Tensor:
        if self.preprocessing == "nhwc":
            x = x.permute(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)
        h, w = x.shape[-2], x.shape[-1]
        resize = self.preprocessing is not None and self.resize_size is not None
        if resize:  # as SemanticSegmentation: shorter side to resize_size, antialiased, back to uint8 levels
            size = resized_size(h, w, self.resize_size)
            x = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
            x = x.round().clamp(0, 255) / 255
        if self.preprocessing is not None:
            x = normalize(x, self.mean, self.std)  # uint8 -> float /255 -> (x - mean) / std
        logits = out_logits(self.model, x)  # (N, K, h', w'), already upsampled to the model's input size
        if resize:  # (N, K, H, W): back to the image's size, as Segmenter's postprocess
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits.argmax(1).to(torch.uint8) if self.argmax else logits

    @property
    def input_layout(self) -> str:
        return "nhwc" if self.preprocessing == "nhwc" else "nchw"

    def example_input(self, n: int, h: int, w: int, seed: int = 0) -> Tensor:
        """A random input of the kind the module takes: uint8 RGB with preprocessing, else normalized floats."""
        g = torch.Generator().manual_seed(seed)
        shape = (n, h, w, 3) if self.input_layout == "nhwc" else (n, 3, h, w)
        if self.preprocessing is None:
            return torch.randn(shape, generator=g)
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)

    def describe(self) -> dict[str, str]:
        layout = "(N, H, W, 3)" if self.input_layout == "nhwc" else "(N, 3, H, W)"
        inp = (
            f"float32 {layout}, RGB normalized with mean/std"
            if self.preprocessing is None
            else f"uint8 {layout} RGB 0..255"
        )
        if self.preprocessing is not None and self.resize_size is not None:
            inp += f", shorter side resized to {self.resize_size} inside"
        out = "uint8 (N, H, W) class indices" if self.argmax else "float32 (N, K, H, W) logits at the input size"
        return {"input": inp, "output": out}


def _num_classes(model: nn.Module) -> int:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    classifier = getattr(model, "classifier", None)
    return (classifier[-1] if isinstance(classifier, nn.Sequential) else convs[-1]).out_channels


def _metadata(
    module: ExportModule,
    model_name: str,
    weights: str | None,
    categories: Sequence[str] | None,
    resize_size: int | None,
    size_reason: str,
) -> dict:
    from . import __version__

    k = _num_classes(module.model)
    cats = list(categories) if categories is not None else [f"class_{i}" for i in range(k)]
    if len(cats) != k:
        raise ValueError(f"{len(cats)} category names for a model with {k} classes")
    return {
        "fcnseg_version": __version__,
        "model": model_name,
        "weights": weights or "",
        "num_classes": k,
        "categories": cats,
        "mean": list(module.mean),
        "std": list(module.std),
        "palette": palette(k).tolist(),
        "preprocessing": module.preprocessing or "none",
        "resize_size": resize_size,
        "resize_size_reason": size_reason,
        "resized_inside": module.resize_size is not None and module.preprocessing is not None,
        "argmax": module.argmax,
        **module.describe(),
    }


def export_onnx(module: ExportModule, output: str | Path, metadata: dict[str, Any], opset: int = ONNX_OPSET) -> Path:
    """Write ``module`` as a single-file ONNX model with dynamic batch/height/width and ``metadata`` props."""
    if opset < 17:
        raise ValueError(f"opset {opset} is too old; 17 or newer is needed")
    output = Path(output)
    n, h, w = EXAMPLE_SHAPE
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    if module.input_layout == "nhwc":
        dims = {0: dims[0], 1: dims[2], 2: dims[3]}
    quiet = logging.getLogger("torch.onnx")
    level, quiet.level = quiet.level, logging.ERROR  # "torchvision is not installed. Skipping torchvision::nms"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.export's deprecation chatter
            program = torch.onnx.export(
                module,
                (module.example_input(n, h, w),),
                dynamo=True,
                opset_version=opset,
                input_names=["image" if module.preprocessing else "input"],
                output_names=["mask" if module.argmax else "logits"],
                dynamic_shapes={"x": dims},
                verbose=False,
            )
    finally:
        quiet.setLevel(level)
    program.model.metadata_props.update({k: json.dumps(v) for k, v in metadata.items()})
    with atomic_path(output) as tmp:
        program.save(tmp, external_data=False)
    return output


def export_torchscript(module: ExportModule, output: str | Path, metadata: dict[str, Any]) -> Path:
    """Trace ``module`` to TorchScript; the metadata travels as the extra file ``fcnseg.json``.

    Tracing records ``x.shape`` as graph ops, so the upsample follows the input size (checked by parity).
    """
    output = Path(output)
    n, h, w = EXAMPLE_SHAPE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings and torch.jit's deprecation notice
        traced = torch.jit.trace(module, module.example_input(n, h, w), check_trace=False)
        with atomic_path(output) as tmp:
            torch.jit.save(traced, str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata)})
    return output


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The fcnseg metadata stored in an exported ``.onnx`` or TorchScript file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if _file_format(path) == "onnx":
        import onnx

        props = onnx.load(str(path), load_external_data=False).metadata_props
        return {p.key: json.loads(p.value) for p in props}
    extra = {METADATA_FILE: ""}
    _jit_load(path, extra)
    return json.loads(extra[METADATA_FILE])


def _file_format(path: Path) -> Literal["onnx", "torchscript"]:
    """What ``path`` holds, from its first bytes (TorchScript files are zip archives), whatever its name."""
    with open(path, "rb") as f:
        return "torchscript" if f.read(4) == b"PK\x03\x04" else "onnx"


def _jit_load(path: Path, extra_files: dict[str, Any] | None = None) -> torch.jit.ScriptModule:
    """``torch.jit.load`` without its deprecation warning: TorchScript is what this file was asked to be."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files or {})


@dataclass
class ParityReport:
    """Exported file vs eager PyTorch on one input shape."""

    shape: tuple[int, ...]
    max_abs_diff: float  # over logits; NaN for argmax exports, which output no logits
    agreement: float  # share of pixels whose class is the same
    decisive_mismatches: int  # differing pixels whose PyTorch top-2 logit margin exceeds the tolerance
    tolerance: float
    ok: bool

    def line(self) -> str:
        diff = "n/a (mask output)" if math.isnan(self.max_abs_diff) else f"{self.max_abs_diff:.2e}"
        return (
            f"{'x'.join(map(str, self.shape)):>16}  max|dlogit| {diff:>17}  tol {self.tolerance:.1e}  "
            f"argmax agreement {self.agreement * 100:8.4f}%  {'ok' if self.ok else 'FAIL'}"
        )


def _runner(path: Path):
    """A callable ``np.ndarray -> np.ndarray`` running the exported file on CPU."""
    if _file_format(path) == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    loaded = _jit_load(path).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return loaded(torch.from_numpy(x)).numpy()

    return run


def check_parity(
    path: str | Path,
    module: ExportModule,
    *,
    sizes: Sequence[tuple[int, int]] = DEFAULT_CHECK_SIZES,
    batch_sizes: Sequence[int] = (1, 2),
    rtol: float = 1e-4,
) -> list[ParityReport]:
    """Run the exported file (ONNX Runtime CPU, or TorchScript) and eager PyTorch on random inputs of each shape.

    A shape passes when the largest logit difference is at most ``rtol * max(1, max|logit|)`` and no pixel
    whose PyTorch top-2 margin exceeds that tolerance changes class (near-ties may flip either way).
    Argmax exports output no logits, so for them only the class check applies. A file that resizes inside is held
    to its output size and :data:`RESIZED_MIN_AGREEMENT` instead: ONNX Runtime's antialiased resize lands within
    a uint8 level of PyTorch's, and one level moves logits by more than ``rtol`` (on random-noise inputs, the
    worst case, a fraction of a percent of pixels change class; on photos far fewer).
    """
    path = Path(path)
    run = _runner(path)
    core = ExportModule(
        module.model,
        preprocessing=module.preprocessing,
        mean=module.mean,
        std=module.std,
        resize_size=module.resize_size,
    )
    reports = []
    for n in batch_sizes:
        for i, (h, w) in enumerate(sizes):
            x = module.example_input(n, h, w, seed=1 + i)
            with torch.inference_mode():
                ref = core(x).float()  # (N, K, H, W) logits
            got = torch.from_numpy(np.ascontiguousarray(run(x.numpy())))
            tol = rtol * max(1.0, ref.abs().max().item())
            top2 = ref.topk(2, dim=1).values if ref.shape[1] > 1 else torch.cat([ref, ref - math.inf], 1)
            margin = top2[:, 0] - top2[:, 1]  # (N, H, W)
            if module.argmax:
                diff, cls = math.nan, got.long()
            else:
                if got.shape != ref.shape:
                    raise RuntimeError(
                        f"{path}: output shape {tuple(got.shape)} for input {tuple(x.shape)}, "
                        f"expected {tuple(ref.shape)}: the export did not follow the input size"
                    )
                diff, cls = (got - ref).abs().max().item(), got.argmax(1)
            if cls.shape != margin.shape:
                raise RuntimeError(
                    f"{path}: mask shape {tuple(cls.shape)} for input {tuple(x.shape)}, "
                    f"expected {tuple(margin.shape)}: the export did not follow the input size"
                )
            same = cls == ref.argmax(1)
            decisive = int((~same & (margin > tol)).sum())
            ok = decisive == 0 and (math.isnan(diff) or diff <= tol)
            if core.resize_size is not None and core.preprocessing is not None:
                ok = same.float().mean().item() >= RESIZED_MIN_AGREEMENT
            reports.append(ParityReport(tuple(x.shape), diff, same.float().mean().item(), decisive, tol, ok))
    return reports


def export_model(
    model: nn.Module,
    output: str | Path,
    *,
    fmt: Literal["onnx", "torchscript"] = "onnx",
    model_name: str = "fcn",
    weights: str | None = None,
    categories: Sequence[str] | None = None,
    preprocessing: Layout | None = None,
    argmax: bool = False,
    opset: int = ONNX_OPSET,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    resize_size: int | None = None,
    size_reason: str = "",
) -> tuple[Path, ExportModule]:
    """Export ``model`` (returning ``{"out": logits}``) to ``output``; returns the path and the exported module.

    ``resize_size`` (None: native) is recorded in the metadata with ``size_reason``, and applied by an ONNX file
    with ``preprocessing`` (see the module docstring).
    """
    inside = resize_size if fmt == "onnx" and preprocessing is not None else None
    module = ExportModule(model, preprocessing=preprocessing, argmax=argmax, mean=mean, std=std, resize_size=inside)
    metadata = _metadata(module, model_name, weights, categories, resize_size, size_reason)
    metadata["format"] = fmt
    if fmt == "onnx":
        return export_onnx(module, output, {**metadata, "opset": opset}, opset), module
    if fmt == "torchscript":
        return export_torchscript(module, output, metadata), module
    raise ValueError(f"unknown format {fmt!r}; choose 'onnx' or 'torchscript'")
