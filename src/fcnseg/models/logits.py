"""Call the model, keep ``out``: the one place that turns FCN's ``{"out", "aux"}`` dict into a logits tensor."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["OutLogits", "out_logits"]


def out_logits(model: nn.Module, x: Tensor) -> Tensor:
    """``model(x)["out"]``: the (N, K, H, W) logits at the input size (the aux head's output is dropped)."""
    return model(x)["out"]


class OutLogits(nn.Module):
    """``model`` with a single tensor output, as ``torch.export``, ONNX and the speed paths want."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training  # exporters read and restore the wrapper's mode: it must be the model's

    def forward(self, x: Tensor) -> Tensor:
        return out_logits(self.model, x)
