"""``fcnseg rank``: images ordered by doubt, on a model whose doubt per image is known in closed form."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from checkpoints import THREE_CLASSES, write_checkpoint
from PIL import Image
from torch import nn

from fcnseg.predict import Segmenter
from fcnseg.rank import default_label_config, label_config, rank, write_ranking
from fcnseg.transforms import IMAGENET_MEAN, IMAGENET_STD

MEAN, STD = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)


class Brightness(nn.Module):
    """Two classes, logits ``(s, -s)`` with ``s`` the sum of the normalised channels: a grey whose normalised
    channels sum to 0 leaves the model without a clue (doubt 1); the further from it, the surer."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 2, 1, bias=False)
        self.head.weight.data = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]).view(2, 3, 1, 1)

    def forward(self, x):
        return {"out": self.head(x)}


def expected_doubt(grey: int) -> float:
    """The doubt of a uniform ``grey`` image: binary entropy of softmax((s, -s)) over log 2."""
    s = ((grey / 255 - MEAN) / STD).sum()
    p = 1 / (1 + np.exp(-2 * s))
    return float(-(p * np.log(p) + (1 - p) * np.log(1 - p)) / np.log(2))


def test_rank_orders_twenty_images_by_doubt(tmp_path):
    torch.manual_seed(0)
    segmenter = Segmenter(Brightness(), None, device="cpu", size="native", categories=["background", "thing"])
    greys = list(np.random.default_rng(0).permutation(np.linspace(60, 180, 20).round().astype(int)))
    paths = []
    for i, g in enumerate(greys):
        paths.append(tmp_path / f"{i:02d}.png")
        Image.new("RGB", (12, 8), (int(g),) * 3).save(paths[-1])
    xml, config = label_config(None, segmenter.categories)
    ranked = rank(segmenter.predict_paths(paths, confidence=True), config, "brightness-v1")
    truth = sorted(range(20), key=lambda i: -expected_doubt(greys[i]))
    assert [r.path.name for r in ranked] == [paths[i].name for i in truth]
    assert [r.doubt for r in ranked] == pytest.approx([expected_doubt(greys[i]) for i in truth], abs=1e-5)
    for r in ranked:
        assert r.prediction["score"] == pytest.approx(1 - r.doubt, abs=1e-5)
        assert r.prediction["model_version"] == "brightness-v1"

    write_ranking(ranked, tmp_path / "ranked", xml, "/data/local-files/?d=")
    rows = list(csv.DictReader((tmp_path / "ranked" / "ranking.csv").open()))
    assert [row["path"] for row in rows] == [r.path.as_posix() for r in ranked]
    tasks = json.loads((tmp_path / "ranked" / "tasks.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [f"/data/local-files/?d={r.path.as_posix()}" for r in ranked]
    assert [t["predictions"][0] for t in tasks] == [r.prediction for r in ranked]
    before = {p.name: p.read_bytes() for p in (tmp_path / "ranked").iterdir()}
    with pytest.raises(FileExistsError, match="earlier ranking"):
        write_ranking(ranked[:3], tmp_path / "ranked", xml)
    assert {p.name: p.read_bytes() for p in (tmp_path / "ranked").iterdir()} == before


def test_default_label_config_names_every_class_but_background():
    xml = default_label_config(["background", "car", 'a "quoted" <class>'])
    config = label_config(xml, ["background", "car", 'a "quoted" <class>'])[1]
    assert config.tools[0].labels == {1: "car", 2: 'a "quoted" <class>'} and config.unmatched == ()


def test_cli_ranks_the_good_images_and_names_the_bad(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "random3.pth", THREE_CLASSES)
    good = [tmp_path / "a.png", tmp_path / "b.png"]
    for i, p in enumerate(good):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(p)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "ranked"
    cmd = [sys.executable, "-m", "fcnseg", "rank", *map(str, [*good, bad]), "-o", str(out), "--weights",
           str(checkpoint), "--size", "32", "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [next(line for line in done.stderr.splitlines() if "broken.png" in line)]
    rows = list(csv.DictReader((out / "ranking.csv").open()))
    assert sorted(row["path"] for row in rows) == sorted(p.as_posix() for p in good)
    again = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=300)  # the same folder again
    assert again.returncode == 1 and "exists (an earlier ranking)" in again.stderr
    assert len(list(csv.DictReader((out / "ranking.csv").open()))) == 2
