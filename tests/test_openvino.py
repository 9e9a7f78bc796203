"""The OpenVINO backend: parity with eager fp32, its build cached across processes, and the fallback without it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import fcnseg.optimize as O
from fcnseg.models.fcn import FCN, FCNHead
from fcnseg.models.resnet import ResNet
from fcnseg.optimize import SpeedPlan, backends

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("nncf") is not None
needs_openvino = pytest.mark.skipif(
    not HAS_OPENVINO, reason="openvino/nncf not installed (pip install 'fcnseg[openvino]')"
)
SRC = Path(O.__file__).resolve().parents[2]


def tiny_fcn() -> nn.Module:
    """One bottleneck per stage, FCN-ResNet50's stem, dilation and head, randomized BN statistics."""
    torch.manual_seed(0)
    net = FCN(ResNet([1, 1, 1, 1], replace_stride_with_dilation=(False, True, True)), FCNHead(2048, 5)).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    return [x[..., :64, :64] for x in O.sample_photos(64, names=("astronaut", "coffee"))]


@needs_openvino
def test_openvino_fp32_matches_eager(photos, tmp_path):
    model = tiny_fcn()
    fast, ref = O.optimize(model, "openvino", cache_dir=tmp_path), O.optimize(model, "none")
    for x in photos + [photos[0][..., :48, :40]]:  # a second shape compiles its own model
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-4, atol=1e-4)


@needs_openvino
@pytest.mark.slow
def test_openvino_int8_and_bf16_run_close(photos, tmp_path):
    model = tiny_fcn()
    ref = O.optimize(model, "none")
    names = ["openvino_int8"] + ["openvino_bf16"] * O.cpu_capabilities().bf16
    for name in names:
        fast = O.optimize(model, name, calibration=photos, cache_dir=tmp_path)
        result = O.accuracy_guard(fast, ref, photos)
        assert result.agreement >= 0.9, (name, result.summary())  # random weights, 2x2 logits: the harshest case
        assert fast(photos[0]).dtype == torch.float32


@needs_openvino
def test_openvino_int8_keeps_sums_and_logits_in_fp32(photos):
    """NNCF's mixed preset rounds every bias and residual sum (and the logits, on their way to the upsampling) to 8
    bits; on the trained probe that alone flipped more pixels than every int8 convolution together. Only the
    convolutions' inputs are quantized, and never the last one's."""
    model = tiny_fcn()
    quantized = backends._nncf_int8(backends._ov_convert(model), photos)
    fake = [op for op in quantized.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    fed = {t.get_node().get_type_name() for op in fake for out in op.outputs() for t in out.get_target_inputs()}
    source = {op.input_value(0).get_node().get_type_name() for op in fake}
    convs = [op for op in quantized.get_ordered_ops() if op.get_type_name() == "Convolution"]
    assert fake and fed <= {"Convolution", "MaxPool", "ShapeOf"}, fed
    assert "Add" not in source
    assert convs[-1].input_value(0).get_node().get_type_name() != "FakeQuantize"  # the logits' conv


RUN = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    import fcnseg.optimize as O
    from fcnseg.optimize import backends
    sys.path.insert(0, sys.argv[2])
    from test_openvino import tiny_fcn

    if sys.argv[3] == "second":  # everything must come from the cache: converting or quantizing again fails
        def refuse(*args, **kwargs):
            raise AssertionError("rebuilt")
        backends._ov_convert = backends._nncf_int8 = refuse
    x = O.sample_photos(64, names=("astronaut",))[0][..., :64, :64]
    fn = O.optimize(tiny_fcn(), "openvino_int8", calibration=[x], cache_dir=sys.argv[1])
    np.save(sys.argv[4], fn(x).numpy())
    """
)


@needs_openvino
@pytest.mark.slow
def test_openvino_build_is_cached_across_processes(tmp_path):
    """The second process converts nothing, quantizes nothing, compiles nothing (no new blob) and gives the same
    logits."""
    import numpy as np

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    here, cache = str(Path(__file__).parent), tmp_path / "cache"
    blobs = cache / "openvino" / "blobs"
    for run in ("first", "second"):
        before = sorted(p.name for p in blobs.glob("*")) if blobs.exists() else None
        cmd = [sys.executable, "-c", RUN, str(cache), here, run, str(tmp_path / f"{run}.npy")]
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    assert before and sorted(p.name for p in blobs.glob("*")) == before  # the second run compiled nothing
    np.testing.assert_array_equal(np.load(tmp_path / "first.npy"), np.load(tmp_path / "second.npy"))
    assert len(list((cache / "openvino").glob("*.xml"))) == 2  # fp32 IR and its int8 version


def test_without_openvino_the_backend_says_how_to_install_and_auto_moves_on(monkeypatch, photos):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    model = tiny_fcn()
    with pytest.raises(ValueError, match=r"pip install 'fcnseg\[openvino\]'"):
        O.optimize(model, "openvino")
    monkeypatch.setattr(O.auto, "auto_candidates", lambda device: [O.PATHS["openvino_int8"], O.PATHS["default"]])
    fn = O.optimize(model, "auto", guard_images=photos, background=False)
    with pytest.warns(UserWarning, match="openvino failed"):
        out = fn(photos[0])
    torch.testing.assert_close(out, O.optimize(model, "none")(photos[0]), rtol=1e-4, atol=1e-4)
    assert fn.plan == O.PATHS["default"] and [p for p, _ in fn.failed] == [O.PATHS["openvino_int8"]]


def test_openvino_plans_and_cli():
    with pytest.raises(ValueError, match="fp32, bf16 or int8"):
        SpeedPlan(precision="fp16", backend="openvino")
    import argparse

    from fcnseg.cli import speed

    parser = argparse.ArgumentParser()
    speed.add_speed_arguments(parser)
    for argv, want in (
        (["--backend", "openvino"], O.PATHS["openvino"]),
        (["--fast", "--backend", "openvino", "--precision", "int8"], O.PATHS["openvino_int8"]),
        (["--backend", "openvino", "--precision", "bf16"], O.PATHS["openvino_bf16"]),
    ):
        assert speed.speed_options_from_args(parser.parse_args(argv)) == want
    assert backends.OPENVINO_INT8  # the recipe is part of the int8 file's name
