from __future__ import annotations

import hashlib

import pytest
import torch

from fcnseg.models import fcn_resnet50, get_model_weights, list_models
from fcnseg.weights import (
    VOC_CATEGORIES,
    FCN_ResNet50_Weights,
    FCN_ResNet101_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    WeightsError,
    read_checkpoint,
)

ALL = [w for e in (FCN_ResNet50_Weights, FCN_ResNet101_Weights, ResNet50_Weights, ResNet101_Weights) for w in e]


@pytest.mark.parametrize("w", ALL, ids=repr)
def test_every_weight_has_complete_metadata(w):
    for key in ("num_params", "recipe", "metrics", "gflops", "file_size_mb", "min_size"):
        assert key in w.meta, key
    assert w.url.startswith("https://download.pytorch.org/models/")
    assert len(w.value.hash_prefix) >= 8 and w.file_name in w.url
    assert w.cache_path.name == w.file_name


def test_published_numbers_and_categories():
    r50, r101 = FCN_ResNet50_Weights.DEFAULT, FCN_ResNet101_Weights.DEFAULT
    assert r50 is FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1
    assert r50.meta["metrics"]["COCO-val2017-VOC-labels"] == {"miou": 60.5, "pixel_acc": 91.4}
    assert r101.meta["metrics"]["COCO-val2017-VOC-labels"] == {"miou": 63.7, "pixel_acc": 91.9}
    assert r50.file_name == "fcn_resnet50_coco-1167a1af.pth" and r101.file_name == "fcn_resnet101_coco-7ecb50ca.pth"
    assert len(VOC_CATEGORIES) == 21 and VOC_CATEGORIES[0] == "__background__" and VOC_CATEGORIES[-1] == "tvmonitor"
    assert ResNet50_Weights.DEFAULT.file_name == "resnet50-0676ba61.pth"
    assert ResNet101_Weights.DEFAULT.file_name == "resnet101-63fe2227.pth"


@pytest.mark.parametrize("name", list_models())
def test_preset_is_shorter_side_520_imagenet_normalized(name):
    preset = get_model_weights(name).DEFAULT.transforms()
    x = preset(torch.full((3, 100, 200), 255, dtype=torch.uint8))
    assert x.shape == (3, 520, 1040) and x.dtype == torch.float32
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x[:, 0, 0], expected)


def test_verify_accepts_names_and_rejects_others():
    assert FCN_ResNet50_Weights.verify("DEFAULT") is FCN_ResNet50_Weights.DEFAULT
    assert FCN_ResNet50_Weights.verify("FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1") is FCN_ResNet50_Weights.DEFAULT
    assert FCN_ResNet50_Weights.verify(None) is None
    with pytest.raises(ValueError, match="Unknown weights"):
        FCN_ResNet50_Weights.verify("IMAGENET")
    with pytest.raises(TypeError):
        FCN_ResNet50_Weights.verify(FCN_ResNet101_Weights.DEFAULT)


def _serve_as_url(tmp_path, monkeypatch, weights, payload: bytes, name: str):
    """Point a registry entry at a file:// URL (urllib serves it like HTTP) holding ``payload``."""
    src = tmp_path / "server" / name
    src.parent.mkdir()
    src.write_bytes(payload)
    monkeypatch.setattr(weights.value, "url", src.as_uri())
    monkeypatch.delenv("FCNSEG_OFFLINE")


def test_download_checks_hash_and_fills_the_hub_cache(tmp_path, monkeypatch, torch_home):
    model = fcn_resnet50(num_classes=21, aux_loss=True)
    blob = tmp_path / "blob.pth"
    torch.save(model.state_dict(), blob)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    w = FCN_ResNet50_Weights.DEFAULT
    _serve_as_url(tmp_path, monkeypatch, w, blob.read_bytes(), f"fcn_resnet50_coco-{digest[:8]}.pth")
    loaded = fcn_resnet50(weights=w, progress=False)
    assert w.cache_path == torch_home / "hub" / "checkpoints" / f"fcn_resnet50_coco-{digest[:8]}.pth"
    assert w.cache_path.is_file()
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_download_with_wrong_hash_is_refused_and_leaves_nothing(tmp_path, monkeypatch, torch_home):
    w = FCN_ResNet50_Weights.DEFAULT
    _serve_as_url(tmp_path, monkeypatch, w, b"not the checkpoint", "fcn_resnet50_coco-1167a1af.pth")
    with pytest.raises(WeightsError, match="invalid hash value"):
        w.get_state_dict(progress=False)
    assert not list((torch_home / "hub" / "checkpoints").glob("*"))


def test_existing_torchvision_download_is_reused_without_network(torch_home):
    sd = fcn_resnet50(num_classes=21, aux_loss=True).state_dict()
    path = torch_home / "hub" / "checkpoints" / FCN_ResNet50_Weights.DEFAULT.file_name
    path.parent.mkdir(parents=True)
    torch.save(sd, path)
    got = FCN_ResNet50_Weights.DEFAULT.get_state_dict()  # FCNSEG_OFFLINE=1: any download attempt would fail
    assert got.keys() == sd.keys()


def test_local_files_pth_checkpoint_safetensors_and_ddp_prefix(tmp_path):
    sd = fcn_resnet50(num_classes=3).state_dict()
    torch.save(sd, tmp_path / "bare.pt")
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "categories": ["a", "b", "c"]}, tmp_path / "c.pth")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "m.safetensors"))
    for name in ("bare.pt", "c.pth", "m.safetensors"):
        got, extra = read_checkpoint(tmp_path / name)
        assert got.keys() == sd.keys(), name
        assert all(torch.equal(got[k], sd[k]) for k in sd), name
    assert read_checkpoint(tmp_path / "c.pth")[1]["categories"] == ["a", "b", "c"]


def test_bad_local_files_raise_one_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="no such checkpoint file"):
        read_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"\x00garbage")
    with pytest.raises(WeightsError, match="junk.pth: not a readable checkpoint"):
        read_checkpoint(tmp_path / "junk.pth")
    torch.save({"epoch": 3}, tmp_path / "nomodel.pth")
    with pytest.raises(WeightsError, match="holds no state dict"):
        read_checkpoint(tmp_path / "nomodel.pth")
    torch.save(fcn_resnet50(num_classes=3).backbone.state_dict(), tmp_path / "backbone.pth")
    with pytest.raises(WeightsError, match="not an FCN state dict"):
        fcn_resnet50(weights=tmp_path / "backbone.pth")


def test_imagenet_backbone_weights_load_without_their_classifier(torch_home):
    backbone = fcn_resnet50().backbone
    sd = dict(backbone.state_dict())
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    path = torch_home / "hub" / "checkpoints" / ResNet50_Weights.DEFAULT.file_name
    path.parent.mkdir(parents=True)
    torch.save(sd, path)
    model = fcn_resnet50(weights_backbone="DEFAULT", num_classes=4)
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in backbone.state_dict().items())
