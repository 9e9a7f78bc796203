"""The seed snippet, ``torch.hub.load(..., "fcn_resnet50", pretrained=True)``, against this checkout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from checkpoints import write_checkpoint

from fcnseg.models import get_model, get_model_weights, list_models
from fcnseg.weights import WeightsError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list_models())
def test_hub_load_pretrained_matches_direct_build(name, torch_home, golden):
    sd, ref = golden(name)
    enum = get_model_weights(name)
    path = torch_home / "hub" / "checkpoints" / enum.DEFAULT.file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)

    with pytest.warns(DeprecationWarning):
        hub_model = torch.hub.load(str(REPO), name, pretrained=True, source="local").eval()
    direct = get_model(name, weights="DEFAULT").eval()
    x = ref["input"][:1, :, :48, :64]
    with torch.no_grad():
        a, b = hub_model(x), direct(x)
    assert list(a) == ["out", "aux"]
    torch.testing.assert_close(a["out"], b["out"], rtol=0, atol=0)


def test_hub_load_offline_and_not_cached_says_where_to_put_the_file(torch_home):
    with pytest.raises(WeightsError, match="fcn_resnet50_coco-1167a1af.pth.*place it at .*hub/checkpoints"):
        torch.hub.load(str(REPO), "fcn_resnet50", weights="DEFAULT", source="local")


def test_hub_loads_a_checkpoint_trained_without_aux_head(tmp_path):
    path = write_checkpoint(tmp_path / "no_aux.pth", ["a", "b"])
    model = torch.hub.load(str(REPO), "fcn_resnet50", weights=str(path), source="local")
    assert model.aux_classifier is None
    assert torch.equal(model.classifier[4].weight, torch.load(path, weights_only=True)["model"]["classifier.4.weight"])
