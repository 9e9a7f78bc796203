from __future__ import annotations

import warnings

import pytest
import torch
from checkpoints import write_checkpoint

import fcnseg
from fcnseg.models import FCN, fcn_resnet50, fcn_resnet101, get_model, list_models
from fcnseg.weights import FCN_ResNet50_Weights, WeightsError

MODELS = list_models()


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize("name", MODELS)
def test_golden_parity_with_torchvision(name, golden):
    sd, ref = golden(name)
    model = get_model(name, num_classes=21, aux_loss=True).eval()
    model.load_state_dict(sd, strict=True)
    with torch.no_grad():
        out = model(ref["input"])
    assert list(out) == ["out", "aux"]
    _assert_close(out["out"], ref["out"])
    _assert_close(out["aux"], ref["aux"])


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_keys_order_and_shapes_match_torchvision(name, manifest):
    expected = manifest(name)
    sd = get_model(name, num_classes=21, aux_loss=True).state_dict()
    assert list(sd) == list(expected)
    for key, (shape, dtype) in expected.items():
        assert list(sd[key].shape) == shape, key
        assert str(sd[key].dtype).removeprefix("torch.") == dtype, key


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_matches_registry(name):
    weights = fcnseg.get_model_weights(name).DEFAULT
    model = get_model(name, num_classes=21, aux_loss=True)
    assert sum(p.numel() for p in model.parameters()) == weights.meta["num_params"]


def test_defaults_and_variants_build_and_run():
    x = torch.randn(1, 3, 40, 56)
    plain = fcn_resnet50().eval()  # no weights: 21 classes, no aux head, nothing downloaded
    assert plain.aux_classifier is None
    with torch.no_grad():
        out = plain(x)
    assert list(out) == ["out"] and out["out"].shape == (1, 21, 40, 56)

    model = fcn_resnet50(num_classes=5, aux_loss=True).eval()
    with torch.no_grad():
        out = model(x)
    assert out["out"].shape == (1, 5, 40, 56) and out["aux"].shape == (1, 5, 40, 56)


@pytest.mark.parametrize("hw", [(1, 1), (8, 300), (33, 17)])
def test_any_input_size_gives_logits_of_that_size(hw):
    model = fcn_resnet50(num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *hw))["out"]
    assert out.shape == (2, 3, *hw)


def test_output_stride_is_8():
    feats = fcn_resnet50().backbone(torch.randn(1, 3, 64, 96))
    assert feats["layer4"].shape == (1, 2048, 8, 12)
    assert feats["layer3"].shape == (1, 1024, 8, 12)


def _official_file(torch_home, weights, state_dict):
    path = torch_home / "hub" / "checkpoints" / weights.file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, path)
    return path


def test_weights_from_cache_fix_classes_and_aux(torch_home, golden):
    sd, ref = golden("fcn_resnet50")
    _official_file(torch_home, FCN_ResNet50_Weights.DEFAULT, sd)
    model = fcn_resnet50(weights="DEFAULT").eval()
    assert model.aux_classifier is not None
    with torch.no_grad():
        _assert_close(model(ref["input"])["out"], ref["out"])
    # the aux head can be left out; the checkpoint's aux weights are then skipped
    no_aux = fcn_resnet50(weights=FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1, aux_loss=False).eval()
    assert no_aux.aux_classifier is None


def test_conflicting_num_classes_is_a_clear_error(torch_home, golden):
    _official_file(torch_home, FCN_ResNet50_Weights.DEFAULT, golden("fcn_resnet50")[0])
    with pytest.raises(ValueError, match="num_classes=5 conflicts with the weights, which predict 21"):
        fcn_resnet50(weights="DEFAULT", num_classes=5)


def test_bad_arguments_raise_clearly():
    with pytest.raises(ValueError, match="Unknown weights 'NOPE'"):
        fcn_resnet50(weights="NOPE")
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        fcn_resnet50(colour="blue")
    with pytest.raises(ValueError, match="unknown model"):
        get_model("fcn_vgg16")


def test_legacy_pretrained_keyword_warns_and_loads(torch_home, golden):
    _official_file(torch_home, FCN_ResNet50_Weights.DEFAULT, golden("fcn_resnet50")[0])
    with pytest.warns(DeprecationWarning, match="'pretrained' is deprecated"):
        model = fcn_resnet50(pretrained=True)
    assert model.aux_classifier is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fcn_resnet50(weights=None)  # the modern call stays silent


def test_not_cached_and_offline_names_file_url_and_path(torch_home):
    w = FCN_ResNet50_Weights.DEFAULT
    with pytest.raises(WeightsError) as e:
        fcn_resnet50(weights=w)
    msg = str(e.value)
    assert w.file_name in msg and w.url in msg and str(torch_home / "hub" / "checkpoints" / w.file_name) in msg


def test_local_checkpoint_path_sets_class_count(tmp_path):
    model = fcn_resnet101(num_classes=4, aux_loss=True)
    path = tmp_path / "ft.pth"
    torch.save({"model": model.state_dict(), "epoch": 3}, path)
    loaded = fcn_resnet101(weights=str(path)).eval()
    assert loaded.classifier[4].out_channels == 4
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["out"], model.eval()(x)["out"])


def test_a_checkpoint_without_aux_head_builds_without_one(tmp_path):
    """A ``--no-aux-loss`` training run saves no aux head: the builder must not ask for one by default."""
    path = write_checkpoint(tmp_path / "no_aux.pth", ["a", "b", "c"])
    model = fcn_resnet50(weights=path)
    assert model.aux_classifier is None and model.classifier[4].out_channels == 3
    with pytest.raises(WeightsError, match="no_aux.pth: has no aux head .* build it with aux_loss=False"):
        fcn_resnet50(weights=str(path), aux_loss=True)


def test_backbone_weights_may_be_a_local_file(tmp_path):
    torch.manual_seed(1)
    backbone = fcn_resnet50(num_classes=3).backbone.state_dict()
    path = tmp_path / "imagenet.pth"
    torch.save({**backbone, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}, path)
    model = fcn_resnet50(num_classes=3, weights_backbone=str(path))
    for k, v in backbone.items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    with pytest.raises(WeightsError, match="imagenet.pth: not an ImageNet ResNet state dict"):
        fcn_resnet101(num_classes=3, weights_backbone=path)


@pytest.mark.slow
def test_torchscript_gives_the_same_outputs(golden):
    sd, ref = golden("fcn_resnet50")
    model = fcn_resnet50(num_classes=21, aux_loss=True).eval()
    model.load_state_dict(sd)
    scripted = torch.jit.script(model)
    x = ref["input"][:1, :, :40, :56]
    with torch.no_grad():
        a, b = model(x), scripted(x)
    torch.testing.assert_close(b["out"], a["out"])
    torch.testing.assert_close(b["aux"], a["aux"])
    assert isinstance(model, FCN)
