"""A model fine-tuned at a small size gives the same masks from ``segment``, ``serve``, ``Segmenter`` and the
exported ONNX file as ``eval`` scores: every command runs it at the size its checkpoint records.

The model: FCN-ResNet50 (random backbone) whose last layer is fitted, as a linear probe, to the generated shapes
dataset at 48 px (tens of seconds on a CPU, where training all of FCN would take hours), saved in the format the
training code writes (``format``/``version``, ``model``, ``config`` with ``base_size``, ``categories``).
"""

from __future__ import annotations

import copy
import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from shapes_data import CLASSES, write_shapes_dataset
from waiting import wait_until

from fcnseg.cli import build_parser, main
from fcnseg.models import fcn_resnet50
from fcnseg.predict import Segmenter
from fcnseg.train import TrainConfig
from fcnseg.transforms import SemanticSegmentation
from fcnseg.weights import CHECKPOINT_FORMAT, CHECKPOINT_VERSION

SIZE = 48  # the size the model is fine-tuned and validated at


def _probe(model: torch.nn.Module, images: list[Image.Image], masks: list[np.ndarray]) -> torch.nn.Module:
    """``model`` with its last 1x1 conv fitted to (image, mask) pairs seen at ``SIZE``, the rest frozen."""
    preset = SemanticSegmentation(resize_size=SIZE)
    head = torch.nn.Sequential(*list(model.classifier)[:-1])
    probe = copy.deepcopy(model.classifier[-1]).requires_grad_(True)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
    with torch.no_grad():
        features = [head(model.backbone(preset(im)[None])["layer4"]) for im in images]  # (1, 512, h/8, w/8)
    targets = [torch.from_numpy(m.astype(np.int64))[None] for m in masks]
    for _ in range(60):
        loss = sum(
            F.cross_entropy(F.interpolate(probe(f), size=t.shape[-2:], mode="bilinear", align_corners=False), t)
            for f, t in zip(features, targets, strict=True)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tuned = copy.deepcopy(model).eval()
    tuned.classifier[-1].load_state_dict(probe.state_dict())
    return tuned


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory) -> tuple[Path, Path]:
    """(a checkpoint fine-tuned at ``SIZE`` in the training code's format, the shapes dataset root)."""
    root = write_shapes_dataset(tmp_path_factory.mktemp("shapes"), n_train=6, n_val=3)
    train = sorted((root / "train" / "images").iterdir())
    images = [Image.open(p).convert("RGB") for p in train]
    masks = [np.asarray(Image.open(root / "train" / "masks" / p.name)) for p in train]
    torch.manual_seed(0)
    model = _probe(fcn_resnet50(num_classes=len(CLASSES), aux_loss=False).eval(), images, masks)
    config = TrainConfig(data_root=str(root), base_size=SIZE, crop_size=SIZE, weights_backbone=None, aux_loss=False)
    path = tmp_path_factory.mktemp("run") / "best.pth"
    torch.save({
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "epoch": 1, "step": 1, "model": model.state_dict(),
        "config": asdict(config), "categories": CLASSES, "model_name": "fcn_resnet50", "num_classes": len(CLASSES),
    }, path)  # fmt: skip
    return path, root


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


@pytest.mark.slow
def test_every_command_runs_a_fine_tuned_model_at_its_size(fine_tuned, tmp_path, capsys):
    checkpoint, root = fine_tuned
    val = sorted((root / "val" / "images").iterdir())
    seg = Segmenter("fcn_resnet50", checkpoint, device="cpu")
    assert seg.preprocess.resize_size == SIZE and "base_size" in seg.size_reason
    api = {p.stem: seg.predict(p).mask for p in val}
    at_520 = Segmenter("fcn_resnet50", checkpoint, device="cpu", size=520)  # what segment and serve ran on main
    assert min(_agreement(api[p.stem], at_520.predict(p).mask) for p in val) < 0.95  # the size matters

    # segment: the same masks, and it says which size it used and why
    out = tmp_path / "seg"
    argv = ["segment", str(root / "val" / "images"), "-o", str(out), "--weights", str(checkpoint), "--quiet",
            "--save", "mask", "--workers", "0"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"preprocessing: shorter side resized to {SIZE} (the size {checkpoint} was validated at" in err
    for stem, mask in api.items():
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{stem}_mask.png")), mask)

    # serve: the app `fcnseg serve --weights CKPT` builds, default size
    from fastapi.testclient import TestClient

    from fcnseg.cli.serve import build_app

    args = build_parser().parse_args(["serve", "--weights", str(checkpoint), "--device", "cpu"])
    args.resolved_key = None  # what `fcnseg serve` resolves before building the app: no key on loopback
    app = build_app(args)
    assert f"fcnseg serve: preprocessing: shorter side resized to {SIZE}" in capsys.readouterr().err
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout=600)  # warm-up done
        for p in val:
            r = client.post("/v1/segment", content=p.read_bytes(), headers={"content-type": "image/png",
                                                                          "accept": "image/png"})  # fmt: skip
            assert r.status_code == 200, r.text
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content))), api[p.stem])

    # export: the size in the metadata, and the file resizes by itself (ONNX Runtime's antialiased resize lands
    # within a uint8 level of PyTorch's, which may flip a near-tie pixel)
    import onnxruntime as ort

    onnx_file = tmp_path / "model.onnx"
    argv = ["export", "--weights", str(checkpoint), "-o", str(onnx_file), "--with-preprocessing", "--argmax",
            "--check-sizes", "64x72", "--threads", "2"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr()
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    assert meta["resize_size"] == SIZE and meta["resized_inside"] is True and meta["categories"] == CLASSES
    for p in val:
        (got,) = session.run(None, {"image": np.asarray(Image.open(p).convert("RGB"))[None]})
        assert got.shape == (1, *api[p.stem].shape)
        assert _agreement(got[0], api[p.stem]) > 0.995

    # eval (scoring at the masks' resolution): the accuracy of exactly these masks
    result = tmp_path / "eval.json"
    argv = ["eval", "--dataset", "folder", "--data-root", str(root), "--weights", str(checkpoint), "--native",
            "--workers", "0", "--no-progress", "--no-plot", "--output", str(result)]  # fmt: skip
    assert main(argv) == 0
    scores = json.loads(result.read_text())
    assert scores["resize_size"] == SIZE and scores["split"] == "val"
    truth = {p.stem: np.asarray(Image.open(root / "val" / "masks" / p.name)) for p in val}
    correct = sum(int((api[s] == truth[s]).sum()) for s in api)
    total = sum(truth[s].size for s in api)
    assert scores["pixel_acc"] == pytest.approx(100 * correct / total, abs=0.05)
