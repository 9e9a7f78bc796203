"""ONNX and TorchScript export: dynamic shapes, numerical parity with PyTorch, metadata, the parity checker itself."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import fcnseg
from fcnseg.export import check_parity, export_model, read_metadata
from fcnseg.models import fcn_resnet50
from fcnseg.transforms import IMAGENET_MEAN, IMAGENET_STD, palette

ort = pytest.importorskip("onnxruntime")
CATEGORIES = ["background", "cat", "dog"]
SIZES = [(32, 32), (41, 67), (72, 48)]  # none equals the (72, 88) example the export is traced with


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return fcn_resnet50(weights=None, num_classes=3, aux_loss=False).eval()


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "fcn.onnx"
    export_model(model, path, model_name="fcn_resnet50", weights="test.pth", categories=CATEGORIES)
    return path


@pytest.fixture(scope="module")
def session(onnx_file):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("hw", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_onnx_parity_dynamic_shapes(model, session, batch, hw):
    x = torch.randn(batch, 3, *hw, generator=torch.Generator().manual_seed(hw[0] * batch))
    with torch.inference_mode():
        ref = model(x)["out"].numpy()
    got = session.run(None, {"input": x.numpy()})[0]
    assert got.shape == (batch, 3, *hw)  # the final upsample followed the input, not the export example
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.999


def test_onnx_graph_is_dynamic_and_recent(model, onnx_file):
    import onnx

    assert not any(m.training for m in model.modules())  # exporting left the model in eval mode

    proto = onnx.load(str(onnx_file))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) and d for d in (dims[0], dims[2], dims[3]))
    external = [p.name for p in proto.graph.initializer if p.data_location == onnx.TensorProto.EXTERNAL]
    assert external == []  # weights inside: one self-contained file


def test_metadata_readable(onnx_file, session):
    meta = read_metadata(onnx_file)
    assert meta["categories"] == CATEGORIES and meta["num_classes"] == 3
    assert meta["mean"] == pytest.approx(IMAGENET_MEAN) and meta["std"] == pytest.approx(IMAGENET_STD)
    assert meta["palette"] == palette(3).tolist()
    assert meta["fcnseg_version"] == fcnseg.__version__
    assert (meta["model"], meta["weights"], meta["format"]) == ("fcn_resnet50", "test.pth", "onnx")
    # any ONNX runtime sees the same through the standard metadata_props (JSON values)
    custom = session.get_modelmeta().custom_metadata_map
    assert json.loads(custom["categories"]) == CATEGORIES


def _by_hand(model: torch.nn.Module, rgb: np.ndarray) -> torch.Tensor:
    """Logits for (N, H, W, 3) uint8 RGB, normalized here independently of fcnseg.transforms."""
    x = (rgb.astype(np.float32) / 255 - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    with torch.inference_mode():
        return model(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())["out"]


def test_torchscript_uint8_nchw_logits(model, tmp_path):
    """The NCHW preprocessing variant (same ExportModule code path as ONNX), via the fast TorchScript export."""
    path, _ = export_model(model, tmp_path / "m.pt", fmt="torchscript", preprocessing="nchw")
    loaded = torch.jit.load(str(path), map_location="cpu")
    rgb = np.random.default_rng(1).integers(0, 256, (2, 29, 35, 3), dtype=np.uint8)
    with torch.inference_mode():
        got = loaded(torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous())
    ref = _by_hand(model, rgb)
    assert got.shape == (2, 3, 29, 35) and torch.allclose(got, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_torchscript_round_trip(model, tmp_path):
    path, module = export_model(model, tmp_path / "m.pt", fmt="torchscript", categories=CATEGORIES)
    loaded = torch.jit.load(str(path), map_location="cpu")
    for n, h, w in [(1, 37, 45), (2, 64, 24)]:
        x = torch.randn(n, 3, h, w)
        with torch.inference_mode():
            got = loaded(x)
            ref = model(x)["out"]
        assert got.shape == (n, 3, h, w)
        assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)
    meta = read_metadata(path)
    assert meta["categories"] == CATEGORIES and meta["format"] == "torchscript"
    assert all(r.ok for r in check_parity(path, module, sizes=[(30, 30)], batch_sizes=[2]))


def test_parity_check_catches_a_wrong_export(model, onnx_file):
    """The checker must fail when the file and the model disagree (here: one head weight perturbed)."""
    from fcnseg.export import ExportModule

    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong.classifier[4].bias += torch.tensor([0.5, 0.0, -0.5])
    reports = check_parity(onnx_file, ExportModule(wrong), sizes=[(32, 40)], batch_sizes=[1])
    assert not reports[0].ok and reports[0].max_abs_diff >= 0.5 - 1e-3
    good = check_parity(onnx_file, ExportModule(model), sizes=[(32, 40)], batch_sizes=[1])
    assert all(r.ok and r.agreement == 1.0 for r in good) and "ok" in good[0].line()


def test_export_arguments_validated(model, tmp_path):
    with pytest.raises(ValueError, match="opset"):
        export_model(model, tmp_path / "m.onnx", opset=13)
    with pytest.raises(ValueError, match="preprocessing"):
        export_model(model, tmp_path / "m.onnx", preprocessing="rgb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="category names"):
        export_model(model, tmp_path / "m.onnx", categories=["a", "b"])
    with pytest.raises(ValueError, match="format"):
        export_model(model, tmp_path / "m.bin", fmt="tflite")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []  # nothing half-written
