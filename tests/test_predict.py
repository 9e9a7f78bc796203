"""Segmenter: chunked upsampling, TTA, tiling and batching checked against computations done by hand."""

from __future__ import annotations

import errno
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fcnseg import outputs
from fcnseg.imageio import ImageDecodeError
from fcnseg.predict import Segmenter, window_starts
from fcnseg.results import SegmentationResult
from fcnseg.transforms import SemanticSegmentation
from fcnseg.upsample import CHUNK_ELEMENTS, _labels, postprocess, upsampled_labels, upsampled_rows


class TinyFCN(nn.Module):
    """FCN-shaped: a strided conv (so position, flips and scale matter), a classifier, bilinear upsampling."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.classifier = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 1))

    def forward(self, x):
        out = self.classifier(self.backbone(x))
        return {"out": F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)}


def rand_image(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("src", "dst"), [((13, 17), (40, 31)), ((40, 31), (13, 17)), ((20, 20), (20, 57)), ((9, 9), (9, 9))]
)
def test_upsampled_rows_match_whole_image_resize(src, dst):
    logits = torch.randn(4, *src)
    blocks = list(upsampled_rows(logits, dst, max_elements=4 * dst[1] * 3))  # 3 rows a block
    assert all(b.shape[1] <= 3 for b in blocks)
    expected = postprocess(logits[None], dst)[0]
    torch.testing.assert_close(torch.cat(blocks, 1), expected, atol=1e-5, rtol=1e-5)


def test_labels_match_softmax_argmax_of_full_map():
    logits = torch.randn(5, 30, 45)
    blocks = upsampled_rows(logits, (97, 120), max_elements=5 * 120 * 7)
    mask, conf, probs, entropy = _labels(blocks, (97, 120), probs=True)
    p = postprocess(logits[None], (97, 120))[0].softmax(0)
    torch.testing.assert_close(torch.from_numpy(probs), p, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(conf, p.max(0).values.numpy(), atol=1e-5)
    np.testing.assert_allclose(entropy, (-(p * p.log()).sum(0)).numpy(), atol=1e-5)
    top2 = p.topk(2, 0).values
    clear = (top2[0] - top2[1] > 1e-4).numpy()  # ignore near-ties, where float rounding may flip the argmax
    assert (mask == p.argmax(0).numpy())[clear].all()


def _full_argmax(logits: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The reference: every class interpolated by F.interpolate, then argmax; and the top-2 margin per pixel."""
    full = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
    top2 = full.topk(2, 0).values if full.shape[0] > 1 else torch.cat([full, full - 1])
    return full.argmax(0).numpy(), (top2[0] - top2[1]).numpy()


def _blobs(k: int, h: int, w: int, seed: int, cell: int = 6) -> torch.Tensor:
    """Decisive, spatially smooth logits like a trained model's: regions of about ``cell`` px, each won by one class."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, k, max(2, h // cell), max(2, w // cell), generator=g) * 4
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ((13, 17), (40, 31)),  # odd sizes, non-integer factors
        ((16, 16), (64, 64)),  # integer factor 4
        ((10, 15), (25, 37)),  # 2.5x and 2.47x
        ((40, 31), (13, 17)),  # downscaling
        ((20, 20), (20, 57)),  # one axis unchanged
        ((1, 7), (5, 29)),  # a single source row
        ((9, 9), (9, 9)),  # no resize at all
    ],
)
@pytest.mark.parametrize("kind", ["random", "blobs"])
def test_upsampled_labels_equal_the_full_interpolation(src, dst, kind):
    """Identical masks wherever the full interpolation's top-2 margin exceeds float rounding."""
    for seed in range(3):
        K = 5
        logits = torch.randn(K, *src, generator=torch.Generator().manual_seed(seed)) if kind == "random" else None
        logits = _blobs(K, *src, seed) if logits is None else logits
        want, margin = _full_argmax(logits, dst)
        got = upsampled_labels(logits, dst, max_elements=K * dst[1] * 3)  # several row blocks and pixel batches
        assert got.shape == dst and got.dtype == np.uint8
        clear = margin > 1e-5
        assert clear.mean() > 0.99
        np.testing.assert_array_equal(got[clear], want[clear])


def test_upsampled_labels_by_hand():
    """Two classes split down the middle: only the columns between the two source columns need interpolating."""
    logits = torch.zeros(2, 2, 4)
    logits[0, :, :2] = 1.0  # class 0 on the left half
    logits[1, :, 2:] = 1.0  # class 1 on the right half
    got = upsampled_labels(logits, (3, 12))
    # output column x samples source (x + 0.5) / 3 - 0.5: columns 0..5 lie at or left of 1.5, where class 0 wins
    # by the weights, 6..11 right of it; x = 5 is at 1.5 - 1/6, so class 0's weight is 2/3
    want = np.array([[0] * 6 + [1] * 6] * 3, dtype=np.uint8)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, _full_argmax(logits, (3, 12))[0])


def test_upsampled_labels_interpolate_only_near_boundaries(monkeypatch):
    """Where a region's 4 source pixels agree nothing is interpolated: boundary pixels are a small share."""
    logits = _blobs(4, 60, 80, seed=1, cell=20)  # regions of ~20 source pixels, as a model's at 1/8 scale
    interpolated = []
    argmax = torch.Tensor.argmax

    def spy(t, *args, **kwargs):
        if t.dim() == 2:  # (m, K): the boundary pixels' interpolated logits
            interpolated.append(t.shape[0])
        return argmax(t, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "argmax", spy)
    got = upsampled_labels(logits, (600, 800))
    monkeypatch.undo()
    want, margin = _full_argmax(logits, (600, 800))
    np.testing.assert_array_equal(got[margin > 1e-5], want[margin > 1e-5])
    assert 0 < sum(interpolated) < 0.1 * 600 * 800


def test_segmenter_confidence_only_when_asked():
    seg = Segmenter(TinyFCN(), size=24)
    image = rand_image(50, 70)
    plain, full = seg.predict(image), seg.predict(image, confidence=True, probs=True)
    assert plain.confidence is None and plain.probs is None
    assert full.confidence.shape == (50, 70) and full.probs.shape == (3, 50, 70)
    margin = np.diff(np.sort(full.probs, axis=0)[-2:], axis=0)[0]
    clear = margin > 1e-5
    np.testing.assert_array_equal(plain.mask[clear], full.mask[clear])
    np.testing.assert_allclose(full.confidence, full.probs.max(0), rtol=1e-6)


@pytest.mark.slow
def test_large_image_never_materialises_full_resolution_logits(monkeypatch):
    """A 6000x4000 photo: no logit tensor larger than one row block is ever created; the mask alone interpolates
    no full-width logits at all, confidence does so a row block at a time."""
    K, seen = 8, []
    interpolate = F.interpolate

    def spy(x, *args, **kwargs):
        out = interpolate(x, *args, **kwargs)
        seen.append(tuple(out.shape))
        return out

    monkeypatch.setattr(F, "interpolate", spy)
    seg = Segmenter(TinyFCN(K), size=64)
    image = Image.new("RGB", (6000, 4000), (120, 60, 30))
    result = seg.predict(image)
    assert result.mask.shape == (4000, 6000) and result.probs is None and result.confidence is None
    assert not [s for s in seen if s[-1] == 6000]
    result = seg.predict(image, confidence=True)
    assert result.confidence.shape == (4000, 6000)
    logit_sizes = [int(np.prod(s)) for s in seen if s[-3] == K]
    assert max(logit_sizes) <= CHUNK_ELEMENTS < K * 4000 * 6000 // 8
    assert sum(s[-2] for s in seen if s[-3] == K and s[-1] == 6000) == 4000  # the blocks cover every row once


def test_window_starts_cover_the_length():
    for length in (1, 31, 32, 33, 100, 517):
        for window, stride in ((32, 32), (32, 24), (32, 1), (50, 13)):
            starts = window_starts(length, window, stride)
            win = min(window, length)
            covered = np.zeros(length, bool)
            for s in starts:
                covered[s : s + win] = True
            assert covered.all() and starts[0] == 0 and starts[-1] + win == length
            assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:], strict=False))


def test_tiles_average_overlapping_logits_like_by_hand():
    model, image = TinyFCN().eval(), rand_image(40, 50)
    seg = Segmenter(model, size="native", tile=32, stride=12, batch_size=3)
    got = seg.predict(image, probs=True)
    x = SemanticSegmentation(resize_size=None)(image)[None]
    total, count = torch.zeros(3, 40, 50), torch.zeros(1, 40, 50)
    with torch.no_grad():
        for y in (0, 8):  # window_starts(40, 32, 12)
            for x0 in (0, 12, 18):  # window_starts(50, 32, 12)
                total[:, y : y + 32, x0 : x0 + 32] += model(x[:, :, y : y + 32, x0 : x0 + 32])["out"][0]
                count[:, y : y + 32, x0 : x0 + 32] += 1
    expected = (total / count).softmax(0)
    torch.testing.assert_close(torch.from_numpy(got.probs), expected, atol=1e-5, rtol=1e-5)
    assert got.mask.shape == (40, 50)


def test_tiles_of_a_pointwise_model_equal_the_whole_image():
    """A 1x1-conv model has no context, so tiling must not change its output at all."""

    class Pointwise(nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = nn.Sequential(nn.Conv2d(3, 4, 1))

        def forward(self, x):
            return {"out": self.classifier(x)}

    torch.manual_seed(1)
    model, image = Pointwise(), rand_image(70, 45)
    whole = Segmenter(model, size="native").predict(image, probs=True)
    tiled = Segmenter(model, size="native", tile=16, stride=10).predict(image, probs=True)
    np.testing.assert_allclose(tiled.probs, whole.probs, atol=1e-6)
    # tiles at a resized resolution are assembled, then upsampled to the input size
    resized = Segmenter(model, size=30, tile=16).predict(image)
    assert resized.mask.shape == (70, 45)


def test_tta_equals_averaging_by_hand():
    model, image = TinyFCN().eval(), rand_image(36, 44, seed=3)
    got = Segmenter(model, size="native", tta=(0.5, 1.0, 1.5)).predict(image, probs=True)
    x = SemanticSegmentation(resize_size=None)(image)[None]
    outs = []
    with torch.no_grad():
        for s in (0.5, 1.0, 1.5):
            xs = F.interpolate(x, size=(round(36 * s), round(44 * s)), mode="bilinear", align_corners=False)
            plain = model(xs)["out"]
            flipped = model(xs.flip(-1))["out"].flip(-1)
            for o in (plain, flipped):
                outs.append(F.interpolate(o, size=(36, 44), mode="bilinear", align_corners=False))
    expected = torch.stack(outs).mean(0)[0].softmax(0)
    torch.testing.assert_close(torch.from_numpy(got.probs), expected, atol=1e-5, rtol=1e-5)
    assert not np.allclose(got.probs, Segmenter(model, size="native").predict(image, probs=True).probs, atol=1e-3)


def test_same_size_inputs_share_a_forward_pass(monkeypatch):
    seg = Segmenter(TinyFCN(), size=32, batch_size=4)
    calls = []
    original = seg.logits
    monkeypatch.setattr(seg, "logits", lambda b: calls.append(b.shape[0]) or original(b))
    images = [rand_image(40, 60, seed=i) for i in range(3)] + [rand_image(50, 50, seed=9)]
    batched = seg.predict_batch(images)
    assert sorted(calls) == [1, 3]
    for image, result in zip(images, batched, strict=True):
        single = seg.predict(image)
        np.testing.assert_array_equal(result.mask, single.mask)
        assert result.mask.shape == (image.height, image.width)


def test_predict_paths_decodes_in_workers_and_reports_bad_files(tmp_path):
    paths = []
    for i, (h, w) in enumerate([(30, 40), (30, 40), (41, 23), (30, 40)]):
        paths.append(tmp_path / f"im{i}.png")
        rand_image(h, w, seed=i).save(paths[-1])
    (tmp_path / "bad.jpg").write_text("not a jpeg")
    paths.insert(2, tmp_path / "bad.jpg")
    seg = Segmenter(TinyFCN(), size=24, batch_size=2)
    serial = dict(seg.predict_paths(paths, workers=0))
    parallel = dict(seg.predict_paths(paths, workers=2))
    assert set(serial) == set(parallel) == set(paths)
    assert isinstance(serial[tmp_path / "bad.jpg"], ImageDecodeError)
    assert "bad.jpg" in str(parallel[tmp_path / "bad.jpg"])
    for p in paths:
        if p.name != "bad.jpg":
            np.testing.assert_array_equal(serial[p].mask, parallel[p].mask)
            np.testing.assert_array_equal(serial[p].mask, seg.predict(p).mask)


def test_banded_overlay_and_stats_equal_whole_image(monkeypatch):
    from fcnseg import results
    from fcnseg.transforms import overlay

    rng = np.random.default_rng(0)
    mask = rng.integers(0, 4, (37, 23)).astype(np.uint8)
    r = SegmentationResult(
        mask, list("abcd"), confidence=rng.random((37, 23), dtype=np.float32), image=rand_image(37, 23)
    )
    whole_stats = r.class_stats()
    monkeypatch.setattr(results, "BAND_PIXELS", 23 * 5)  # bands of 5 rows
    assert len(results._bands(37, 23)) == 8
    np.testing.assert_array_equal(np.asarray(r.overlay(0.4)), np.asarray(overlay(r.image, mask, 0.4)))
    banded = r.class_stats()
    assert [s["index"] for s in banded] == [s["index"] for s in whole_stats]
    for b, w in zip(banded, whole_stats, strict=True):
        assert b["pixels"] == w["pixels"] == int((mask == b["index"]).sum())
        assert b["mean_confidence"] == pytest.approx(r.confidence[mask == b["index"]].mean(), rel=1e-5)


def test_class_stats_by_hand():
    mask = np.array([[0, 0, 2], [2, 2, 2]], np.uint8)
    conf = np.array([[0.5, 0.7, 0.9], [0.8, 0.6, 0.5]], np.float32)
    r = SegmentationResult(mask, ["bg", "cat", "dog"], confidence=conf)
    dog, bg = r.class_stats()
    assert (dog["index"], dog["name"], bg["index"], bg["name"]) == (2, "dog", 0, "bg") and r.classes == ["dog", "bg"]
    assert dog["share"] == pytest.approx(4 / 6) and bg["pixels"] == 2 and bg["share"] == pytest.approx(2 / 6)
    assert dog["mean_confidence"] == pytest.approx((0.9 + 0.8 + 0.6 + 0.5) / 4)
    assert bg["mean_confidence"] == pytest.approx(0.6)


def test_two_classes_sharing_a_name_both_count():
    """Two classes named alike (a classes.txt or export may list a name twice) stay two entries, by index."""
    mask = np.array([[0, 1, 1], [2, 2, 2]], np.uint8)
    r = SegmentationResult(mask, ["bg", "car", "car"])
    assert [(s["index"], s["name"], s["pixels"]) for s in r.class_stats()] == [
        (2, "car", 3),
        (1, "car", 2),
        (0, "bg", 1),
    ]
    assert r.classes == ["car", "car", "bg"]


@pytest.mark.slow
def test_segmenter_from_checkpoint_takes_its_categories(tmp_path):
    from fcnseg import fcn_resnet50

    path = tmp_path / "ckpt.pth"
    torch.save({"model": fcn_resnet50(num_classes=2).state_dict(), "categories": ["sky", "ground"]}, path)
    seg = Segmenter("fcn_resnet50", path, size="native")
    result = seg.predict(rand_image(33, 47))
    assert seg.categories == ["sky", "ground"] and result.mask.shape == (33, 47)
    assert set(result.classes) <= {"sky", "ground"}


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="stride"):
        Segmenter(TinyFCN(), tile=32, stride=40)
    with pytest.raises(ValueError, match="scales"):
        Segmenter(TinyFCN(), tta=(0.0, 1.0))
    with pytest.raises(ValueError, match="256"):
        Segmenter(TinyFCN(300))


# ----------------------------------------------------------------------------- writers


def test_writers_round_trip(tmp_path):
    image = rand_image(20, 30)
    result = Segmenter(TinyFCN(), size="native").predict(image, probs=True)
    written = outputs.write_outputs(result, tmp_path / "a", list(outputs.OUTPUT_KINDS), {"input": "a.png"})
    assert sorted(p.name for p in written) == sorted(
        ["a_mask.png", "a_color.png", "a_overlay.jpg", "a_probs.npz", "a.json"]
    )
    mask = Image.open(tmp_path / "a_mask.png")
    assert mask.mode == "P" and mask.size == (30, 20)
    np.testing.assert_array_equal(np.asarray(mask), result.mask)
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "a_color.png")), np.asarray(result.to_image().convert("RGB"))
    )
    assert Image.open(tmp_path / "a_overlay.jpg").size == (30, 20)
    npz = np.load(tmp_path / "a_probs.npz")
    np.testing.assert_allclose(npz["probs"].astype(np.float32), result.probs, atol=1e-3)
    assert list(npz["categories"]) == result.categories
    record = json.loads((tmp_path / "a.json").read_text())
    assert record["input"] == "a.png" and (record["width"], record["height"]) == (30, 20)
    assert sum(c["pixels"] for c in record["classes"]) == 600


def test_disk_full_mid_write_leaves_no_partial_file(tmp_path, monkeypatch):
    result = Segmenter(TinyFCN(), size="native").predict(rand_image(20, 30))

    def full_disk(result, f, meta):
        f.write(b"\x89PNG half an image")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(outputs.WRITERS, "overlay", full_disk)
    with pytest.raises(OSError, match="No space"):
        outputs.write_outputs(result, tmp_path / "a", ["mask", "overlay", "json"])
    assert list(tmp_path.iterdir()) == []  # the mask written first is removed too: all outputs or none


def test_interrupted_write_leaves_no_temporary_file(tmp_path):
    def interrupted(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        outputs.atomic_write(tmp_path / "x.png", interrupted)
    assert list(tmp_path.iterdir()) == []
    outputs.atomic_write(tmp_path / "x.png", lambda f: f.write(b"whole"))
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"] and (tmp_path / "x.png").read_bytes() == b"whole"


def test_summary_formats(tmp_path):
    rows = [{"input": "a.jpg", "status": "ok", "width": 3, "height": 2, "rank": 0}, {"input": "b", "status": "failed"}]
    outputs.write_summary(rows, tmp_path / "s.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["status"] for r in lines] == ["ok", "failed"] and lines[0]["width"] == 3
    outputs.write_summary(rows, tmp_path / "s.csv")
    import csv

    table = list(csv.DictReader(io.StringIO((tmp_path / "s.csv").read_text())))
    assert table[0]["input"] == "a.jpg" and table[1]["status"] == "failed"


def test_plot_result_shows_the_classes_present():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from fcnseg.viz import plot_result

    mask = np.array([[0, 1], [1, 1]], np.uint8)
    r = SegmentationResult(mask, ["bg", "cat", "dog"], confidence=np.ones((2, 2), np.float32), image=rand_image(2, 2))
    fig = plot_result(r)
    assert [ax.get_title() for ax in fig.axes] == ["image", "mask", "overlay"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["cat (75.0%)", "bg (25.0%)"]
