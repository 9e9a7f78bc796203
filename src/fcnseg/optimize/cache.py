"""Where ``--fast`` keeps what it built, so that a second run (another process, new photos) skips the build; and
the user's view of it: what is there, how large, when last used (``fcnseg cache list|clear``), and a size cap
(:data:`DEFAULT_MAX_BYTES`, ``FCNSEG_CACHE_MAX``) kept by dropping what was used least recently.

Everything is keyed by :func:`build_key`: every byte of the model's tensors, the plan, the CPU (model name and
instruction flags), the input shape (compiled graphs are static per shape) and the versions of the libraries that
built it. What is kept: compiled torch paths as AOTInductor packages (``aoti/``), the ONNX and OpenVINO files and
OpenVINO's compiled blobs, each candidate's last guard verdict (``guard/<key>.json``: a refusal is not built again)
and what its build cost and gained (``costs/<key>.json``, for ``--fast``'s decision to build at all).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .._atomic import atomic_path
from . import cpu
from .guard import GuardResult

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Entry",
    "build_key",
    "cache_root",
    "entries",
    "load_cost",
    "load_guard",
    "max_bytes",
    "model_digest",
    "parse_size",
    "prune",
    "save_cost",
    "save_guard",
    "touch",
]

LIBRARIES = ("torch", "torchao", "onnxruntime", "openvino", "nncf")
DEFAULT_MAX_BYTES = 4 * 2**30  # one fcn_resnet50 with every candidate built takes ~1 GB
# what each folder of the cache holds; a folder listed with True is one entry (its files belong together)
KINDS = {
    "aoti": ("compiled torch path (AOTInductor)", False),
    "openvino": ("OpenVINO model", False),
    "openvino/blobs": ("OpenVINO compiled blobs", True),
    "onnx": ("ONNX model", False),
    "inductor": ("inductor kernel cache", True),
    "guard": ("guard verdicts", True),
    "costs": ("build costs", True),
}


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


def load_cost(root: Path, key: str) -> dict:
    """What building the candidate under ``key`` cost before (``cold_s``, ``warm_s``) and gained (``speedup``)."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((root / "costs" / f"{key}.json").read_text())
        return {k: float(v) for k, v in data.items() if k in ("cold_s", "warm_s", "speedup")}
    return {}


def save_cost(root: Path, key: str, fields: dict[str, float]) -> None:
    """Merge ``fields`` into the record under ``key``."""
    data = {**load_cost(root, key), **fields}
    with atomic_path(root / "costs" / f"{key}.json") as tmp:
        tmp.write_text(json.dumps(data))


def touch(*paths: Path) -> None:
    """Mark ``paths`` used now: the size cap drops what was used least recently (file times, not atime, which
    most mounts do not keep)."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.utime(path)


@dataclass(frozen=True)
class Entry:
    """One thing in the cache: its files (a model and its weights, a package, a folder), what it is, how many
    bytes, and when it was last used (seconds since the epoch)."""

    paths: tuple[Path, ...]
    what: str
    bytes: int
    used: float

    @property
    def name(self) -> str:
        return self.paths[0].name


def _size_and_time(path: Path) -> tuple[int, float]:
    if path.is_dir():
        stats = [p.stat() for p in path.rglob("*") if p.is_file()]
        return sum(s.st_size for s in stats), max([path.stat().st_mtime, *(s.st_mtime for s in stats)])
    stat = path.stat()
    return stat.st_size, stat.st_mtime


def entries(root: Path) -> list[Entry]:
    """Everything in the cache, least recently used first."""
    found = []
    for folder, (what, whole) in KINDS.items():
        path = root / folder
        if not path.is_dir():
            continue
        if whole:
            groups = [(path,)]
        else:  # files of one stem belong together (an OpenVINO .xml and its .bin)
            stems: dict[str, list[Path]] = {}
            for p in sorted(path.iterdir()):
                if p.is_file() and not p.name.startswith("."):  # a write under way
                    stems.setdefault(p.stem, []).append(p)
            groups = [tuple(sorted(g, key=lambda p: p.suffix != ".xml")) for g in stems.values()]
        for group in groups:
            with contextlib.suppress(OSError):  # removed meanwhile by another process
                sizes = [_size_and_time(p) for p in group]
                found.append(Entry(group, what, sum(b for b, _ in sizes), max(t for _, t in sizes)))
    return sorted(found, key=lambda e: e.used)


def _remove(entry: Entry) -> None:
    for path in entry.paths:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def prune(root: Path, limit: int, *, keep_since: float | None = None) -> list[Entry]:
    """Remove the least recently used entries until the cache holds at most ``limit`` bytes; never one used at or
    after ``keep_since`` (what this run uses). Returns what was removed."""
    found = entries(root)
    total = sum(e.bytes for e in found)
    removed = []
    for entry in found:
        if total <= limit:
            break
        if keep_since is not None and entry.used >= keep_since:
            continue
        _remove(entry)
        total -= entry.bytes
        removed.append(entry)
    return removed


def parse_size(text: str) -> int:
    """``"4G"``, ``"500M"``, ``"1.5GB"``, ``"2GiB"`` or a number of bytes -> bytes."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 4G, 500M, 1.5GB)")
    number, unit = float(match[1]), match[2].upper()
    return int(number * 1024 ** " KMGT".index(unit or " "))


def max_bytes() -> int:
    """The cache's size cap: ``FCNSEG_CACHE_MAX`` (e.g. ``2G``), else :data:`DEFAULT_MAX_BYTES`."""
    value = os.environ.get("FCNSEG_CACHE_MAX")
    return parse_size(value) if value else DEFAULT_MAX_BYTES
