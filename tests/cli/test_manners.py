"""Everyday manners of the commands (issue 31): random weights never pass for results, a checkpoint builds the model
it records, and the small things a first user trips over."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoints import THREE_CLASSES
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


def test_a_clip_with_random_weights_has_the_band_on_every_overlay_frame(tmp_path, capsys):
    pytest.importorskip("av", reason="video needs PyAV")
    from videoclips import decoded, write_clip

    clip = tmp_path / "walk.mp4"
    write_clip(clip, frames=3, size=(48, 64))
    out = tmp_path / "out"
    assert main(["segment", str(clip), "-o", str(out), "--size", "32", "--quiet", "--weights", "none",
                 "--max-frames", "3"]) == 0  # fmt: skip
    frames = [rgb for _, rgb in decoded(out / "walk_overlay.mp4")]
    assert len(frames) == 3
    for rgb in frames:
        band = rgb[:10].mean(-1)  # H.264 blurs the letters a little: black with bright strokes
        assert np.median(band) < 40 and band.max() > 180
    assert "RANDOM WEIGHTS" in capsys.readouterr().out.strip().splitlines()[-1]


# -- a checkpoint builds the model it records ----------------------------------------------------------------------


def fake_checkpoint(path: Path, model: str | None, state_dict: dict | None = None) -> Path:
    """A checkpoint that records ``model`` (a training run's config); the tensors are a stand-in (no model is
    built from it in these tests)."""
    torch.save({"model": state_dict or {"classifier.4.weight": torch.zeros(3, 512, 1, 1)},
                "config": {"model": model}, "categories": THREE_CLASSES}, path)  # fmt: skip
    return path


def test_the_model_comes_from_the_checkpoint(tmp_path):
    from fcnseg.models import model_for
    from fcnseg.weights import WeightsError

    deep = fake_checkpoint(tmp_path / "deep.pth", "fcn_resnet101")
    assert model_for(None, str(deep)) == "fcn_resnet101" and model_for("fcn_resnet101", deep) == "fcn_resnet101"
    assert model_for(None, "DEFAULT") == "fcn_resnet50" and model_for("fcn_resnet101", None) == "fcn_resnet101"
    with pytest.raises(WeightsError, match=f"^{deep} holds an fcn_resnet101 model, but fcn_resnet50 was asked for"):
        model_for("fcn_resnet50", str(deep))
    bare = tmp_path / "bare.pth"  # a bare state dict records nothing: its keys show the depth of layer3
    torch.save({"backbone.layer3.6.conv1.weight": torch.zeros(1), "classifier.4.weight": torch.zeros(2)}, bare)
    assert model_for(None, bare) == "fcn_resnet101"


def test_a_different_model_flag_is_one_line_naming_both(tmp_path, checkpoint, capsys):
    deep = fake_checkpoint(tmp_path / "deep.pth", "fcn_resnet101")
    image = tmp_path / "cat.png"
    photo(20, 20).save(image)
    assert run_segment(tmp_path / "out", image, "--weights", str(deep), "--model", "fcn_resnet50") == 1
    err = capsys.readouterr().err
    assert err == (f"fcnseg segment: error: {deep} holds an fcn_resnet101 model, but fcn_resnet50 was asked for: "
                   "leave the model name (--model) out to build the one it holds, or name fcn_resnet101\n")  # fmt: skip
    assert not (tmp_path / "out").exists()
    # the random3 checkpoint records no model; its keys say fcn_resnet50
    assert main(["serve", "--weights", str(checkpoint), "--model", "fcn_resnet101", "--port", "0"]) == 1
    assert "holds an fcn_resnet50 model, but fcn_resnet101 was asked for" in capsys.readouterr().err


def test_a_checkpoint_that_does_not_fit_is_one_line(tmp_path, checkpoint, capsys):
    """Keys missing and shapes that differ: counts and the first of each, not torch's list of every key."""
    state = torch.load(checkpoint, weights_only=True)
    del state["model"]["backbone.layer1.0.conv1.weight"]
    state["model"]["classifier.0.weight"] = torch.zeros(512, 2048, 1, 1)
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    image = tmp_path / "cat.png"
    photo(20, 20).save(image)
    assert run_segment(tmp_path / "out", image, "--weights", str(broken)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 400, err
    assert err.startswith(f"fcnseg segment: error: {broken}: does not fit this model: 1 of the model's ")
    assert "missing (first: backbone.layer1.0.conv1.weight)" in err
    assert "1 of another shape (first: classifier.0.weight, (512, 2048, 1, 1) in the file, (512, 2048, 3, 3)" in err


def test_importing_ones_own_checkpoint_points_to_weights(checkpoint, capsys):
    assert main(["weights", "import", str(checkpoint)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith(f"needs no import: pass it as --weights {checkpoint}")


@pytest.mark.slow
def test_a_resnet101_checkpoint_runs_without_naming_the_model(tmp_path, capsys):
    """The real thing: an FCN-ResNet101 checkpoint that records its model is built as one (216 MB written)."""

    torch.manual_seed(0)
    path = tmp_path / "deep.pth"
    torch.save({"model": fcn_resnet101(num_classes=3, aux_loss=False).state_dict(), "model_name": "fcn_resnet101",
                "categories": THREE_CLASSES}, path)  # fmt: skip
    image = tmp_path / "cat.png"
    photo(20, 20).save(image)
    assert run_segment(tmp_path / "out", image, "--weights", str(path)) == 0
    assert json.loads((tmp_path / "out" / "cat.json").read_text())["model"] == "fcn_resnet101"


# -- the small things -----------------------------------------------------------------------------------------------


def test_a_mid_epoch_checkpoint_is_described_by_epoch_and_step(tmp_path):
    """A fault's message says which checkpoint survived: step 7 is in epoch 3 when an epoch has 3 steps."""
    from fcnseg.cli.train import _after_fault

    last = tmp_path / "last.pth"
    for saved, said in [({"epoch": 2, "step": 7, "steps_per_epoch": 3}, "last.pth from epoch 3, step 7 is intact"),
                        ({"epoch": 2, "step": 6, "steps_per_epoch": 3}, "last.pth from epoch 2 is intact"),
                        ({"epoch": 2, "step": 7}, "last.pth from step 7 (2 epochs finished) is intact")]:  # fmt: skip
        torch.save(saved, last)
        assert _after_fault(tmp_path)["kept"] == said


def subcommand_help(*names: str) -> str:
    from fcnseg.cli import build_parser

    parser = build_parser()
    for name in names:
        parser = next(a for a in parser._actions if a.dest in ("command", "action")).choices[name]
    return " ".join(parser.format_help().split())  # argparse's line breaks undone


def test_help_says_what_each_thing_does(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside words (argparse breaks at hyphens)
    assert "List the models and their official weights" in subcommand_help("models")
    export = subcommand_help("export")
    assert "--format {onnx,torchscript} onnx (default: ONNX Runtime" in export and "torchscript (a .pt" in export
    segment = subcommand_help("segment")
    assert "the outputs chosen with --save (by default a palette PNG mask" in segment
    assert "write, per input, a palette PNG mask" not in segment  # --save json alone writes none
    assert "mask-frames: for a video" in segment
