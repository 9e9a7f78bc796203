"""``fcnseg segment``: files, folders, globs or a list on stdin -> masks, overlays, probabilities, JSON and a summary.

Built for runs over thousands of files: a bad file is reported on one line and skipped, outputs are written
atomically (never a partial file), a rerun skips images whose outputs exist, and under ``torchrun`` each rank
takes every ``world_size``-th input while rank 0 merges the summary. Inputs and OUT_DIR may be URLs
(``s3://b/in/ -o s3://b/out/``): the same names, records, skips and lock, through :mod:`fcnseg.storage`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from functools import partial
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from .. import storage
from ..coco_results import CocoResults
from ..faults import describe
from ..imageio import ImageDecodeError
from ..outputs import (
    OUTPUT_KINDS,
    RUN_OUTPUTS,
    forget_outputs,
    input_source,
    merge_rows,
    output_paths,
    read_record,
    read_summary,
    remove_outputs,
    source_of,
    write_outputs,
    write_record,
    write_summary,
)
from ..runlock import FolderBusyError, RunLock
from ..storage import AnyPath, ObjectLock
from ..video import VIDEO_OUTPUTS, is_video
from ..weights import MODEL_WEIGHTS
from . import CLIError, add_model_arguments, add_output_argument, add_progress_arguments, add_size_argument
from ._extras import require
from ._inputs import Input, collect_inputs, name_inputs
from .background import in_background
from .speed import add_speed_arguments, require_speed_extras, speed_options_from_args
from .video import check_video_options, describe_counts

if TYPE_CHECKING:  # torch and the model are imported when a run starts, not for --help
    import torch

    from ..predict import SegmentationResult, Segmenter

__all__ = ["example_image", "register", "run"]

DEFAULT_SAVE = "mask,overlay"
# write errors that every later image would meet too: the run stops at the first (the others are per image)
_FOLDER_FAULTS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOTCONN, errno.ESTALE})


def example_image() -> Path:
    """The photo shipped with the package (see ``fcnseg/assets/README.md``)."""
    return Path(str(resources.files("fcnseg") / "assets" / "astronaut.jpg"))


def _check_writable(folder: AnyPath) -> None:
    if storage.is_remote(folder):  # a bucket answers at the first write, the lock object's
        storage.check_writable(folder)
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise CLIError(f"{folder}: output folder not writable ({e.strerror or e})") from None


def _parse_save(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    known = [*OUTPUT_KINDS, *RUN_OUTPUTS, "mask-frames"]  # mask-frames: PNG masks of a video's frames
    bad = [k for k in kinds if k not in known]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"unknown output {bad}; choose from {','.join(known)}")
    return kinds


def _parse_scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated scales like 0.75,1,1.25, got {text!r}") from None


def _row(item: Input, status: str, rank: int, **extra: Any) -> dict[str, Any]:
    return {"input": str(item.path), "name": str(item.name or ""), "status": status, "rank": rank, **extra}


def _prepare(
    args: argparse.Namespace, out: AnyPath, info: Any, lock: RunLock | ObjectLock
) -> tuple[list[Input], list[dict[str, Any]]]:
    """The named inputs, the same on every rank, and (on rank 0) the rows of the summary already in ``out``.

    Rank 0 alone takes the folder's lock (one run at a time, so no run's summary rows are lost), reads stdin and
    the folders, warns, and decides the names, so that all ranks agree on them.
    """
    found: list[Any] = [None]
    previous: list[dict[str, Any]] = []
    if info.is_main:
        try:
            lock.acquire()
            storage.list_below(out)  # in a bucket: one listing answers the name and skip checks below
            previous = read_summary(out / f"summary.{args.summary}")  # unreadable: fail before any work
            inputs = collect_inputs(args.inputs, output=out)
            if args.example:
                inputs.append(Input(example_image(), Path("astronaut")))
            found[0] = name_inputs(inputs, out)
        except (ValueError, FolderBusyError) as e:
            found[0] = CLIError(str(e))
    if info.enabled:
        import torch.distributed as dist

        dist.broadcast_object_list(found, src=0)
    if isinstance(found[0], CLIError):
        raise found[0]
    return found[0], previous


def _settings(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """What changes the pixels of a mask, as asked: the model, the weights file's identity (registry entry, real
    path, size and modification time, or URL, size and ETag), size, tiles, TTA and speed path. The size ``auto``
    resolves to is a function of the weights file, so the request and the file's identity together fix it without
    reading the file."""
    from ..predict import TTA_SCALES

    found = None if args.weights is None else MODEL_WEIGHTS[args.model].resolve(args.weights)
    weights = source_of(found) if isinstance(found, Path) else None if found is None else repr(found)
    if args.weights is not None and storage.is_remote(args.weights):  # the object (URL, ETag), not its cached copy
        weights = source_of(args.weights)
    return {
        "model": args.model,
        "weights": weights,
        "size": args.size,
        "tile": [args.window, args.stride] if args.tile else None,
        "tta": list(args.tta_scales or TTA_SCALES) if args.tta else None,
        "speed": {"fast": args.fast, "precision": args.precision, "backend": args.backend, "device": device.type},
    }


def _done_before(
    record: dict[str, Any] | None, out: AnyPath, item: Input, claim: dict[str, Any], kinds: list[str]
) -> dict[str, Any] | None:
    """The summary fields of an input whose requested outputs were all made from this very file with these
    settings (per ``record``, the one under its name), or None.

    "This very file": the record under its name holds the same real path and content (``input_source``: a file's
    sha256, an object's URL, size and ETag); "these settings": the same :func:`_settings`; "all": each requested
    kind is listed in the record (it lists them once they are all written) and exists.
    """
    paths = output_paths(out / item.name, kinds).values()
    if record is None or any(record.get(k) != v for k, v in claim.items()):
        return None
    if not set(kinds) <= set(record.get("outputs", ())) or not all(map(storage.is_file, paths)):
        return None
    return {
        **{k: record[k] for k in ("width", "height", "top_class", "top_share")},
        "outputs": ";".join(map(str, paths)),
    }


def _save(
    result: SegmentationResult,
    item: Input,
    claim: dict[str, Any],
    out: AnyPath,
    kinds: list[str],
    meta: dict[str, Any],
    recorded: bool,
) -> dict[str, Any]:
    """Record, then write, one image's outputs; returns the summary fields of its "ok" row.

    The record claims the name first and lists no outputs; if a record was there (``recorded``), the outputs of an
    older run of this image that this run does not rewrite are removed (the name is this image's:
    :func:`fcnseg.cli._inputs.name_inputs`; a name without a record holds no outputs, and deleting nothing would
    cost a request per kind in a bucket), so the folder never mixes two runs of one image; the record lists the
    outputs once they are all written.
    Safe to call from a worker thread: it touches only this image's files.
    """
    h, w = result.mask.shape
    top = result.class_stats(confidence=False)[0]
    fields = {"width": w, "height": h, "top_class": top["name"], "top_share": round(top["share"], 6)}
    record = {**claim, "input": str(item.path), **fields}
    write_record(out, item.name, {**record, "outputs": []})
    if recorded:
        remove_outputs(out / item.name, [k for k in OUTPUT_KINDS if k not in kinds])
    written = write_outputs(result, out / item.name, kinds, {"input": str(item.path), **meta})
    write_record(out, item.name, {**record, "outputs": kinds})
    return {**fields, "outputs": ";".join(map(str, written))}


_AGAIN = "run again (finished images are skipped)"


def _weighed(rows: list[dict[str, Any]], weights: str) -> list[dict[str, Any]]:
    """This run's summary rows with the weights that made them (random ones say so in each row)."""
    return [{**row, "weights": weights} for row in rows]


def _kept(rows: list[dict[str, Any]]) -> str:
    done = sum(r["status"] == "ok" for r in rows)
    if not done:
        return "no image of this run was finished, earlier outputs are untouched"
    return f"the outputs of the {done} image{'s' * (done != 1)} segmented are complete"


def _stop(
    error: OSError,
    out: AnyPath,
    previous: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    summary: AnyPath,
    info: Any,
) -> None:
    """A write fault every later image would meet (full disk, read-only or failing drive): record what was done
    (if the summary can still be written) and stop the run with one line."""
    kept = _kept(rows)
    if not info.enabled:
        with contextlib.suppress(OSError):
            write_summary(merge_rows(previous, rows), summary)
            kept += f", listed in {summary}" if rows else ""
    raise CLIError(describe(error, kept=kept, todo=_AGAIN)) from error


def _workers(given: int | None, device: torch.device) -> int:
    """Decoding processes: as given, else 2 on a GPU and none on a CPU (measured on 2 cores: 0 workers ran a folder
    4 % faster than 2, whose decoding competed with the model's threads)."""
    if given is not None:
        return given
    return 2 if device.type == "cuda" else 0


def run(args: argparse.Namespace) -> int:
    """The command's body; returns the exit code (1 if any input failed)."""
    import torch.distributed as dist

    from ..distributed import init_distributed

    info, device = init_distributed(args.device)
    out = storage.as_path(args.output)
    created = not storage.is_remote(out) and not out.exists()
    lock = storage.run_lock(out, "segment")
    try:
        with _engine(args):
            return _run(args, info, device, lock)
    finally:
        lock.release()
        if info.enabled and dist.is_initialized():
            dist.destroy_process_group()
        if created and out.is_dir() and not any(out.iterdir()):  # a run that wrote nothing leaves nothing behind
            with contextlib.suppress(OSError):  # another rank may have written meanwhile
                out.rmdir()


def _engine(args: argparse.Namespace) -> contextlib.AbstractContextManager[Any]:
    """For ``--engine ray``, a Ray session for the run (joined or started: :func:`fcnseg.ray.ray_session`)."""
    if args.engine != "ray":
        return contextlib.nullcontext()
    from ..ray import ray_session, require_ray

    try:
        require_ray()
    except ImportError as e:
        raise CLIError(str(e)) from None
    return ray_session(args.address, quiet=args.quiet)


def _segmenter_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`Segmenter` keywords of the command line, for both engines."""
    return {
        "model": args.model,
        "weights": args.weights,
        "size": args.size,
        "tile": args.window if args.tile else None,
        "stride": args.stride,
        "tta": (args.tta_scales or True) if args.tta else False,  # True: the default scales
        "batch_size": args.batch_size,
        "optimize": speed_options_from_args(args),
    }


def _segmenter(args: argparse.Namespace, device: torch.device) -> Segmenter:
    from ..predict import Segmenter

    return Segmenter(**_segmenter_options(args), device=device)


def _save_row(
    result: SegmentationResult, row: dict[str, Any], *, out: Path, kinds: list[str], meta: dict[str, Any]
) -> dict[str, Any]:
    """:func:`_save` for a row of the Ray engine (``path``, ``name``, ``claim`` as JSON, ``recorded``), run in its
    actors."""
    item = Input(storage.as_path(row["path"]), Path(row["name"]), Path(row["name"]))
    return _save(result, item, json.loads(row["claim"]), out, kinds, meta, bool(row["recorded"]))


def _on_ray(
    args: argparse.Namespace,
    todo: dict[AnyPath, tuple[Input, dict[str, Any], bool]],
    out: AnyPath,
    kinds: list[str],
    place: Any,
) -> Iterator[tuple[dict[str, Any], int]]:
    """``--engine ray`` (:mod:`fcnseg.ray.engine`): ``todo`` segmented and written by Ray actors; yields each
    image's summary row and the errno of a failed write (0 if none)."""
    import ray

    from ..ray.batch import preset
    from ..ray.engine import segment_files

    preprocess, line = preset(args.model, args.weights, args.size, tiled=args.tile)
    print(line, file=sys.stderr)
    weights = "none (random init: predictions are meaningless)" if args.weights is None else args.weights
    meta = {"model": args.model, "weights": weights, "random_weights": args.weights is None,
            "input_size": preprocess.resize_size}  # fmt: skip
    items = list(todo.values())
    rows = [
        {"key": k, "path": str(item.path), "name": str(item.name), "claim": json.dumps(claim), "recorded": recorded}
        for k, (item, claim, recorded) in enumerate(items)
    ]
    found = segment_files(
        ray, rows, preprocess=preprocess, segmenter=_segmenter_options(args),
        save=partial(_save_row, out=out, kinds=kinds, meta=meta), place=place, batch_size=args.batch_size,
        probs="probs" in kinds, confidence="json" in kinds, quiet=args.quiet,
    )  # fmt: skip
    for answer in found:
        item = items[answer["key"]][0]
        if not answer["error"]:
            yield _row(item, "ok", 0, **answer["fields"]), 0
        elif answer["errno"]:
            error = f"{item.path}: cannot write outputs to {(out / item.name).parent} ({answer['error']})"
            yield _row(item, "failed", 0, error=error), answer["errno"]
        else:
            yield _row(item, "failed", 0, error=answer["error"]), 0


def _ray_placement(args: argparse.Namespace) -> Any:
    """The actors ``--engine ray`` will start on the connected cluster (None for the local engine)."""
    if args.engine != "ray":
        return None
    if "coco" in args.save:
        raise CLIError("--save coco needs every mask on one machine: use the local engine (--engine local)")
    import ray

    from ..ray.placement import placement

    try:
        return placement(ray, args.workers, args.device)
    except ValueError as e:
        raise CLIError(str(e)) from None


def _check_coco_writer(save: list[str]) -> None:
    """``--save coco`` needs pycocotools: say so before any image is segmented, not after all of them."""
    if "coco" in save:
        try:
            import pycocotools.mask  # noqa: F401
        except ImportError:
            raise CLIError("--save coco needs pycocotools: pip install 'fcnseg[coco]'") from None


def _run(args: argparse.Namespace, info: Any, device: torch.device, lock: RunLock | ObjectLock) -> int:
    from ..models import model_for

    args.model = model_for(args.model, args.weights)  # a checkpoint's own model, unless --model names another
    _check_coco_writer(args.save)
    require_speed_extras(args)
    check_video_options(args)
    if args.source is not None:
        require("video", "a live stream")
    out = storage.as_path(args.output)
    _check_writable(out)
    if args.source is not None:  # a live stream (cli/video.py)
        from .video import run_live

        return run_live(args, _segmenter(args, device), out)
    inputs, previous = _prepare(args, out, info, lock)
    if not inputs:
        raise CLIError("no inputs: give files, folders, globs, - (paths on stdin) or --example")
    place = _ray_placement(args)
    if place is not None:  # the device that makes the masks is the actors'
        import torch

        device = torch.device(place.device)
    weights = args.weights
    weights_label = "none (random init: predictions are meaningless)" if weights is None else args.weights
    random = weights is None  # said in every output: the summary, the JSON, a band across each overlay
    kinds = [k for k in args.save if k in OUTPUT_KINDS]  # per image; RUN_OUTPUTS are one file for the run
    coco = CocoResults() if "coco" in args.save else None
    settings = _settings(args, device)
    # the COCO file describes the whole run, and random weights differ every run: nothing is skipped
    redo = args.overwrite or coco is not None or random
    say = print if info.is_main else (lambda *a, **k: None)
    if weights is None:
        say(f"fcnseg segment: warning: --weights none: {args.model} is randomly initialised", file=sys.stderr)

    rows: list[dict[str, Any]] = []
    todo: dict[AnyPath, tuple[Input, dict[str, Any], bool]] = {}  # path -> input, claim, recorded
    clips: list[Input] = []  # videos: segmented after the photos, by cli/video.py
    for item in inputs[info.rank :: info.world_size]:
        if item.name is None:
            error = f"{item.path}: {out / item.stem} and its hashed name both hold other images' outputs"
            rows.append(_row(item, "failed", info.rank, error=error))
            print(f"fcnseg segment: error: {error}", file=sys.stderr)
            continue
        if is_video(item.path):
            clips.append(item)
            continue
        record = read_record(out, item.name)
        claim = {"source": input_source(item.path, record.get("source") if record else None), "settings": settings}
        done = None if redo else _done_before(record, out, item, claim, kinds)
        if done is not None:
            rows.append(_row(item, "skipped", info.rank, **done))
        else:
            todo[item.path] = (item, claim, record is not None)

    results: Iterable[tuple[AnyPath, SegmentationResult | ImageDecodeError]] = ()
    meta: dict[str, Any] = {}
    if clips:
        require("video", f"{clips[0].path} (a video)")
    on_ray: Iterable[tuple[dict[str, Any], int]] = ()
    if todo and place is not None:
        on_ray, todo = _on_ray(args, todo, out, kinds, place), {}
    if todo or clips:  # a finished run, resumed, has no model to load
        segmenter = _segmenter(args, device)
        say(segmenter.describe_size(), file=sys.stderr)
    if todo:
        # confidence: the mean probability per class that the JSON and the COCO scores report
        confidence = "json" in kinds or coco is not None
        results = segmenter.predict_paths(
            list(todo), workers=_workers(args.workers, device), probs="probs" in kinds, confidence=confidence
        )
        meta = {"model": args.model, "weights": weights_label, "random_weights": random,
                "input_size": segmenter.preprocess.resize_size}  # fmt: skip
    summary = out / f"summary.{args.summary}"
    quiet = args.quiet or not todo or not sys.stderr.isatty() or not info.is_main
    bar = tqdm(total=len(todo), unit="img", disable=quiet)
    start = time.perf_counter()

    def save(found: tuple[AnyPath, SegmentationResult | ImageDecodeError]) -> dict[str, Any] | None:
        path, result = found
        if isinstance(result, ImageDecodeError):
            return None
        item, claim, recorded = todo[path]
        return _save(result, item, claim, out, kinds, meta, recorded)

    try:
        for row, code in on_ray:
            rows.append(row)
            if code in _FOLDER_FAULTS:
                _stop(OSError(code, os.strerror(code), str(out)), out, previous, rows[:-1], summary, info)
            if row["status"] == "failed":
                tqdm.write(f"fcnseg segment: error: {row['error']}", file=sys.stderr)
        for (path, result), saved in in_background(results, save):  # writing overlaps the next batch
            item = todo[path][0]
            bar.update()
            if isinstance(result, ImageDecodeError):
                forget_outputs(out, item.name, todo[path][1])
                rows.append(_row(item, "failed", info.rank, error=str(result)))
                tqdm.write(f"fcnseg segment: error: {result}", file=sys.stderr)
                continue
            if isinstance(saved, OSError):
                h, w = result.mask.shape
                if saved.errno in _FOLDER_FAULTS or getattr(saved, "run_wide", False):  # a bucket's: StorageError
                    _stop(saved, out, previous, _weighed(rows, weights_label), summary, info)
                error = f"{path}: cannot write outputs to {(out / item.name).parent} ({saved.strerror or saved})"
                rows.append(_row(item, "failed", info.rank, error=error, width=w, height=h))
                tqdm.write(f"fcnseg segment: error: {error}", file=sys.stderr)
                continue
            if isinstance(saved, Exception):
                raise saved
            rows.append(_row(item, "ok", info.rank, **saved))
            if coco is not None:
                coco.add(f"{item.name}{path.suffix}", result)  # the output name: unique in the run
        bar.close()
        if clips:
            from .video import segment_clips

            segment_clips(clips, segmenter, out, args, coco, redo, rows, settings)
    except KeyboardInterrupt:
        if not info.enabled:  # keep a record of what was done; every output on disk is complete
            write_summary(merge_rows(previous, _weighed(rows, weights_label)), summary)
        raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - start

    if info.enabled:
        import torch.distributed as dist

        gathered: list[Any] = [None] * info.world_size
        dist.all_gather_object(gathered, (rows, elapsed, coco))
        rows = [r for part, _, _ in gathered for r in part]
        elapsed = max(t for _, t, _ in gathered)
        coco = CocoResults.merge([c for _, _, c in gathered]) if coco is not None else None
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "skipped")}
    if info.is_main:
        try:
            write_summary(merge_rows(previous, _weighed(rows, weights_label)), summary)
        except OSError as e:
            raise CLIError(describe(e, kept=_kept(rows), todo=_AGAIN)) from e
        if coco is not None:
            print(f"COCO predictions: {coco.write(out / RUN_OUTPUTS['coco'])} ({len(coco.images)} images)")
        processes = info.world_size if info.enabled else 1
        print(
            f"fcnseg segment: {describe_counts(rows, elapsed, processes)}; summary: {summary}"
            + ("; RANDOM WEIGHTS (--weights none): the masks mean nothing" if random else "")
        )
        if todo and (path := segmenter.speed_path()):
            print(f"--fast ran {path}")
            print(*(f"  {line}" for line in segmenter.speed_details() * args.verbose), sep="\n", end="")
    return 1 if counts["failed"] else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="segment images, folders or globs; write masks, overlays and a summary",
        description=(
            "Segment images and write, per input, the outputs chosen with --save (by default a palette PNG mask "
            "the size of the input, class index per pixel, and an overlay); a summary of the run goes to "
            "OUT_DIR/summary.csv. "
            "Launch with torchrun to shard the inputs over processes."
        ),
        epilog="outputs per input NAME (its path relative to a folder input, else its stem; plus a hash of its "
        "path when another image's outputs hold that name): "
        + ", ".join(f"{kind} -> NAME{suffix}" for kind, suffix in OUTPUT_KINDS.items())
        + "; per video: "
        + ", ".join(f"NAME{suffix}" for suffix in VIDEO_OUTPUTS.values())
        + ". An input is skipped when OUT_DIR/.fcnseg/NAME.json records that every output asked for was made from this "
        "very file (real path and the sha256 of its content) with the same model, weights file, size, tiles, TTA "
        "and speed path, and they all exist, unless --overwrite; outputs of an older run of that image that a run "
        "does not rewrite are removed. The exit code is 1 if any input failed.",
    )
    add_model_arguments(p)
    add_speed_arguments(p)
    p.add_argument(
        "inputs", nargs="*", metavar="INPUT",
        help="image files, folders (recursive), globs, or - for paths on stdin; each may be a URL (s3://b/photos/, "
             "gs://, az://, https://; pip install 'fcnseg[cloud]'), read streamed",
    )  # fmt: skip
    add_output_argument(
        p, "output folder, or a bucket prefix such as s3://b/out/ (same names, records and skips; one run at a "
        "time, by a lock object) (default: %(default)s)", default="fcnseg_out", metavar="OUT_DIR",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=4, help="images (or tiles) per forward pass (default: 4)")
    p.add_argument(
        "--workers", type=int, default=None,
        help="processes decoding images (default: 2 on a GPU; 0 on a CPU, where the model's threads already use every "
             "core and a decoding process only competes with them; 0 = in the main process); with --engine ray: model "
             "actors (default: one per GPU of the cluster, else one per node)",
    )  # fmt: skip
    p.add_argument(
        "--engine", choices=("local", "ray"), default="local",
        help="local: this machine (or torchrun's processes); ray: a Ray cluster's nodes decode, segment and write "
             "straight to OUT_DIR, which every node must reach (pip install 'fcnseg[ray]'; default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--address", metavar="ADDR",
        help="with --engine ray: the cluster to join (default: $RAY_ADDRESS, else a local Ray started for the run)",
    )  # fmt: skip
    add_size_argument(p, tiles=True)
    p.add_argument(
        "--tile", action="store_true", help="sliding-window inference (for large images at native resolution)"
    )
    p.add_argument("--window", type=int, default=520, help="tile side in pixels (default: %(default)s)")
    p.add_argument("--stride", type=int, help="step between tiles (default: 3/4 of --window); overlaps are averaged")
    p.add_argument("--tta", action="store_true", help="test-time augmentation: flips and scales, logits averaged")
    p.add_argument(
        "--tta-scales", type=_parse_scales, metavar="S,S,...",
        help="scales for --tta (default: 0.75,1.0,1.25, fcnseg.predict.TTA_SCALES)",
    )  # fmt: skip
    p.add_argument(
        "--save", type=_parse_save, default=_parse_save(DEFAULT_SAVE), metavar="KINDS",
        help=f"comma-separated outputs from {','.join(OUTPUT_KINDS)} (default: {DEFAULT_SAVE}); coco: one "
             f"{RUN_OUTPUTS['coco']} for the run (COCO RLE per image and class; segments every input); "
             "mask-frames: for a video, also a folder NAME_frames of PNG masks, one per frame",
    )  # fmt: skip
    p.add_argument("--summary", choices=("csv", "jsonl"), default="csv", help="run summary format (default: csv)")
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs were made from the same file")
    add_progress_arguments(p)
    p.add_argument("--example", action="store_true", help="also segment the photo shipped with fcnseg")
    from .video import add_video_arguments

    add_video_arguments(p)
    p.set_defaults(func=run)
