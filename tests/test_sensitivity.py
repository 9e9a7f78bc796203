"""The per-layer int8 sensitivity pass and mixed-precision plans, on a small model with one fragile layer.

``Outlier``: conv1 emits one channel 1000x larger than the others and conv2 scales it back down, so the function
is ordinary but conv2's input, rounded to uint8 over one per-tensor range, loses every other channel: conv2 is the
layer int8 must leave alone. The other layers quantize harmlessly.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from fcnseg.optimize import SpeedPlan, accuracy_guard, backends
from fcnseg.optimize.sensitivity import input_ranges, keep_fp32, layer_sensitivity, simulated_int8


class Outlier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.conv1.weight[0] *= 1000
            self.conv1.bias[0] *= 1000
            self.conv2.weight[:, 0] /= 1000
            self.conv3.weight *= 10  # logits whose argmax varies across the image, not decided by the bias
            self.conv3.bias.zero_()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))}


@pytest.fixture(scope="module")
def data() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(2, 3, 24, 24, generator=g) for _ in range(2)]
    calibration = [torch.randn(2, 3, 24, 24, generator=g) for _ in range(2)]
    return images, calibration


def test_sensitivity_ranks_the_fragile_layer_first(data):
    images, calibration = data
    model = Outlier().eval()
    cost = layer_sensitivity(model, images, calibration)
    assert list(cost) == ["conv2", *sorted(set(cost) - {"conv2"}, key=lambda n: -cost[n])]
    assert cost["conv2"] > 0.05 > max(cost["conv1"], cost["conv3"])
    assert keep_fp32(cost, budget=0.01) == ("conv2",)
    assert keep_fp32(cost, budget=1.0) == ()


def test_simulated_int8_leaves_other_layers_and_the_caller_alone(data):
    images, calibration = data
    model = Outlier().eval()
    before = model.conv2.weight.clone()
    ranges = input_ranges(model, calibration)
    none = simulated_int8(model, ranges, [])
    x = images[0]
    torch.testing.assert_close(none(x)["out"], model(x)["out"])  # nothing simulated: fp32 exactly
    mixed = simulated_int8(model, ranges, ["conv1", "conv3"])
    assert torch.equal(model.conv2.weight, before)
    w = mixed.conv1.weight
    scale = model.conv1.weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    torch.testing.assert_close(w / scale, torch.round(w / scale))  # per-channel int8 grid
    agree = (mixed(x)["out"].argmax(1) == model(x)["out"].argmax(1)).float().mean()
    assert agree > 0.95


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao not installed (PT2E int8)")
def test_mixed_plan_keeps_the_named_conv_fp32_in_real_int8(data):
    """torchao's PT2E quantization run as is (no compile): all-int8 loses conv2's small channels; the mixed plan
    found by the sensitivity pass keeps conv2 fp32 and agrees with fp32 far better."""
    images, calibration = data
    model = Outlier().eval()
    plan = SpeedPlan(precision="int8", backend="compile")
    mixed = SpeedPlan(
        precision="int8", backend="compile", keep_fp32=keep_fp32(layer_sensitivity(model, images, calibration), 0.01)
    )
    assert mixed.keep_fp32 == ("conv2",)
    reference = lambda x: model(x)["out"]  # noqa: E731
    full = accuracy_guard(backends.quantize_pt2e(model, plan, calibration), reference, images)
    part = accuracy_guard(backends.quantize_pt2e(model, mixed, calibration), reference, images)
    assert part.agreement > full.agreement + 0.05
    assert part.agreement > 0.95


def test_keep_fp32_only_for_int8_compile():
    with pytest.raises(ValueError, match="int8 compile plans only"):
        SpeedPlan(precision="bf16", keep_fp32=("conv1",))
