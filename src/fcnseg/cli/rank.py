"""``fcnseg rank``: images ordered by the model's doubt, as a CSV and a Label Studio tasks JSON with pre-annotations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import CLIError, add_model_arguments, add_size_argument
from ._inputs import collect_inputs


def _rank(args: argparse.Namespace) -> int:
    import torch

    from ..imageio import ImageDecodeError
    from ..predict import Segmenter
    from ..rank import RANK_FILES, label_config, rank, write_ranking
    from ..weights import weights_identity

    out = Path(args.output)
    taken = [name for name in RANK_FILES if (out / name).exists()]
    if taken:
        raise CLIError(f"{out / taken[0]} exists (an earlier ranking); choose another output folder")
    try:
        text = Path(args.label_config).read_text() if args.label_config else None
    except OSError as e:
        raise CLIError(f"{args.label_config}: cannot read the labelling config ({e.strerror})") from None
    inputs = collect_inputs(args.inputs, output=out)
    if not inputs:
        raise CLIError("no images to rank")
    if args.threads:
        torch.set_num_threads(args.threads)
    segmenter = Segmenter(args.model, args.weights, device=args.device, size=args.size, batch_size=args.batch_size)
    if not args.quiet:
        print(f"fcnseg rank: {segmenter.describe_size()}", file=sys.stderr)
    try:
        xml, config = label_config(text, segmenter.categories)
    except ValueError as e:
        raise CLIError(f"{args.label_config}: {e}") from None
    if config.unmatched and not args.quiet:
        print(f"fcnseg rank: the labelling config names no label for {', '.join(config.unmatched)}: left out of the "
              "pre-annotations", file=sys.stderr)  # fmt: skip
    failed = []

    def results():
        for path, result in segmenter.predict_paths([i.path for i in inputs], confidence=True):
            if isinstance(result, ImageDecodeError):
                print(f"fcnseg rank: error: {result}", file=sys.stderr)
                failed.append(path)
            else:
                yield path, result

    try:
        ranked = rank(results(), config, weights_identity(segmenter.weights))
    except ValueError as e:
        raise CLIError(f"{args.label_config}: {e}") from None
    if ranked:
        try:
            write_ranking(ranked, out, xml, args.image_url)
        except FileExistsError as e:
            raise CLIError(str(e)) from None
    if not args.quiet:
        print(f"fcnseg rank: {len(ranked)} images ranked, most doubtful first: {out / 'ranking.csv'}, "
              f"{out / 'tasks.json'} (Label Studio: Import), {out / 'label_config.xml'}", file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rank",
        help="order images by the model's doubt; write a CSV and Label Studio tasks with pre-annotations",
        description="Segment images and order them most doubtful first, by mean pixel entropy (each pixel's "
        "class distribution, divided by log K: 0 certain, 1 no idea). Writes OUT/ranking.csv, OUT/tasks.json "
        "(Label Studio tasks in that order, the model's masks attached as predictions: import them into a "
        "project) and OUT/label_config.xml (the labelling config the predictions are for). An earlier ranking in "
        "OUT is never replaced. Images that cannot be read are reported, the others ranked; the exit code is 1.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGES", help="image files, folders or globs; - reads a list")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for the ranking")
    add_model_arguments(p)
    add_size_argument(p)
    p.add_argument(
        "--label-config",
        metavar="FILE",
        help="the Label Studio project's labelling config (XML): regions for its <BrushLabels>/<PolygonLabels> on "
        '<Image value="$image">, labels matched to the model\'s classes by name (default: a brush label per class)',
    )
    p.add_argument(
        "--image-url",
        default="",
        metavar="PREFIX",
        help="put before each image's path in the tasks, for Label Studio to load it: e.g. '/data/local-files/?d=' "
        "with paths relative to its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, or an http(s) URL (default: none)",
    )
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--quiet", "--no-progress", action="store_true", help="print nothing but errors")
    p.set_defaults(func=_rank)
