"""Speed paths: each agrees with fp32 eager within its tolerance; "auto" never picks a path that fails the guard."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

import fcnseg.optimize as O
from fcnseg.cli import speed
from fcnseg.models import fcn_resnet50
from fcnseg.models.fcn import FCN, FCNHead
from fcnseg.models.resnet import ResNet
from fcnseg.optimize import CpuCapabilities, GuardResult, SpeedPlan, backends, cpu
from fcnseg.predict import Segmenter


@pytest.fixture(scope="module")
def model(golden) -> nn.Module:
    """FCN-ResNet50 with the golden deterministic weights (realistic BN statistics), without the aux head."""
    state, _ = golden("fcn_resnet50")
    net = fcn_resnet50(num_classes=21, aux_loss=True).eval()
    net.load_state_dict(state)
    net.aux_classifier = None
    return net


@pytest.fixture(scope="module")
def trained(request, model, tmp_path_factory) -> nn.Module:
    """The golden model with its last layer fitted to the shapes dataset (tests/trained.py): decisive logits.
    Fitted once (a minute or two on 2 cores), then read from pytest's cache (when its plugin is on)."""
    from trained import trained_model

    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    return trained_model(model, cache.mkdir("fcnseg-trained") if cache else tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    """One bottleneck per stage, same stem, dilation and head as FCN-ResNet50: compiles several times faster.

    BN statistics are randomized so that folding and freezing have something to get wrong."""
    torch.manual_seed(0)
    net = FCN(ResNet([1, 1, 1, 1], replace_stride_with_dilation=(False, True, True)), FCNHead(2048, 21)).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.6, 1.2)
    return net


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    return O.sample_photos(64, names=("astronaut", "coffee"))


def caps(*flags: str) -> CpuCapabilities:
    return CpuCapabilities(name="test", isa="AVX512", flags=frozenset(flags))


# ---------------------------------------------------------------------------------------------- capabilities


def test_capability_flags_map_to_precisions():
    amd = caps("avx512f", "avx512_bf16", "avx512_vnni")  # AMD EPYC Zen 4: no AMX
    assert (amd.bf16, amd.amx, amd.int8, amd.fp16) == (True, False, True, False)
    spr = caps("avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "avx512_fp16")  # Sapphire Rapids
    assert (spr.bf16, spr.amx, spr.int8, spr.fp16) == (True, True, True, True)
    old = caps("avx2", "fma")
    assert (old.bf16, old.amx, old.int8, old.fp16) == (False, False, False, False)


def test_cpu_capabilities_read_this_machine():
    found = O.cpu_capabilities()
    assert found.isa == torch.backends.cpu.get_cpu_capability()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        line = next(ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("flags"))
        assert found.flags == frozenset(line.split(":", 1)[1].split())


def test_precisions_the_cpu_lacks_are_refused(monkeypatch, model):
    monkeypatch.setattr(cpu, "cpu_capabilities", lambda: caps("avx2"))
    for name in ("bf16", "int8"):
        with pytest.raises(ValueError, match="lacks"):
            O.optimize(model, name)
    with pytest.raises(ValueError, match="lacks"):
        O.optimize(model, SpeedPlan(precision="fp16"))


def test_auto_candidates_follow_capabilities(monkeypatch):
    has_ov = all(importlib.util.find_spec(m) for m in ("openvino", "nncf"))
    monkeypatch.setattr(cpu, "cpu_capabilities", lambda: caps("avx2"))
    ort = [O.PATHS["onnxruntime_int8"]] if importlib.util.find_spec("onnxruntime") else []
    last = O.PATHS["openvino"] if has_ov else O.PATHS["compile"]
    int8 = [O.PATHS["openvino_int8"]] if has_ov else ort
    assert O.auto_candidates("cpu") == [*int8, last]  # AVX2-only: OpenVINO's or ONNX Runtime's int8, then fp32
    monkeypatch.setattr(cpu, "cpu_capabilities", lambda: caps("avx512_bf16"))
    plans = O.auto_candidates("cpu")
    assert [p.precision for p in plans] == ["bf16"] * (1 + has_ov) + ["fp32"]
    assert all(p.backend == "openvino" or (p.freezing and p.channels_last) for p in plans)
    monkeypatch.setattr(cpu, "cpu_capabilities", lambda: caps("avx512_bf16", "avx512_vnni"))  # AMD EPYC Zen 4/5
    assert [p.precision for p in O.auto_candidates("cpu")] == ["int8"] * (1 + has_ov) + ["bf16"] * (1 + has_ov) + [
        "fp32"
    ]
    # --fast with a precision or backend starts from the first floating-point candidate, not int8
    parser = argparse.ArgumentParser()
    speed.add_speed_arguments(parser)
    want = SpeedPlan(precision="bf16", channels_last=True)
    assert speed.speed_options_from_args(parser.parse_args(["--fast", "--backend", "eager"])) == want


def test_bad_plans_and_names():
    with pytest.raises(ValueError, match="precision"):
        SpeedPlan(precision="fp8")
    with pytest.raises(ValueError, match="int8 runs only"):
        SpeedPlan(precision="int8")
    with pytest.raises(ValueError, match="fp32 or int8 only"):
        SpeedPlan(precision="bf16", backend="onnxruntime")
    with pytest.raises(ValueError, match="unknown optimize choice"):
        O.resolve_plan("fastest")


# ---------------------------------------------------------------------------------------------- accuracy guard


def test_guard_counts_flips_and_logit_error_exactly():
    ref = torch.zeros(1, 3, 2, 5)
    ref[:, 0] = 1.0  # class 0 wins everywhere with margin 1
    out = ref.clone()
    out[0, 2, 0, :2] = 2.0  # two of ten pixels flip to class 2, |Δ| = 2 at those two logits
    result = O.accuracy_guard(lambda x: out, lambda x: ref, [torch.zeros(1)])
    assert result.agreement == pytest.approx(0.8)
    assert result.mean_abs_diff == pytest.approx(2 * 2 / 30)  # mean over all 3 x 10 logits
    assert result.max_abs_diff == 2.0
    assert not result.passed
    assert result.per_image == (0.8,)
    assert GuardResult(same=998, total=1000, per_image=(0.998,)).passed


def test_pick_fastest_skips_paths_that_fail_the_guard():
    latency = {"none": 1.0, "int8": 0.1, "bf16": 0.3, "compile": 0.5}
    guard = {
        "int8": GuardResult(95, 100, (0.95,)),
        "bf16": GuardResult(999, 1000, (0.999,)),
        "compile": GuardResult(1, 1, (1.0,)),
    }
    assert O.pick_fastest(latency, guard) == "bf16"
    assert O.pick_fastest({"none": 1.0, "int8": 0.1}, guard) == "none"


def _lossy(forward):
    """A stand-in for a reduced precision that loses accuracy on any CPU: logits rounded to steps of 0.5."""
    return lambda x: torch.round(forward(x) * 2) / 2


def test_auto_never_picks_a_path_that_fails_the_guard(monkeypatch, model, photos):
    """Candidates this CPU lacks are skipped, those that fail the guard are rejected, on any CPU."""
    lossy, fp32 = SpeedPlan(precision="bf16"), SpeedPlan(fold_bn=True)
    build = backends.build

    def fake_build(net, plan, **kwargs):
        return _lossy(build(net, O.PATHS["none"])) if plan == lossy else build(net, plan, **kwargs)

    guard = photos[:1]
    assert not O.accuracy_guard(_lossy(build(model, O.PATHS["none"])), O.optimize(model, "none"), guard).passed
    monkeypatch.setattr(cpu, "cpu_capabilities", lambda: caps("avx512_bf16"))  # no fp16: that candidate is refused
    monkeypatch.setattr(O.auto, "auto_candidates", lambda device: [SpeedPlan(precision="fp16"), lossy, fp32])
    monkeypatch.setattr(backends, "build", fake_build)
    with pytest.warns(UserWarning, match="fp16 eager failed"):
        fn = O.optimize(model, "auto", guard_images=guard, background=False)
        x = photos[1]
        torch.testing.assert_close(fn(x), O.optimize(model, "none")(x), rtol=1e-4, atol=1e-5)
    assert fn.plan == fp32
    assert [plan for plan, _ in fn.rejected] == [lossy]  # fp16 could not be built here: skipped, not judged
    assert [plan for plan, _ in fn.failed] == [SpeedPlan(precision="fp16")]
    refused, failed, *_ = fn.details()
    assert refused.startswith("bf16 eager refused by the guard: ")
    assert failed.startswith("fp16 eager failed: ValueError: precision fp16 needs AVX512-FP16")


def _broken(stage: str):
    """A stand-in candidate that fails like inductor without a C++ compiler: when built, or at its first call."""

    def fail(*args, **kwargs):
        raise RuntimeError(f"InvalidCxxCompiler: no working C++ compiler found ({stage})")

    return fail


def test_fast_degrades_to_the_next_candidate_and_finally_to_eager(monkeypatch, tiny, photos):
    """--fast never crashes on a broken path: a failure at build or first call moves on, and says so."""
    at_build, at_call, last = (
        SpeedPlan(backend="compile", channels_last=c, freezing=f) for c, f in ((1, 1), (0, 1), (1, 0))
    )
    build = backends.build

    def fake_build(net, plan, **kwargs):
        if plan == at_build:
            return _broken("build")()
        return _broken("first call") if plan in (at_call, last) else build(net, plan, **kwargs)

    monkeypatch.setattr(O.auto, "auto_candidates", lambda device: [at_build, at_call, last])
    monkeypatch.setattr(backends, "build", fake_build)
    x = photos[0]
    fn = O.optimize(tiny, "auto", guard_images=[x], background=False)
    with pytest.warns(UserWarning, match="trying the next path"):
        out = fn(x)
    torch.testing.assert_close(out, O.optimize(tiny, "none")(x), rtol=1e-4, atol=1e-4)  # eager fp32 ran
    assert [plan for plan, _ in fn.failed] == [at_build, at_call, last] and fn.plan == O.PATHS["default"]
    assert fn.describe().startswith("the default path for 1 image: the default path (no faster path passed")
    assert sum("failed: RuntimeError: InvalidCxxCompiler" in line for line in fn.details()) == 3

    # an explicitly chosen compiled path degrades the same way
    fixed = O.optimize(tiny, "compile")
    fixed.fn = _broken("first call")
    with pytest.warns(UserWarning, match="fp32 compile failed"):
        torch.testing.assert_close(fixed(x), out, rtol=1e-4, atol=1e-4)
    assert fixed.describe().startswith("fp32 eager (fp32 compile failed")


def test_bf16_fails_the_guard_on_the_golden_weights(model, photos):
    """The golden weights' small logit margins: bf16 eager flips more than 0.5% of pixels."""
    if not O.cpu_capabilities().bf16:
        pytest.skip(f"no native bf16 (AVX512-BF16 or AMX) on this CPU ({O.cpu_capabilities().name})")
    bf16 = O.optimize(model, SpeedPlan(precision="bf16"))
    assert not O.accuracy_guard(bf16, O.optimize(model, "none"), photos[:1]).passed


def test_sample_photos_follow_the_preset():
    (x,) = O.sample_photos(48, names=("chelsea",))  # 300 x 451 photo
    assert x.shape == (1, 3, 48, 72)
    assert -3 < float(x.min()) < float(x.max()) < 3  # normalized


@pytest.mark.slow
def test_auto_follows_the_guard_by_the_weights(monkeypatch, model, trained, photos):
    """The guard decides by the weights: a trained model's wide margins lose far fewer pixels to bf16 than the
    golden (untrained) weights' near-ties, and auto takes bf16 exactly when the guard passes it on the images it
    judged (the first batch and the guard images), fp32 otherwise. At 64 px (2x2 logits upsampled, boundaries
    everywhere) the trained model's bf16 sits near the 99.8 % rule; bench_speed.py measures full-size photos.
    Eager stand-ins for the compiled candidates keep this fast."""
    if not O.cpu_capabilities().bf16:
        pytest.skip(f"no native bf16 (AVX512-BF16 or AMX) on this CPU ({O.cpu_capabilities().name})")
    bf16, fp32 = O.PATHS["bf16"], O.PATHS["default"]
    monkeypatch.setattr(O.auto, "auto_candidates", lambda device: [bf16, fp32])
    judged = [photos[0], *photos]  # what auto judges: the first batch, then the guard images
    for net in (trained, model):
        fn = O.optimize(net, "auto", guard_images=photos, background=False)
        fn(photos[0])
        verdict = O.accuracy_guard(O.optimize(net, "bf16"), O.optimize(net, "none"), judged)
        assert fn.plan == (bf16 if verdict.passed else fp32)
    ref = {name: O.optimize(net, "none") for name, net in (("trained", trained), ("golden", model))}
    trained_bf16 = O.accuracy_guard(O.optimize(trained, "bf16"), ref["trained"], photos)
    golden_bf16 = O.accuracy_guard(O.optimize(model, "bf16"), ref["golden"], photos)
    assert trained_bf16.agreement >= 0.995 > golden_bf16.agreement
    assert not golden_bf16.passed


# ---------------------------------------------------------------------------------------------- each path


def _check(model, photos, name, *, atol=None, agreement=None, rel=None):
    fast, ref = O.optimize(model, name, calibration=photos), O.optimize(model, "none")
    for x in photos:
        out, want = fast(x), ref(x)
        assert out.shape == want.shape and out.dtype == torch.float32
        if atol is not None:
            torch.testing.assert_close(out, want, rtol=0, atol=atol)
    if agreement is not None:
        result = O.accuracy_guard(fast, ref, photos)
        assert result.agreement >= agreement
        # golden logits have std ~0.6: rel bounds the mean error relative to that spread
        std = float(torch.cat([ref(x).flatten() for x in photos]).std())
        assert result.mean_abs_diff <= rel * std


@pytest.mark.parametrize("name", ["none", "default", "fold_bn", "channels_last"])
def test_fp32_eager_paths_match(model, photos, name):
    _check(model, photos, name, atol=1e-4)


def test_default_path_switches_layout_by_input_size(tiny):
    """Eager channels-last only pays off on large inputs: small ones run contiguous, results equal either way."""
    fn, ref = O.optimize(tiny, "default"), O.optimize(tiny, "none")
    switch = backends._LayoutBySize(O.fold_batchnorm(tiny))
    torch.manual_seed(0)
    for side in (64, 128, 48, 128):  # below, above, below and above CHANNELS_LAST_MIN_PIXELS (96²)
        x = torch.randn(1, 3, side, side)
        with torch.inference_mode():
            torch.testing.assert_close(fn(x), ref(x), rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(switch(x), ref(x), rtol=1e-4, atol=1e-4)
        want = torch.channels_last if side * side >= backends.CHANNELS_LAST_MIN_PIXELS else torch.contiguous_format
        assert switch.layout == want and switch.model.backbone.conv1.weight.is_contiguous(memory_format=want)


def test_fold_batchnorm_removes_every_bn(model):
    folded = O.fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched


def test_bf16_eager_is_close(model, photos):
    if not O.cpu_capabilities().bf16:
        pytest.skip(f"no native bf16 (AVX512-BF16 or AMX) on this CPU ({O.cpu_capabilities().name})")
    _check(model, photos[:1], "bf16", agreement=0.95, rel=0.01)


@pytest.mark.slow
def test_onnxruntime_matches(tiny, photos, tmp_path):
    fast = O.optimize(tiny, "onnxruntime", cache_dir=tmp_path)
    ref = O.optimize(tiny, "none")
    x = torch.cat([photos[0], photos[0].flip(-1)])  # batch 2 and a size the export never saw: dynamic axes
    torch.testing.assert_close(fast(x), ref(x), rtol=0, atol=1e-4)
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1  # cached for the next run


@pytest.mark.slow
def test_onnxruntime_int8_is_close(tiny, photos, tmp_path):
    """ONNX Runtime static int8 (QDQ, per-channel): the int8 path an AVX2-only CPU is offered."""
    pytest.importorskip("onnxruntime")
    if not (O.cpu_capabilities().int8 or "avx2" in O.cpu_capabilities().flags):
        pytest.skip(f"no AVX2 on this CPU ({O.cpu_capabilities().name})")
    fast = O.optimize(tiny, "onnxruntime_int8", calibration=photos[1:], cache_dir=tmp_path)
    result = O.accuracy_guard(fast, O.optimize(tiny, "none"), photos[:1])
    assert result.agreement >= 0.9  # 8x8 feature maps: the harshest case
    assert len(list((tmp_path / "onnx").glob("*-int8-*.onnx"))) == 1  # quantized once, cached


@pytest.mark.slow
def test_compiled_bf16_is_close(tiny, photos):
    """inductor + frozen weights + bf16 autocast + channels_last: the path "auto" tries first on this CPU."""
    if not O.cpu_capabilities().bf16:
        pytest.skip(f"no native bf16 (AVX512-BF16 or AMX) on this CPU ({O.cpu_capabilities().name})")
    _check(tiny, photos[:1], "compile_bf16", agreement=0.97, rel=0.01)


@pytest.mark.slow
def test_int8_is_close(tiny, photos):
    if not O.cpu_capabilities().int8:
        pytest.skip(f"no VNNI or AMX-INT8 on this CPU ({O.cpu_capabilities().name})")
    pytest.importorskip("torchao")
    _check(tiny, photos[:1], "int8", agreement=0.9, rel=0.05)  # 8x8 feature maps: the harshest case
    fast, x = O.optimize(tiny, "int8", calibration=photos[:1]), photos[0][..., :8, :8]
    torch.testing.assert_close(fast(x), tiny(x)["out"])  # below the exported graph's 9 px: fp32 eager


# ---------------------------------------------------------------------------------------------- integration


def test_segmenter_runs_its_logits_through_the_chosen_path(model, photos):
    plain, default = Segmenter(model, weights=None, optimize="none"), Segmenter(model, weights=None)
    x = photos[1]
    torch.testing.assert_close(default.logits(x), plain.logits(x), rtol=0, atol=1e-4)
    assert torch.equal(plain.logits(x), model(x)["out"])
    assert (default.logits(x).argmax(1) == plain.logits(x).argmax(1)).float().mean() >= 0.9999
    with pytest.raises(ValueError, match="unknown optimize choice"):
        Segmenter(model, weights=None, optimize="warp")


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        ([], "default"),
        (["--fast"], "auto"),
        (["--precision", "int8"], O.PATHS["int8"]),
        (["--backend", "onnxruntime"], SpeedPlan(backend="onnxruntime")),
        (["--precision", "bf16"], SpeedPlan(precision="bf16", channels_last=True)),
        (["--fast", "--precision", "fp32"], SpeedPlan(backend="compile", channels_last=True)),
        (["--fast", "--backend", "onnxruntime"], SpeedPlan(backend="onnxruntime")),
    ],
)
def test_cli_options(argv, want):
    parser = argparse.ArgumentParser()
    speed.add_speed_arguments(parser)
    assert speed.speed_options_from_args(parser.parse_args(argv)) == want


def test_cli_options_on_an_avx2_only_cpu(monkeypatch):
    """Without bf16 or VNNI, --fast starts from compiled fp32 and nothing assumes a reduced precision."""
    monkeypatch.setattr(cpu, "cpu_capabilities", lambda: caps("avx2", "fma"))
    parser = argparse.ArgumentParser()
    speed.add_speed_arguments(parser)
    assert speed.speed_options_from_args(parser.parse_args(["--fast", "--backend", "eager"])) == SpeedPlan(
        channels_last=True
    )
    has_ov = all(importlib.util.find_spec(m) for m in ("openvino", "nncf"))
    ort = [O.PATHS["onnxruntime_int8"]] if importlib.util.find_spec("onnxruntime") else []
    int8, last = ([O.PATHS["openvino_int8"]], O.PATHS["openvino"]) if has_ov else (ort, O.PATHS["compile"])
    assert O.auto_candidates("cpu") == [*int8, last]
    for name in ("onnxruntime_int8", "openvino_int8"):  # their int8 kernels need only AVX2
        O.check_supported(O.PATHS[name], torch.device("cpu"))


def test_cli_options_that_cannot_run_together():
    parser = argparse.ArgumentParser()
    speed.add_speed_arguments(parser)
    with pytest.raises(ValueError, match="int8 runs only"):
        speed.speed_options_from_args(parser.parse_args(["--precision", "int8", "--backend", "eager"]))
    with pytest.raises(ValueError, match="fp32 or int8 only"):
        speed.speed_options_from_args(parser.parse_args(["--precision", "bf16", "--backend", "onnxruntime"]))


def test_many_image_shapes_share_one_dynamic_graph(monkeypatch):
    """Past STATIC_SHAPES distinct shapes, new shapes run one dynamic-shape graph instead of compiling each."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(backends, "STATIC_SHAPES", 2)
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=2, dilation=2), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    switch = backends._ShapeSwitch(conv, dynamic=False, freezing=True)
    shapes = [(1, 3, 16, 16), (1, 3, 16, 24), (1, 3, 16, 32), (1, 3, 16, 40), (1, 3, 24, 16), (1, 3, 16, 24)]
    graphs = counters["stats"]["unique_graphs"]
    with torch.inference_mode():
        for shape in shapes:
            x = torch.randn(shape)
            torch.testing.assert_close(switch(x), conv(x), rtol=1e-4, atol=1e-5)
    assert switch.shapes == {torch.Size(s) for s in shapes[:2]}  # the first two stayed static, and were reused
    # two static graphs, then one dynamic graph (at most one more if dynamo specializes a size once) for 3 new shapes
    assert counters["stats"]["unique_graphs"] - graphs <= 4
