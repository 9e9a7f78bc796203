"""Optional dependencies by the extra that installs them: a command checks what it will need before it starts
work and says in one line which extra to install (``fcnseg export: error: ONNX export needs onnx, onnxscript:
pip install 'fcnseg[export]'``); :func:`extra_line` words a missing module met later the same way."""

from __future__ import annotations

import importlib.util
import sys

from . import CLIError

__all__ = ["EXTRAS", "extra_line", "missing", "require"]

# extra -> the modules it installs, by import name (pyproject.toml's optional-dependencies, dev aside)
EXTRAS: dict[str, tuple[str, ...]] = {
    "safetensors": ("safetensors",),
    "coco": ("pycocotools",),
    "plot": ("matplotlib",),
    "bench": ("skimage",),
    "export": ("onnx", "onnxscript", "onnxruntime"),
    "serve": ("fastapi", "fastapi_offline", "uvicorn", "multipart", "pycocotools", "skimage"),
    "video": ("av",),
    "tensorboard": ("tensorboard",),
    "speed": ("torchao", "onnxruntime", "onnx", "onnxscript"),
    "openvino": ("openvino", "nncf"),
    "heif": ("pillow_heif",),
    "avif": ("pillow_avif",),
    "ray": ("ray",),
    "cloud": ("fsspec", "s3fs", "upath"),
}


def _absent(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is None  # None: an import of it is refused
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a finder refusing it, or a broken package
        return True


def missing(*modules: str) -> list[str]:
    """The ``modules`` (top-level import names) that cannot be imported, found without importing them."""
    return [m for m in modules if _absent(m)]


def require(extra: str, what: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise the one-line :class:`CLIError` naming ``extra`` if any of ``modules`` (default: all the extra installs)
    is missing; ``what`` is the feature that needs them, e.g. ``"ONNX export"``."""
    absent = missing(*(EXTRAS[extra] if modules is None else modules))
    if absent:
        raise CLIError(f"{what} needs {', '.join(absent)}: pip install 'fcnseg[{extra}]'")


def extra_line(e: ModuleNotFoundError) -> str | None:
    """The line for a module that an extra installs, found missing part way: the message when it already names the
    extra, else ``{module} is missing: pip install 'fcnseg[extra]'``; None for any other module (a bug)."""
    if "pip install 'fcnseg[" in str(e):
        return str(e)
    top = (e.name or "").partition(".")[0]
    extra = next((x for x, modules in EXTRAS.items() if top in modules), None)
    return None if extra is None else f"{top} is missing: pip install 'fcnseg[{extra}]'"
