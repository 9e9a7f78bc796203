from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from fcnseg.cli import main
from fcnseg.weights import FCN_ResNet50_Weights, sha256_file


def test_help_explains_every_command():
    out = subprocess.run([sys.executable, "-m", "fcnseg", "--help"], capture_output=True, text=True, check=True).stdout
    assert "models" in out and "weights" in out


def test_models_lists_metrics_and_cache_state(capsys, torch_home):
    assert main(["models", "--json"]) == 0
    rows = {r["weights"]: r for r in json.loads(capsys.readouterr().out)}
    r50 = rows["FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1"]
    assert r50["metrics"] == {"miou": 60.5, "pixel_acc": 91.4} and r50["cached"] is False
    assert main(["models"]) == 0
    assert "fcn_resnet50_coco" not in capsys.readouterr().err


def test_download_offline_is_one_line_and_nonzero(capsys):
    assert main(["weights", "download", "fcn_resnet50", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fcn_resnet50_coco-1167a1af.pth" in err and "Traceback" not in err


def test_import_checks_the_hash_then_verify_passes(tmp_path, capsys, torch_home):
    blob = tmp_path / "x.pth"
    torch.save({"w": torch.zeros(3)}, blob)
    assert main(["weights", "import", str(blob)]) == 1  # matches no official file
    assert "matches no official checkpoint" in capsys.readouterr().err

    # a file whose hash does match: pretend the registry expects this file's digest
    digest = sha256_file(blob)
    w = FCN_ResNet50_Weights.DEFAULT
    mp = pytest.MonkeyPatch()
    mp.setattr(w.value, "url", f"https://example.invalid/fcn_resnet50_coco-{digest[:8]}.pth")
    try:
        assert main(["weights", "import", str(blob)]) == 0
        assert w.cache_path.is_file() and sha256_file(w.cache_path) == digest
        assert main(["weights", "verify", "fcn_resnet50"]) == 0
        assert "ok" in capsys.readouterr().out
        w.cache_path.write_bytes(b"tampered")
        assert main(["weights", "verify", "fcn_resnet50"]) == 1
    finally:
        mp.undo()
