"""BatchNorm folding follows the traced graph: a BN is folded only where it is applied directly to a conv's output.

Each module below registers a conv and a BN side by side, so that folding by registration order (main 133976e)
would fold them; only the first applies the BN to the conv's output.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcnseg.optimize import fold_batchnorm
from fcnseg.predict import Segmenter


def _bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.2, 3)
    bn.weight.data.uniform_(-2, 2)
    bn.bias.data.uniform_(-1, 1)
    return bn


class ConvBn(nn.Module):
    """conv -> bn: the one pair that folds."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), _bn(4)

    def forward(self, x):
        return {"out": self.bn(self.conv(x))}


class ConvReluBn(nn.Module):
    """Registered conv, bn, relu; run conv -> relu -> bn: BN sees the ReLU's output, not the conv's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.relu = nn.Conv2d(3, 4, 3, padding=1), _bn(4), nn.ReLU()

    def forward(self, x):
        return {"out": self.bn(self.relu(self.conv(x)))}


class ConvUsedTwice(nn.Module):
    """conv -> bn, but the conv's raw output is also added back: folding would change the residual."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), _bn(3)

    def forward(self, x):
        y = self.conv(x)
        return {"out": self.bn(y) + y}


class SharedConv(nn.Module):
    """One conv module called twice, once followed by the BN: folding would change the other call too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), _bn(3)

    def forward(self, x):
        return {"out": self.bn(self.conv(x)) + self.conv(x.flip(-1))}


class BnBeforeConv(nn.Module):
    """Registered conv, bn; run bn -> conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), _bn(3)

    def forward(self, x):
        return {"out": self.conv(self.bn(x))}


def _count_bn(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


@pytest.mark.parametrize(
    ("cls", "folded"), [(ConvBn, 1), (ConvReluBn, 0), (ConvUsedTwice, 0), (SharedConv, 0), (BnBeforeConv, 0)]
)
def test_only_a_bn_applied_to_a_conv_output_is_folded(cls, folded):
    torch.manual_seed(0)
    model = cls().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want, got = model(x)["out"], fold_batchnorm(model)(x)["out"]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert _count_bn(model) - _count_bn(fold_batchnorm(model)) == folded
    for k, v in model.state_dict().items():  # the caller's module is untouched
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("cls", [ConvBn, ConvReluBn, ConvUsedTwice, SharedConv, BnBeforeConv])
def test_default_segmenter_path_matches_the_unoptimized_one_on_custom_modules(cls):
    """The issue's report: Segmenter(model=M) on conv -> relu -> bn changed 22 % of the labels."""
    torch.manual_seed(1)
    model = cls().eval()
    image = (torch.rand(48, 40, 3) * 255).to(torch.uint8).numpy()
    plain = Segmenter(model=model, optimize="none", device="cpu", size="native").predict(image)
    fast = Segmenter(model=model, optimize="default", device="cpu", size="native").predict(image)
    assert torch.equal(torch.as_tensor(fast.mask), torch.as_tensor(plain.mask))


class DataDependent(nn.Module):
    """Python control flow on a tensor's value: symbolic tracing fails, so nothing is folded."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), _bn(4)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return {"out": y if x.sum() > 0 else -y}


def test_an_untraceable_model_runs_unfolded():
    model = DataDependent().eval()
    folded = fold_batchnorm(model)
    assert folded is not model and _count_bn(folded) == 1
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x)["out"], model(x)["out"])
