"""Rank images by the model's doubt: the ones a labeller should see first, with the model's guess attached.

The measure is :meth:`fcnseg.results.SegmentationResult.doubt`, the mean over pixels of each pixel's entropy
divided by ``log K``: 0 when the model is certain of every pixel, 1 when it has no idea. Entropy weighs the whole
class distribution (where least-confidence sees only the winner and margin only the top two), and its mean does not
favour large images, so the images where a correction teaches the model most come first.

The output is what Label Studio imports: a tasks JSON, most doubtful first, each task with the model's prediction
as pre-annotation (the same regions and scores ``fcnseg serve`` answers Label Studio with, so its *prediction score*
ordering agrees), and a CSV of the ranking.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._atomic import atomic_path
from .labelstudio import LabelConfig, parse_label_config, prediction

__all__ = ["RANK_FILES", "Ranked", "default_label_config", "label_config", "rank", "write_ranking"]

RANK_FILES = ("ranking.csv", "tasks.json", "label_config.xml")
DATA_KEY = "image"


@dataclass(frozen=True)
class Ranked:
    """One image: where it is, how doubtful the model is of it, and its prediction for Label Studio."""

    path: Path
    doubt: float
    prediction: dict[str, Any]


def default_label_config(categories: list[str]) -> str:
    """A Label Studio labelling config with a brush label per class (background excluded), for a new project."""
    from xml.sax.saxutils import quoteattr

    labels = "\n".join(f"    <Label value={quoteattr(name)}/>" for name in categories[1:])
    return (
        "<View>\n"
        f'  <Image name="image" value="${DATA_KEY}" zoom="true"/>\n'
        f'  <BrushLabels name="label" toName="image">\n{labels}\n  </BrushLabels>\n'
        "</View>\n"
    )


def rank(results: Iterable[tuple[Path, Any]], config: LabelConfig, model_version: str) -> list[Ranked]:
    """``(path, result)`` pairs (results computed with ``confidence=True``), most doubtful first; ties keep the
    input order. Each result becomes its prediction at once, so only the regions stay in memory."""
    if config.data_keys != [DATA_KEY]:
        raise ValueError(f'the labelling config\'s tools must label one image with value="${DATA_KEY}"')
    ranked = [Ranked(path, r.doubt(), prediction(config, {DATA_KEY: r}, model_version)) for path, r in results]
    return sorted(ranked, key=lambda item: -item.doubt)


def write_ranking(ranked: list[Ranked], out: Path, config_xml: str, image_url: str = "") -> None:
    """``out/ranking.csv``, ``out/tasks.json`` (task ``data.image`` = ``image_url`` + the image's path) and
    ``out/label_config.xml`` (the config the regions are for: a project's *Labeling Interface*), all written before
    any is renamed into place. ``FileExistsError`` if one exists: an earlier ranking is never replaced."""
    for name in RANK_FILES:
        if (out / name).exists():
            raise FileExistsError(f"{out / name} exists (an earlier ranking); choose another output folder")
    tasks = [
        {"data": {DATA_KEY: image_url + item.path.as_posix(), "fcnseg_rank": i, "fcnseg_doubt": round(item.doubt, 6)},
         "predictions": [item.prediction]}
        for i, item in enumerate(ranked, start=1)
    ]  # fmt: skip
    with (
        atomic_path(out / "ranking.csv") as ranking,
        atomic_path(out / "tasks.json") as tasks_file,
        atomic_path(out / "label_config.xml") as config_file,
    ):
        config_file.write_text(config_xml)
        tasks_file.write_text(json.dumps(tasks))
        with ranking.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["rank", "path", "doubt", "score"])
            for i, item in enumerate(ranked, start=1):
                writer.writerow([i, item.path.as_posix(), f"{item.doubt:.6f}", item.prediction["score"]])


def label_config(text: str | None, categories: list[str]) -> tuple[str, LabelConfig]:
    """The config to use (``text``, or :func:`default_label_config`) and its parsed form."""
    xml = text if text is not None else default_label_config(categories)
    return xml, parse_label_config(xml, categories)
