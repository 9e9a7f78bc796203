"""Everyday manners of the commands (issue 31): random weights never pass for results, a checkpoint builds the model
it records, and the small things a first user trips over."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoints import THREE_CLASSES, write_checkpoint
from imagefiles import photo
from PIL import Image

from fcnseg.cli import main
from fcnseg.models import fcn_resnet101


def run_segment(out: Path, image: Path, *more: str) -> int:
    return main(["segment", str(image), "-o", str(out), "--size", "32", "--quiet", "--save", "mask,overlay,json",
                 *more])  # fmt: skip


def summary_row(out: Path) -> dict:
    (row,) = csv.DictReader((out / "summary.csv").open())
    return row


def top_band(path: Path, rows: int) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))[:rows]


def test_random_weights_say_so_in_every_output_and_are_never_done_before(tmp_path, checkpoint, capsys):
    """``--weights none``: the summary row, the per-image JSON, a band across the overlay and the final line say
    the weights are random; a rerun segments again (another random init), where a checkpoint's rerun skips."""
    image = tmp_path / "cat.png"
    photo(48, 64, seed=1).save(image)
    out = tmp_path / "random"
    for _ in range(2):
        assert run_segment(out, image, "--weights", "none") == 0
        last = capsys.readouterr().out.strip().splitlines()[-1]
        assert "1 segmented, 0 failed, 0 skipped" in last and "RANDOM WEIGHTS" in last
        row = summary_row(out)
        assert row["status"] == "ok" and row["weights"].startswith("none (random init")
        assert json.loads((out / "cat.json").read_text())["random_weights"] is True
        band = top_band(out / "cat_overlay.jpg", 10)  # max(10, 48 // 12) rows
        assert np.median(band) < 30 and band.max() > 200  # black, with white letters

    mine = tmp_path / "mine"
    for done in (0, 1):
        assert run_segment(mine, image, "--weights", str(checkpoint)) == 0
        assert f"{1 - done} segmented, 0 failed, {done} skipped" in capsys.readouterr().out
    row = summary_row(mine)
    assert json.loads((mine / "cat.json").read_text())["random_weights"] is False
    assert row["weights"] == str(checkpoint)
    assert np.median(top_band(mine / "cat_overlay.jpg", 10)) > 30  # the overlay as it is: no band
