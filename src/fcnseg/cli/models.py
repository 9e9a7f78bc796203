"""``fcnseg models`` (what is available) and ``fcnseg weights`` (get checkpoints into the cache)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from .._atomic import atomic_path
from ..weights import MODEL_WEIGHTS, ResNet50_Weights, ResNet101_Weights, WeightsEnum, WeightsError, sha256_file
from . import add_progress_arguments


def _all_weights() -> list[WeightsEnum]:
    enums = [*MODEL_WEIGHTS.values(), ResNet50_Weights, ResNet101_Weights]
    return [w for e in enums for w in dict.fromkeys(e)]  # members without their DEFAULT aliases


def _find(name: str) -> list[WeightsEnum]:
    """``all``, a model name (its DEFAULT), ``Enum.MEMBER`` or an official file name."""
    everything = _all_weights()
    if name == "all":
        return everything
    if name in MODEL_WEIGHTS:
        return [MODEL_WEIGHTS[name].DEFAULT]
    found = [w for w in everything if name in (repr(w), w.file_name)]
    if not found:
        choices = ", ".join([*MODEL_WEIGHTS, *(repr(w) for w in everything)])
        raise WeightsError(f"unknown weights {name!r}; choose 'all' or one of: {choices}")
    return found


def _models(args: argparse.Namespace) -> int:
    rows = []
    for w in _all_weights():
        metrics = next(iter(w.meta["metrics"].values()))
        rows.append(
            {
                "weights": repr(w),
                "params_m": round(w.meta["num_params"] / 1e6, 1),
                "gflops": w.meta["gflops"],
                "metrics": metrics,
                "file": w.file_name,
                "size_mb": w.meta["file_size_mb"],
                "cached": w.cache_path.is_file(),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'weights':46} {'params':>7} {'GFLOPs':>7}  {'published metrics':28} {'cached':6}")
    for r in rows:
        m = ", ".join(f"{k} {v}" for k, v in r["metrics"].items())
        print(f"{r['weights']:46} {r['params_m']:>6}M {r['gflops']:>7.1f}  {m:28} {'yes' if r['cached'] else 'no':6}")
    print(f"\ncache: {_all_weights()[0].cache_path.parent}")
    return 0


def _download(args: argparse.Namespace) -> int:
    for w in _find(args.name):
        w.get_state_dict(progress=not args.quiet)
        print(f"{w.file_name}: cached at {w.cache_path}")
    return 0


def _import(args: argparse.Namespace) -> int:
    """Copy a checkpoint fetched elsewhere into the cache, after checking it is the official file."""
    src = Path(args.file)
    if not src.is_file():
        raise WeightsError(f"{src}: no such file")
    matches = [w for w in _all_weights() if w.file_name == (args.as_name or src.name)]
    digest = sha256_file(src)
    if not matches:  # a renamed file: recognise it by its hash
        matches = [w for w in _all_weights() if digest.startswith(w.value.hash_prefix)]
    if not matches:
        raise WeightsError(
            f"{src}: sha256 {digest[:12]}... matches no official checkpoint, and the cache is for those only; a "
            f"checkpoint of your own needs no import: pass it as --weights {src}"
        )
    w = matches[0]
    if not digest.startswith(w.value.hash_prefix):
        raise WeightsError(
            f"{src}: sha256 {digest[:12]}... does not match {w.file_name} (expected {w.value.hash_prefix})"
        )
    with atomic_path(w.cache_path) as tmp:
        shutil.copyfile(src, tmp)
    print(f"{src} -> {w.cache_path} (sha256 {digest[:12]}... ok)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    bad = 0
    for w in _find(args.name):
        if not w.cache_path.is_file():
            print(f"{w.file_name}: not cached ({w.cache_path})")
            continue
        ok = sha256_file(w.cache_path).startswith(w.value.hash_prefix)
        bad += not ok
        print(f"{w.file_name}: {'ok' if ok else 'HASH MISMATCH, delete and download again'}")
    return 1 if bad else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list models and weights with their published metrics",
        description="List the models and their official weights: parameters, GFLOPs, the published metrics, the "
        "file, and whether it is in the torch.hub cache yet (fcnseg weights download fetches it). Same as weights "
        "list.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_models)

    p = sub.add_parser(
        "weights",
        help="download, import or verify checkpoints in the torch.hub cache",
        description="Manage checkpoints in the torch.hub cache ($TORCH_HOME/hub/checkpoints), shared with torchvision.",
    )
    wsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = wsub.add_parser(
        "list", help="the same table as fcnseg models", description="List the models and their official weights "
        "with their published metrics and whether each is cached (same as fcnseg models).",
    )  # fmt: skip
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=_models)
    d = wsub.add_parser("download", help="fetch official weights (hash-checked)")
    d.add_argument("name", nargs="?", default="all", help="model name, weights name or 'all' (default)")
    add_progress_arguments(d)
    d.set_defaults(func=_download)
    i = wsub.add_parser("import", help="copy a checkpoint downloaded elsewhere into the cache (hash-checked)")
    i.add_argument("file", help="the .pth file, e.g. fcn_resnet50_coco-1167a1af.pth")
    i.add_argument("--as-name", help="official file name, if the file was renamed")
    i.set_defaults(func=_import)
    v = wsub.add_parser("verify", help="check the sha256 of cached checkpoints")
    v.add_argument("name", nargs="?", default="all", help="model name, weights name or 'all' (default)")
    v.set_defaults(func=_verify)
