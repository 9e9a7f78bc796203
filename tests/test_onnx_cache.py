"""The ONNX Runtime speed path caches its exported file by a key over every byte of the model's tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcnseg import optimize as O

pytest.importorskip("onnxruntime")


class Tiny(nn.Module):
    """A 1x1-conv "segmenter" whose BN statistics and last class row lie beyond a tensor's first 4096 bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 1536, 1), nn.BatchNorm2d(1536), nn.ReLU())  # BN buffers: 6 KB each
        self.classifier = nn.Conv2d(1536, 4, 1)  # weight 24 KB; class 3's row is its last 6 KB

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.classifier(self.body(x))}


def test_models_differing_past_4096_bytes_get_their_own_file(tmp_path):
    torch.manual_seed(0)
    a = Tiny().eval()
    b = Tiny().eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b.classifier.weight[3] += 1.0  # the last class row
        b.body[1].running_mean[-8:] += 5.0  # the last BN statistics
    x = torch.randn(1, 3, 16, 20)
    for model in (a, b):
        fast = O.optimize(model, "onnxruntime", cache_dir=tmp_path)
        with torch.no_grad():
            torch.testing.assert_close(fast(x), model(x)["out"], rtol=1e-4, atol=1e-4)  # its own file, not a's
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 2
