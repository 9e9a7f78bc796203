"""One rule for size and tiles in the CLI and the API: whole images at the weights' size, tiles at native
resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fcnseg.predict import Segmenter


class _Counting(nn.Module):
    """Two classes from a 1x1 conv; counts the windows it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Sequential(nn.Conv2d(3, 2, 1))
        self.windows = 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.windows += x.shape[0]
        return {"out": self.classifier(x)}


def test_tiles_run_at_native_resolution_unless_a_size_is_given():
    image = Image.fromarray(np.zeros((100, 150, 3), np.uint8))  # 150x100, as in the issue
    model = _Counting()
    tiled = Segmenter(model, tile=128, optimize="none")  # eager: the counting model itself runs
    assert tiled.preprocess.resize_size is None
    assert tiled.predict(image).mask.shape == (100, 150)
    assert model.windows == 2  # 150 wide: windows at x 0 and 22; not 48 windows of a 520-px upscale
    assert Segmenter(model).preprocess.resize_size == 520  # whole images, no weights to say otherwise: 520
    assert Segmenter(model, size=64, tile=32).preprocess.resize_size == 64  # an explicit size is kept
    assert Segmenter(model, size="native").preprocess.resize_size is None


def test_auto_is_the_size_the_weights_record(tmp_path):
    from fcnseg.models import fcn_resnet50, load_weights
    from fcnseg.predict import input_size

    torch.manual_seed(0)
    sd = fcn_resnet50(num_classes=2, aux_loss=False).state_dict()
    trained, bare = tmp_path / "best.pth", tmp_path / "bare.pth"
    torch.save({"model": sd, "config": {"base_size": 96}, "categories": ["bg", "fg"]}, trained)
    torch.save(sd, bare)
    loaded = load_weights("fcn_resnet50", str(trained))
    assert input_size("auto", loaded) == (96, f"the size {trained} was validated at in training, its base_size")
    assert input_size("auto", loaded, tiled=True) == (None, "tiles run at native resolution")
    assert input_size("native", loaded)[0] is None and input_size(64, loaded) == (64, "as asked")
    assert input_size("auto", load_weights("fcn_resnet50", str(bare)))[0] == 520  # records no size
    # the Segmenter reads the file once and follows the same rule; its categories come from the same read
    seg = Segmenter("fcn_resnet50", loaded, device="cpu")
    assert seg.preprocess.resize_size == 96 and seg.categories == ["bg", "fg"]
    assert seg.describe_size() == f"preprocessing: shorter side resized to 96 ({loaded.size_reason})"
    assert Segmenter("fcn_resnet50", str(trained), device="cpu").preprocess.resize_size == 96
    with pytest.raises(ValueError, match="'auto' or 'native'"):
        Segmenter(_Counting(), size=None)  # one spelling of native: "native"


@pytest.mark.parametrize("command", ["segment", "serve", "eval", "export"])
def test_every_command_spells_size_the_same(command):
    from fcnseg.cli import build_parser

    extra = {"eval": ["--dataset", "folder"], "export": ["-o", "m.onnx"]}.get(command, [])
    parse = build_parser().parse_args
    assert parse([command, *extra]).size == "auto"
    assert parse([command, *extra, "--size", "native"]).size == "native"
    assert parse([command, *extra, "--size", "96"]).size == 96
    for wrong in ("0", "none"):  # serve's old "0" and segment's old "none"
        with pytest.raises(SystemExit):
            parse([command, *extra, "--size", wrong])
