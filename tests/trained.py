"""A trained FCN for the speed paths' guard: a model's last layer fitted to the generated shapes dataset.

Untrained weights (the golden fixtures) give logits with small margins (std ~0.6), where any reduced precision
flips pixels; a trained model decides its classes by wide margins. Training all of FCN on 2 CPU cores would take
hours, so only the classifier's last 1x1 conv (512 -> K) is fitted, on the frozen network's features computed
once (a linear probe: tens of seconds). The result is cached by the recipe and the input model's bytes.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from shapes_data import _sample
from torch import nn

from fcnseg.transforms import SemanticSegmentation

RECIPE = "probe-v2: 16 shapes 64x64 seed 0, classes 0/8/12, adam 1e-2 x 200 steps"
VOC_INDEX = (0, 8, 12)  # background, disc -> "cat", square -> "dog": three of the model's 21 classes


def shapes_batch(n: int = 16, side: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` normalized (3, side, side) shapes images and their (side, side) masks in VOC class indices."""
    rng = np.random.default_rng(seed)
    preset = SemanticSegmentation(resize_size=None)
    images, masks = [], []
    for _ in range(n):
        image, mask = _sample(rng, (side, side))
        images.append(preset(image))
        masks.append(torch.from_numpy(np.array(VOC_INDEX, dtype=np.int64)[mask]))
    return torch.stack(images), torch.stack(masks)


def _fit_last_layer(model: nn.Module) -> nn.Module:
    x, y = shapes_batch()
    head, last = nn.Sequential(*list(model.classifier)[:-1]), model.classifier[-1]
    with torch.no_grad():
        features = head(model.backbone(x)["layer4"])  # (N, 512, 8, 8): computed once, the rest stays frozen
    probe = copy.deepcopy(last).requires_grad_(True)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for _ in range(200):
        logits = F.interpolate(probe(features), size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = copy.deepcopy(model).eval()
    trained.classifier[-1].load_state_dict(probe.state_dict())
    return trained


def trained_model(model: nn.Module, cache_dir: Path) -> nn.Module:
    """``model`` (an FCN) with its last layer fitted to the shapes dataset; cached in ``cache_dir``."""
    digest = hashlib.sha256(RECIPE.encode())
    for k, v in model.state_dict().items():
        digest.update(k.encode() + v.detach().contiguous().numpy().tobytes())
    path = Path(cache_dir) / f"fcn-probe-{digest.hexdigest()[:16]}.pt"
    trained = copy.deepcopy(model).eval()
    if path.exists():
        trained.classifier[-1].load_state_dict(torch.load(path, weights_only=True))
        return trained
    trained = _fit_last_layer(model.eval())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(trained.classifier[-1].state_dict(), path)
    return trained
