"""``fcnseg eval`` end to end: JSON and table and plot, categories from the checkpoint, native, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoints import write_checkpoint
from PIL import Image
from seg_datasets import make_coco, make_folder

from fcnseg.cli import main
from fcnseg.models import fcn_resnet50

SRC = Path(__file__).resolve().parents[2] / "src"
NAMES = [f"class{i:02d}" for i in range(21)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 'fine-tuned' checkpoint: random weights, a model entry and its own category names."""
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "finetuned.pth", NAMES)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    return root, make_coco(root)


def _eval(args, tmp_path, name="r"):
    out = tmp_path / f"{name}.json"
    rc = main(["eval", *map(str, args), "--output", str(out), "--workers", "0", "--no-progress"])
    return rc, out


@pytest.mark.slow
def test_json_table_and_plot(coco, checkpoint, tmp_path, capsys):
    root, _ = coco
    args = ["--dataset", "coco", "--data-root", root, "--weights", checkpoint, "--size", 32, "--batch-size", 2]
    rc, out = _eval(args, tmp_path)
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["categories"] == NAMES and r["num_images"] == 7 and r["split"] == "val"
    mat = np.array(r["confusion_matrix"], dtype=np.float64)
    tp, gt, pr = np.diag(mat), mat.sum(1), mat.sum(0)
    present = (gt + pr) > 0
    assert [v is None for v in r["iou"]] == list(~present)
    assert [v for v in r["iou"] if v is not None] == pytest.approx(list(100 * tp[present] / (gt + pr - tp)[present]))
    assert r["miou"] == pytest.approx(100 * np.mean(tp[present] / (gt + pr - tp)[present]))
    assert r["pixel_acc"] == pytest.approx(100 * tp.sum() / mat.sum())
    assert r["absent_classes"] == [n for n, p in zip(NAMES, present, strict=True) if not p] != []
    for key in ("mean_acc", "fwiou", "mean_dice", "dice", "acc", "images_per_s", "units"):
        assert key in r
    table = capsys.readouterr().out
    assert "mean IoU" in table and "global pixelwise acc" in table and f"{r['miou']:.1f}" in table
    assert all(n in table for n in NAMES) and "left out of the means" in table
    with Image.open(tmp_path / "r.png") as png:
        assert png.format == "PNG" and png.width > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.png"]  # no temporary files left


@pytest.mark.slow
def test_native_scores_the_original_masks(coco, checkpoint, tmp_path):
    """--native: the model sees the resized image, the scores count every pixel of the original masks."""
    root, expected = coco
    args = ["--dataset", "coco", "--data-root", root, "--weights", checkpoint, "--size", 24, "--no-plot"]
    rc, out = _eval([*args, "--native", "--limit", 3], tmp_path)
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["native"] is True and r["num_images"] == 3
    assert r["pixels"] == sum(int((expected[i] != 255).sum()) for i in (1, 2, 3))


@pytest.mark.slow
def test_names_come_from_the_dataset_when_the_checkpoint_has_none(tmp_path):
    classes = ["road", "car", "tree", "sky"]
    make_folder(tmp_path / "f", classes, {"val": [(12, 16), (12, 16)]})
    bare = tmp_path / "bare.pth"
    torch.save(fcn_resnet50(num_classes=4, aux_loss=False).state_dict(), bare)  # a bare state dict: no names
    args = ["--dataset", "folder", "--data-root", tmp_path / "f", "--weights", bare, "--size", 12, "--no-plot"]
    rc, out = _eval(args, tmp_path)
    r = json.loads(out.read_text())
    assert rc == 0 and r["categories"] == classes and r["num_images"] == 2


def test_errors_are_one_line(checkpoint, tmp_path, capsys):
    make_folder(tmp_path / "f", ["bg", "a", "b"], {"val": [(10, 10)]})
    assert main(["eval", "--dataset", "folder", "--data-root", str(tmp_path / "f"), "--weights", str(checkpoint)]) == 1
    err = capsys.readouterr().err.strip()
    assert "predicts 21 classes but the folder dataset" in err and "\n" not in err
    assert main(["eval", "--dataset", "voc", "--data-root", str(tmp_path / "none"), "--weights", "none"]) == 1
    assert "no VOCdevkit" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def _run_cli(args: list[str], nproc: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc > 1 else []
    cmd = [sys.executable, *launcher, "-m", "fcnseg", "eval", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_processes_equal_one(coco, checkpoint, tmp_path):
    """torchrun with 2 gloo ranks: each image scored once (5 images: 3 + 2), matrix identical to one process."""
    root, _ = coco
    args = ["--dataset", "coco", "--data-root", str(root), "--weights", str(checkpoint), "--size", "24", "--limit", "5",
            "--batch-size", "2", "--workers", "0", "--no-plot", "--no-progress", "--device", "cpu"]  # fmt: skip
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    p1 = _run_cli([*args, "--output", str(one)], 1)
    assert p1.returncode == 0, p1.stderr
    p2 = _run_cli([*args, "--output", str(two)], 2)
    assert p2.returncode == 0, p2.stderr
    r1, r2 = json.loads(one.read_text()), json.loads(two.read_text())
    assert r2["world_size"] == 2 and r1["world_size"] == 1
    assert r1["confusion_matrix"] == r2["confusion_matrix"] and r1["num_images"] == r2["num_images"] == 5
    assert r1["miou"] == r2["miou"]
    assert p2.stdout.count("mean IoU") == 1  # only rank 0 reports


def test_size_follows_a_training_checkpoint(tmp_path, checkpoint):
    from fcnseg.models import load_weights

    ckpt = torch.load(checkpoint, weights_only=True)
    trained = tmp_path / "trained.pth"
    torch.save({**ckpt, "config": {"base_size": 96, "crop_size": 80}}, trained)
    loaded = load_weights("fcn_resnet50", str(trained))
    assert (loaded.size, loaded.size_reason) == (96, f"the size {trained} was validated at in training, its base_size")
    assert load_weights("fcn_resnet50", str(checkpoint)).size == 520  # no config: the official weights' size


def test_output_json_without_matplotlib_skips_the_plot(coco, checkpoint, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    root, _ = coco
    rc, out = _eval(["--dataset", "coco", "--data-root", root, "--weights", checkpoint, "--size", 16, "--limit", 1],
                    tmp_path)  # fmt: skip
    assert rc == 0 and json.loads(out.read_text())["num_images"] == 1
    err = capsys.readouterr().err
    assert "matplotlib is not installed; no confusion-matrix plot" in err
    assert "preprocessing: shorter side resized to 16 (as asked)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    assert main(["eval", "--dataset", "coco", "--data-root", str(root), "--weights", str(checkpoint),
                 "--plot", str(tmp_path / "p.png")]) == 1  # fmt: skip
    assert "the confusion-matrix plot needs matplotlib" in capsys.readouterr().err
