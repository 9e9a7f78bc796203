"""Logits at the model's resolution -> labels (and probabilities) at the image's size, in bounded memory.

The full-resolution (K, H, W) logits are never held at once: :func:`upsampled_rows` yields them a block of rows
at a time (for confidence and probabilities), and :func:`upsampled_labels` interpolates only the pixels next to a
class boundary, since elsewhere the argmax of a bilinear mix is the argmax its four sources share. Both match
``F.interpolate(..., mode="bilinear", align_corners=False)`` (:func:`postprocess`) to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CHUNK_ELEMENTS", "postprocess", "upsampled_labels", "upsampled_rows"]

CHUNK_ELEMENTS = 1 << 24  # logits per row block while upsampling: 64 MB of float32


def postprocess(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, K, h, w) logits -> (N, K, H, W) at the original image size (bilinear, like the model's own upsampling)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _source_rows(h: int, out_h: int, start: int, stop: int) -> tuple[Tensor, Tensor, Tensor]:
    """Input rows and weights of output rows [start, stop) for bilinear resizing h -> out_h (align_corners=False)."""
    scale = torch.tensor(h / out_h, dtype=torch.float32)  # float32 arithmetic, as in PyTorch's CPU kernel
    src = ((torch.arange(start, stop, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_(min=0)
    i0 = src.long().clamp_(max=h - 1)
    return i0, (i0 + 1).clamp_(max=h - 1), src - i0.float()


def upsampled_rows(logits: Tensor, size: tuple[int, int], *, max_elements: int = CHUNK_ELEMENTS) -> Iterator[Tensor]:
    """(K, h, w) logits -> top-to-bottom row blocks (K, n, W) of ``postprocess(logits[None], size)[0]``.

    Each block holds at most ``max_elements`` values (one row at the least), so memory stays bounded
    whatever the output size. Vertical interpolation is done by hand on the needed input rows, horizontal
    by ``F.interpolate`` with the same scale as a whole-image resize; results match it to float rounding.
    """
    K, h, w = logits.shape
    H, W = size
    step = max(1, max_elements // (K * W))
    for start in range(0, H, step):
        stop = min(H, start + step)
        if h == H:
            block = logits[:, start:stop]
        else:
            i0, i1, lam = _source_rows(h, H, start, stop)
            lam = lam.to(logits.device)[:, None]
            block = logits[:, i0.to(logits.device)] * (1 - lam) + logits[:, i1.to(logits.device)] * lam  # (K, n, w)
        if w != W:
            block = F.interpolate(block[None], size=(stop - start, W), mode="bilinear", align_corners=False)[0]
        yield block


def upsampled_labels(logits: Tensor, size: tuple[int, int], *, max_elements: int = CHUNK_ELEMENTS) -> np.ndarray:
    """(K, h, w) logits -> (H, W) uint8 argmax of ``postprocess(logits[None], size)[0]``, interpolating few pixels.

    Bilinear resizing (``align_corners=False``) makes each output pixel's logit vector a convex combination of
    the vectors of 4 source pixels. Where those 4 share their argmax c, ``L_c >= L_j`` holds at each of them, so
    it holds for the combination too: the output's argmax is c, with no interpolation. Only pixels whose 4
    sources disagree, which lie along class boundaries, get all K logits interpolated (in batches of at most
    ``max_elements`` values). The result equals the full interpolation's argmax wherever the top-2 margin exceeds
    float rounding (tested against ``F.interpolate``).
    """
    K, h, w = logits.shape
    H, W = size
    top = logits.argmax(0)  # (h, w)
    if (h, w) == (H, W):
        return top.to(torch.uint8).cpu().numpy()
    # shared[i, j]: the argmax of source pixels (i, j), (i, j+1), (i+1, j), (i+1, j+1) if they agree, else -1;
    # the last row and column are repeated, as the interpolation clamps its second source index
    ext = F.pad(top[None, None].float(), (0, 1, 0, 1), mode="replicate")[0, 0].long()
    agree = (ext[1:, :-1] == top) & (ext[:-1, 1:] == top) & (ext[1:, 1:] == top)
    shared = torch.where(agree, top, -1).to(torch.int16)
    rows, cols = _source_rows(h, H, 0, H), _source_rows(w, W, 0, W)
    r0 = rows[0].to(logits.device)
    c0, c1, cx = (t.to(logits.device) for t in cols)
    pixels = logits.permute(1, 2, 0).reshape(h * w, K).contiguous()  # (h*w, K): a pixel's K logits side by side

    def at(i: Tensor, j: Tensor) -> Tensor:  # (m, K) logits of source pixels (i, j)
        return pixels.index_select(0, i * w + j)

    mask = np.empty(size, dtype=np.uint8)
    step = max(1, max_elements // max(W, 1))  # rows of labels per block
    per_batch = max(1, max_elements // K)
    for start in range(0, H, step):
        stop = min(H, start + step)
        labels = shared.index_select(0, r0[start:stop]).index_select(1, c0)  # (n, W)
        ys, xs = torch.nonzero(labels < 0, as_tuple=True)
        for a in range(0, len(ys), per_batch):  # boundary pixels: all K logits interpolated
            y, x = ys[a : a + per_batch], xs[a : a + per_batch]
            i0, i1, ly = (t.to(logits.device)[start + y] for t in rows)
            j0, j1, lx = c0[x], c1[x], cx[x]
            ly, lx = ly[:, None], lx[:, None]
            # in the order of PyTorch's CPU kernel: rows outside, columns inside
            top_row = (1 - lx) * at(i0, j0) + lx * at(i0, j1)
            value = (1 - ly) * top_row + ly * ((1 - lx) * at(i1, j0) + lx * at(i1, j1))
            labels[y, x] = value.argmax(1).to(labels.dtype)
        mask[start:stop] = labels.to(torch.uint8).cpu().numpy()
    return mask


def _labels(
    blocks: Iterable[Tensor], size: tuple[int, int], probs: bool, confidence: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Row blocks of logits -> (mask uint8 (H, W), confidence float32 (H, W) or None, probs (K, H, W) or None,
    entropy float32 (H, W) or None). With ``confidence``, the entropy of each pixel's class distribution too (in
    nats): both say how sure the model is, and both come from the same softmax."""
    mask = np.empty(size, dtype=np.uint8)
    conf = np.empty(size, dtype=np.float32) if confidence else None
    entropy = np.empty(size, dtype=np.float32) if confidence else None
    full = None
    row = 0
    for block in blocks:
        n = block.shape[1]
        if not (probs or confidence):
            mask[row : row + n] = block.argmax(0).to(torch.uint8).cpu().numpy()
            row += n
            continue
        p = block.float().softmax(0)  # (K, n, W)
        c, m = p.max(0)
        mask[row : row + n] = m.to(torch.uint8).cpu().numpy()
        if conf is not None:
            conf[row : row + n] = c.cpu().numpy()
            entropy[row : row + n] = -torch.special.xlogy(p, p).sum(0).cpu().numpy()  # 0 log 0 = 0
        if probs:
            if full is None:
                full = np.empty((block.shape[0], *size), dtype=np.float32)
            full[:, row : row + n] = p.cpu().numpy()
        row += n
    if row != size[0]:
        raise RuntimeError(f"row blocks covered {row} rows, expected {size[0]}")
    return mask, conf, full, entropy
