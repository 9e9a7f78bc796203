"""A newcomer's first minutes, offline: the README's first command says what to do next, the offline path it
suggests works, and the README's onnxruntime snippet runs on a file ``fcnseg export`` wrote."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcnseg.cli import main
from fcnseg.models import fcn_resnet50
from fcnseg.predict import Segmenter

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_block(section: str, language: str, containing: str) -> str:
    """The first ``language`` code block of README section ``section`` that contains ``containing``."""
    text = README.read_text()
    body = text.split(f"\n## {section}", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(rf"```{language}\n(.*?)```", body, flags=re.S)
    return next(b for b in blocks if containing in b)


def test_first_command_offline_tells_the_next_step_which_works(tmp_path, capsys):
    out = tmp_path / "example-out"
    assert main(["segment", "--example", "-o", str(out)]) == 1  # FCNSEG_OFFLINE=1 and an empty cache (conftest)
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0  # one line
    assert "fcnseg weights import FILE" in err and "--weights none" in err and "fcnseg train" in err
    # the path it suggests, as the Quick start writes it (at a small size to keep the test quick)
    line = _readme_block("Quick start", "bash", "--weights none").splitlines()[1]
    argv = line.split()[1:]
    assert argv == ["segment", "--example", "--weights", "none", "-o", "demo/"]
    assert main([*argv[:-1], str(tmp_path / "demo"), "--size", "64", "--quiet"]) == 0
    assert (
        Image.open(tmp_path / "demo" / "astronaut_mask.png").size
        == Image.open(Path(__import__("fcnseg").__file__).parent / "assets" / "astronaut.jpg").size
    )


@pytest.mark.slow
def test_readme_onnxruntime_snippet_runs_on_an_exported_file(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    checkpoint = tmp_path / "best.pth"
    model = fcn_resnet50(num_classes=3, aux_loss=False)
    torch.save({"model": model.state_dict(), "categories": ["bg", "a", "b"], "config": {"base_size": 40}}, checkpoint)
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(small).resize((75, 52), Image.BILINEAR).save(tmp_path / "photo.jpg", quality=95)
    argv = ["export", "--weights", str(checkpoint), "--output", str(tmp_path / "fcn_u8.onnx"),
            "--with-preprocessing", "--argmax", "--check-sizes", "40x48", "--threads", "2"]  # fmt: skip
    assert main(argv) == 0
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    exec(compile(_readme_block("Export", "python", "onnxruntime"), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("40 [")  # the size the checkpoint records, read from the metadata
    mask = np.asarray(Image.open(tmp_path / "mask.png"))
    expected = Segmenter("fcn_resnet50", checkpoint, device="cpu").predict(tmp_path / "photo.jpg").mask
    assert mask.shape == expected.shape == (52, 75)
    assert (mask == expected).mean() > 0.99  # random weights: near-tie pixels may flip between runtimes
