"""evaluate / evaluate_dataset: hand-checkable matrices, size-grouped batches, batch-size invariance, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from seg_datasets import make_folder
from torch import nn

from fcnseg.data import FolderSegmentation
from fcnseg.evaluate import evaluate, evaluate_dataset, shard, size_grouped_batches
from fcnseg.models import fcn_resnet50


class Constant(nn.Module):
    """Predicts class ``c`` everywhere, at the input's size; records the batch shapes it sees."""

    def __init__(self, num_classes: int, c: int) -> None:
        super().__init__()
        self.num_classes, self.c, self.seen = num_classes, c, []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        out = torch.zeros(x.shape[0], self.num_classes, *x.shape[-2:])
        out[:, self.c] = 1
        return {"out": out}


def test_size_grouped_batches_and_shard():
    assert size_grouped_batches(["a", "b", "a", "a", "b", "c"], 2) == [[0, 2], [3], [1, 4], [5]]
    assert size_grouped_batches([], 3) == []
    with pytest.raises(ValueError):
        size_grouped_batches([1], 0)
    parts = [list(shard(7, r, 3)) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(7))  # every item once, none padded or repeated
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]


@pytest.fixture
def folder(tmp_path):
    sizes = [(20, 26), (24, 18), (20, 26), (30, 39), (24, 18), (20, 26), (17, 22)]
    truth = make_folder(tmp_path, ["bg", "a", "b", "c"], {"val": sizes})
    return FolderSegmentation(tmp_path, "val"), truth["val"]


def _pil_resized(labels: np.ndarray, size: int) -> np.ndarray:
    h, w = labels.shape
    nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    return np.asarray(Image.fromarray(labels).resize((nw, nh), Image.NEAREST))


@pytest.mark.parametrize("native", [False, True])
def test_constant_model_gives_ground_truth_counts(folder, native):
    """Predicting class 2 everywhere puts each true class's pixel count in column 2: known without the code."""
    ds, truth = folder
    run = evaluate_dataset(Constant(4, 2), ds, 4, resize_size=16, native=native, batch_size=3)
    labels = [truth[k] if native else _pil_resized(truth[k], 16) for k in sorted(truth)]
    counts = np.bincount(np.concatenate([m.reshape(-1) for m in labels]), minlength=256)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[:, 2] = counts[:4]
    np.testing.assert_array_equal(run.confusion.mat.numpy(), expected)
    assert run.num_images == 7


def test_batches_hold_one_size_and_limit(folder):
    ds, _ = folder
    model = Constant(4, 0)
    run = evaluate_dataset(model, ds, 4, resize_size=16, batch_size=2, limit=5)
    assert run.num_images == 5
    # the first five resize to (16, 20), (21, 16), (16, 20), (16, 20), (21, 16): grouped by size, at most 2 a batch
    assert model.seen == [(2, 3, 16, 20), (1, 3, 16, 20), (2, 3, 21, 16)]


@pytest.mark.slow
def test_batch_size_does_not_change_the_result(folder):
    """A real FCN on mixed sizes, scored at native size: batch size 1 and 3 give the same matrix."""
    ds, _ = folder
    torch.manual_seed(0)
    model = fcn_resnet50(num_classes=4, aux_loss=False).eval()
    one = evaluate_dataset(model, ds, 4, resize_size=16, native=True, batch_size=1, limit=5)
    three = evaluate_dataset(model, ds, 4, resize_size=16, native=True, batch_size=3, limit=5)  # 2 pairs batched
    assert (one.confusion.mat.sum(0) > 0).sum() > 1  # the random model predicts several classes
    torch.testing.assert_close(one.confusion.mat, three.confusion.mat, rtol=0, atol=0)


def test_evaluate_accepts_stacked_batches():
    """The training loop's validation passes stacked (N,3,H,W) / (N,H,W) tensors."""
    targets = torch.tensor([[[0, 1], [1, 255]], [[2, 2], [0, 1]]])
    cm = evaluate(Constant(3, 1), [(torch.zeros(2, 3, 2, 2), targets)], 3)
    assert cm.mat.tolist() == [[0, 2, 0], [0, 3, 0], [0, 2, 0]]


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_image_is_a_one_line_error_naming_it(folder, workers):
    ds, _ = folder
    ds.images[3].write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"img003\.png: ") as e:
        evaluate_dataset(Constant(4, 0), ds, 4, resize_size=16, batch_size=2, workers=workers)
    assert "\n" not in str(e.value)
