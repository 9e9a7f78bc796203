"""``fcnseg train`` from the command line: a real run, its outputs, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shapes_data import write_shapes_dataset

from fcnseg.cli import main
from fcnseg.models import fcn_resnet50
from fcnseg.train import class_weights_from_masks

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("cli_shapes"), n_train=8, n_val=2, seed=3)


def test_help_lists_the_recipe_options():
    out = subprocess.run(
        [sys.executable, "-m", "fcnseg", "train", "--help"],
        env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0
    for option in ("--weights-backbone", "--num-classes", "--freeze-backbone", "--class-weights", "--resume", "--amp"):
        assert option in out.stdout


@pytest.mark.slow
def test_a_run_writes_checkpoints_log_and_class_weights(data, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "fcnseg", "train", "--data-root", str(data), "--weights-backbone", "none",
         "--epochs", "1", "-b", "4", "--base-size", "32", "--crop-size", "32", "--workers", "0",
         "--class-weights", "auto", "--amp", "bf16", "--channels-last", "--no-progress", "--output-dir", str(out)],
        env={**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # the linear lr scaling is said, with the numbers it came from
    assert "lr 0.0025 = 0.02 x global batch 4 / 32 (4 per process x 1 processes x 1 accumulation)" in proc.stdout
    assert f"best checkpoint: {out / 'best.pth'}" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["best.pth", "class_weights.txt", "last.pth", "log.jsonl"]

    masks = [np.asarray(Image.open(p)) for p in sorted((data / "train" / "masks").iterdir())]
    expected = class_weights_from_masks(masks, 3)
    written = torch.tensor([float(v) for v in (out / "class_weights.txt").read_text().split()])
    torch.testing.assert_close(written, expected, rtol=1e-5, atol=0)

    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert ckpt["config"]["amp"] == "bf16" and ckpt["config"]["channels_last"] is True
    assert ckpt["class_weights"] == pytest.approx(expected.tolist())
    assert ckpt["categories"] == ["background", "disc", "square"] and (ckpt["epoch"], ckpt["step"]) == (1, 2)
    fcn_resnet50(weights=out / "last.pth")  # trained in channels_last, loads into a plain model
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "train", "val"]  # train: every 10 steps and at epoch end
    assert all(np.isfinite(r["loss"]) for r in records if r["event"] == "train")

    # resuming a finished run has nothing left to do and leaves the checkpoint as it was
    before = (out / "last.pth").read_bytes()
    assert main(["train", "--resume", str(out / "last.pth"), "--no-progress"]) == 0
    assert (out / "last.pth").read_bytes() == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "coco"], "no COCO annotations for split 'train' (looked for annotations/instances_train2017"),
        (["--amp", "fp16"], "fp16 autocast needs CUDA; use amp=bf16 on CPU"),
        (["--num-classes", "4"], "num_classes=4 but the dataset lists 3 classes"),
        (["--weights-backbone", "IMAGENET9"], "Unknown weights 'IMAGENET9' for ResNet50_Weights"),
        (["--weights-backbone", "DEFAULT"], "resnet50-0676ba61.pth are not cached"),
        (["--weights", "missing.pth"], "missing.pth: no such checkpoint file"),
        (["--class-weights", "{bad}"], "bad.txt: expected 3 finite non-negative class weights, got 2 values"),
        (["--batch-size", "9"], "8 training images cannot fill one step of 9 x 1 processes x 1 accumulation"),
    ],
)
def test_bad_input_fails_with_one_line_and_writes_nothing(data, tmp_path, capsys, argv, message):
    (tmp_path / "bad.txt").write_text("1.0 2.0\n")
    argv = [a.replace("{bad}", str(tmp_path / "bad.txt")) for a in argv]
    out = tmp_path / "out"
    code = main(["train", "--dataset", "folder", "--data-root", str(data), "-o", str(out), "--quiet", "--workers", "0",
                 "--weights-backbone", "none", *argv])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("fcnseg train: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not out.exists()


def test_missing_inputs_are_named(tmp_path, capsys):
    assert main(["train"]) == 1
    assert "--data-root is required" in capsys.readouterr().err
    assert main(["train", "--data-root", str(tmp_path / "nowhere")]) == 1
    assert f"{tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err
    assert main(["train", "--dataset", "folder", "--data-root", str(tmp_path / "nowhere")]) == 1
    assert f"{tmp_path / 'nowhere' / 'classes.txt'}: missing" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "last.pth")]) == 1
    assert "last.pth: no such checkpoint to resume from" in capsys.readouterr().err


# The training run of the test below, with the signal sent to the process by its own loss in the first step of
# the second epoch (step 3 of 2 steps an epoch): a step that is no epoch's end, whatever the machine's speed
_SIGNAL_IN_STEP_3 = """
import signal, sys
from fcnseg.train import loop
from fcnseg.cli import main
real, calls = loop.criterion, []
def criterion(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        signal.raise_signal(int(sys.argv[1]))
    return real(*args, **kwargs)
loop.criterion = criterion
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_the_current_step_and_says_how_to_resume(data, tmp_path, sig):
    """Ctrl-C (SIGINT) or SIGTERM: the step in progress is saved to last.pth and the resume command printed.

    The signal lands in step 3, the first of epoch 2 (2 steps an epoch), where no epoch-end save happens: the step
    saved must be the one the message names, 3, which only the save at the signal gives (a signal sent from the
    test at some moment would land on an epoch's end half the time, where the epoch's own save hides its absence).
    """
    out = tmp_path / "run"
    argv = ["train", "--data-root", str(data), "--output-dir", str(out), "--weights-backbone", "none", "--epochs",
            "10000", "-b", "4", "--base-size", "32", "--crop-size", "32", "--workers", "0", "--no-val",
            "--no-progress"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _SIGNAL_IN_STEP_3, str(int(sig)), *argv], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    err = proc.stderr
    assert proc.returncode == 128 + sig, err
    last = out / "last.pth"
    stopped = re.search(
        rf"^fcnseg train: stopped by {sig.name} at step (\d+), saved; continue with --resume (.+)$", err, re.M
    )
    assert stopped and stopped[2] == str(last), err
    # acknowledged at once, before the step (if one had begun) and its save finished
    again = "Ctrl-C" if sig == signal.SIGINT else sig.name
    ack = re.search(rf"^stopping (now|after this step, about \d+ s); {again} again stops without saving$", err, re.M)
    assert ack and ack.start() < stopped.start(), err
    assert int(stopped[1]) == 3
    ckpt = torch.load(last, weights_only=True)
    assert (ckpt["step"], ckpt["samples"], ckpt["epoch"]) == (3, 12, 1)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "stop" and records[-1]["step"] == 3
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 1  # one line per finished epoch
    assert sorted(p.name for p in out.iterdir()) == ["last.pth", "log.jsonl"]  # no half-written file left
