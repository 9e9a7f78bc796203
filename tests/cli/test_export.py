"""``fcnseg export`` end to end: checkpoint in, file with metadata out, parity printed, failures clean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoints import write_checkpoint

from fcnseg import export
from fcnseg.cli import main
from fcnseg.export import ParityReport, read_metadata
from fcnseg.models import fcn_resnet50

SRC = Path(__file__).resolve().parents[2] / "src"
CATEGORIES = ["background", "person", "bike"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth", CATEGORIES)


def test_torchscript_export_prints_parity(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.pt"
    rc = main(["export", "--weights", str(checkpoint), "--format", "torchscript", "-o", str(out),
               "--check-sizes", "32x40", "--threads", "2"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "TorchScript (torch.jit.load) vs PyTorch eager" in text and "parity ok on 2 shapes" in text
    assert text.count(" ok\n") == 2 and "1x3x32x40" in text and "2x3x32x40" in text
    meta = read_metadata(out)
    assert meta["categories"] == CATEGORIES and meta["weights"] == str(checkpoint)
    assert meta["model"] == "fcn_resnet50"


@pytest.mark.slow
def test_onnx_export_subprocess_uint8_argmax(checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    # --size native: compared below with the model run on the input as it is
    cmd = [sys.executable, "-m", "fcnseg", "export", "--weights", str(checkpoint), "-o", str(out), "--size", "native",
           "--with-preprocessing", "--argmax", "--check-sizes", "40x48", "--threads", "2"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "ONNX Runtime (CPU) vs PyTorch eager" in proc.stdout and "parity ok on 2 shapes" in proc.stdout
    assert "uint8 (N, H, W, 3) RGB 0..255 -> uint8 (N, H, W) class indices" in proc.stdout
    meta = read_metadata(out)
    assert meta["preprocessing"] == "nhwc" and meta["argmax"] is True and meta["categories"] == CATEGORIES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no .data side file, no temp left

    # the file against the checkpoint's model, with normalization done by hand (independent of fcnseg.transforms)
    import onnxruntime as ort

    model = fcn_resnet50(weights=str(checkpoint), aux_loss=False).eval()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)" and session.get_outputs()[0].type == "tensor(uint8)"
    for n, h, w in [(1, 40, 56), (2, 33, 47)]:
        rgb = np.random.default_rng(h).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        x = (rgb.astype(np.float32) / 255 - np.array(meta["mean"], np.float32)) / np.array(meta["std"], np.float32)
        with torch.inference_mode():
            logits = model(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())["out"]
        mask = session.run(None, {"image": rgb})[0]
        assert mask.dtype == np.uint8 and mask.shape == (n, h, w)
        top2 = logits.topk(2, dim=1).values
        decisive = (top2[:, 0] - top2[:, 1] > 1e-3).numpy()  # pixels where float noise cannot flip the class
        assert decisive.mean() > 0.99
        assert np.array_equal(mask[decisive], logits.argmax(1).numpy()[decisive])


@pytest.mark.slow
def test_parity_failure_keeps_the_previous_file_whatever_its_name(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.txt"  # not .onnx: --format picks the runtime the check uses, not the file name
    out.write_bytes(b"the previous good export")
    # tolerance 0: ONNX Runtime's float rounding differs from PyTorch's in the last bits, so the check must fail
    rc = main(["export", "--weights", str(checkpoint), "-o", str(out), "--check-sizes", "24x32", "--rtol", "0"])
    captured = capsys.readouterr()
    assert rc == 1 and "FAIL" in captured.out and "ONNX Runtime (CPU)" in captured.out
    assert captured.err.strip().count("\n") == 0 and "parity check failed on" in captured.err
    assert "the previous file is kept" in captured.err
    assert list(tmp_path.iterdir()) == [out] and out.read_bytes() == b"the previous good export"


def failing_report(*args, **kwargs) -> list[ParityReport]:
    return [ParityReport((1, 3, 8, 8), 1.0, 0.5, 7, 1e-4, ok=False)]


def crashing_check(*args, **kwargs) -> list[ParityReport]:
    raise RuntimeError("the runtime crashed")


@pytest.mark.parametrize("check", [failing_report, crashing_check])
def test_a_failed_check_leaves_the_previous_file_untouched(checkpoint, tmp_path, monkeypatch, check):
    out = tmp_path / "model.pt"
    out.write_bytes(b"the previous good export")
    monkeypatch.setattr(export, "check_parity", check)
    args = ["export", "--weights", str(checkpoint), "--format", "torchscript", "-o", str(out), "--check-sizes", "8x8"]
    if check is crashing_check:
        with pytest.raises(RuntimeError, match="crashed"):
            main(args)
    else:
        assert main(args) == 1
    assert list(tmp_path.iterdir()) == [out] and out.read_bytes() == b"the previous good export"


def test_the_check_runs_the_format_written_not_the_one_named(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.onnx"  # holds TorchScript: the check and read_metadata must still load it as such
    rc = main(["export", "--weights", str(checkpoint), "--format", "torchscript", "-o", str(out),
               "--check-sizes", "16x16", "--threads", "2"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert "parity ok on 2 shapes" in capsys.readouterr().out
    assert read_metadata(out)["format"] == "torchscript"


def test_missing_checkpoint_one_line_error(tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", "--weights", str(tmp_path / "nope.pth"), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.pth" in err and err.startswith("fcnseg export: error:")
    assert not out.exists()


@pytest.mark.parametrize(
    "bad",
    [["--check-sizes", "64"], ["--check-sizes", "0x5"], ["--format", "tflite"], ["--rtol=-0.5"],
     ["--rtol", "nan"], ["--rtol", "inf"], ["--rtol", "x"]],
)  # fmt: skip
def test_bad_arguments(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", "-o", str(tmp_path / "m.onnx"), *bad])
    assert e.value.code == 2


def test_help_lists_options(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = capsys.readouterr().out
    for flag in ("--with-preprocessing", "--argmax", "--opset", "--check-sizes", "--format"):
        assert flag in text
