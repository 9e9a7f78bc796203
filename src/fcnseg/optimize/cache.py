"""Where ``--fast`` keeps what it built, so that a second run (another process, new photos) skips the build.

Everything is keyed by :func:`build_key`: every byte of the model's tensors, the plan, the CPU (model name and
instruction flags), the input shape (compiled graphs are static per shape) and the versions of the libraries that
built it. What is kept: inductor's compiled graphs (its own cache, pointed here), the ONNX and OpenVINO files, and
each candidate's guard verdict on the bundled photos (``guard/<key>.json``); the verdict on the user's own images
is measured again on every run, on that run's images.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
from pathlib import Path

import torch
from torch import nn

from .._atomic import atomic_path
from . import cpu
from .guard import GuardResult

__all__ = ["build_key", "cache_root", "load_guard", "model_digest", "save_guard"]

LIBRARIES = ("torch", "torchao", "onnxruntime", "openvino", "nncf")


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, or ``$TORCH_HOME/fcnseg`` (next to the downloaded weights)."""
    return Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()).parent / "fcnseg"


def model_digest(model: nn.Module) -> str:
    """Every byte of every tensor (parameters and BN statistics) with its name, shape and dtype, and the module's
    class: a model differing anywhere never reuses another's build."""
    digest = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for k, v in model.state_dict().items():
        digest.update(k.encode() + str(tuple(v.shape)).encode() + str(v.dtype).encode())
        digest.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _version(name: str) -> str:
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        return importlib.metadata.version(name)
    return "-"


def build_key(digest: str, plan: object, shape: tuple[int, ...]) -> str:
    """The key of one build: model bytes (:func:`model_digest`), plan, CPU, input shape, library versions."""
    caps = cpu.cpu_capabilities()
    parts = [digest, repr(plan), caps.name, caps.isa, " ".join(sorted(caps.flags)), repr(tuple(shape))]
    parts += [f"{name}={_version(name)}" for name in LIBRARIES]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def load_guard(root: Path, key: str) -> GuardResult | None:
    """The guard verdict stored under ``key``, or ``None`` (never stored, or unreadable)."""
    path = root / "guard" / f"{key}.json"
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        return GuardResult.from_json(json.loads(path.read_text()))
    return None


def save_guard(root: Path, key: str, result: GuardResult) -> None:
    with atomic_path(root / "guard" / f"{key}.json") as tmp:
        tmp.write_text(json.dumps(result.to_json()))
