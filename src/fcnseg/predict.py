"""Images in, label maps out: the :class:`Segmenter` API used by the CLI, the server and the examples.

The data path of every prediction::

    decode (imageio.load_image) -> preset (resize shorter side, normalize) -> Segmenter.logits, the one forward
    -> [TTA: flips and scales averaged] [tiles: overlapping windows averaged] -> logits at the model's resolution
    -> labels at the input size (fcnseg.upsample) [confidence, probs: upsampled in row blocks, softmax]
    -> SegmentationResult

The full-resolution (K, H, W) probability map is never held unless asked for (``probs=True``): a 24 MP photo
with 21 classes would need 2 GB of float32 for it, so the upsampling and softmax run a few rows at a time. The mask
alone does not need the K upsampled logits at all (:func:`fcnseg.upsample.upsampled_labels`): only pixels next to
a class boundary do, which makes the default path's label upsampling a few percent of what interpolating every
class costs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from . import storage
from .distributed import select_device
from .faults import is_out_of_memory
from .imageio import ImageDecodeError, load_image
from .models import get_model, load_weights, model_for
from .optimize import SpeedPlan
from .optimize import optimize as _optimize
from .results import SegmentationResult
from .transforms import IMAGENET_MEAN, IMAGENET_STD, ImageLike, SemanticSegmentation
from .upsample import _labels, postprocess, upsampled_labels, upsampled_rows
from .weights import (
    OFFICIAL_SIZE,
    VOC_CATEGORIES,
    LoadedWeights,
    WeightsEnum,
    WeightsError,
    checkpoint_path,
    fit_state_dict,
    read_weights_file,
)
from .weights import load_weights as _load_enum_weights

__all__ = [
    "TTA_SCALES",
    "SegmentationResult",
    "Segmenter",
    "decode_input",
    "describe_size",
    "input_size",
]

TTA_SCALES = (0.75, 1.0, 1.25)


Size = int | Literal["auto", "native"]


class _Default:
    """Segmenter's default weights: ``"DEFAULT"`` with a model name; with a module, the module's own."""

    def __repr__(self) -> str:
        return "'DEFAULT'"


_DEFAULT: Any = _Default()


def input_size(size: Size, weights: LoadedWeights | None, tiled: bool = False) -> tuple[int | None, str]:
    """The one size rule: the shorter side images are resized to before the model (None: native), and why.

    ``"auto"`` is the size the weights are meant for (:attr:`LoadedWeights.size`: a training checkpoint's
    validation size, else 520), or native resolution with tiles; ``"native"`` keeps each image as it is.
    """
    if size == "native":
        return None, "as asked"
    if size == "auto":
        if tiled:
            return None, "tiles run at native resolution"
        if weights is None:
            return OFFICIAL_SIZE, "no weights to say otherwise; the official weights' size"
        return weights.size, weights.size_reason
    if isinstance(size, int) and not isinstance(size, bool) and size >= 1:
        return size, "as asked"
    raise ValueError(f"size must be a positive pixel count, 'auto' or 'native', got {size!r}")


def describe_size(size: int | None, reason: str) -> str:
    """The line every command prints about its preprocessing: which size, and why."""
    shown = "native resolution" if size is None else f"shorter side resized to {size}"
    return f"preprocessing: {shown} ({reason})"


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``length``: every ``stride``, the last one flush with the end."""
    if length <= window:
        return [0]
    return [*range(0, length - window, stride), length - window]


class Segmenter:
    """A model plus its preprocessing, ready to segment images.

    Args:
        model: a model name (``"fcn_resnet50"``), an ``nn.Module`` returning ``{"out": logits}``, or None: the
            model a checkpoint given as ``weights`` records, else ``"fcn_resnet50"``. A name other than the
            checkpoint's is an error.
        weights: weights name (``"DEFAULT"``, the default with a model name), enum member, checkpoint path,
            weights already read by :func:`fcnseg.models.load_weights`, or None (random init). With a module:
            a checkpoint path, enum member or weights already read are loaded into it (every key and shape must
            fit), None or nothing keeps its own; a name is refused (it needs the model's name to mean anything).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        size: shorter side the image is resized to before the model, or ``"native"`` for each image's own
            resolution. The default ``"auto"`` is every command's rule (:func:`input_size`): the size the weights
            are meant for (a training checkpoint's validation size, else 520) for whole images, native with
            ``tile``. :attr:`size_reason` says which applied.
        categories: class names; taken from the weights or checkpoint when not given.
        tile: sliding-window side in pixels (at the model's input resolution), or None for whole images.
            Overlapping windows' logits are averaged; memory grows with ``tile x width``, not the image area.
        stride: step between windows (default 3/4 of ``tile``); at most ``tile`` so that windows overlap or touch.
        tta: test-time augmentation: True for horizontal flips at scales :data:`TTA_SCALES`, or a sequence of
            scales; logits of all variants are averaged.
        batch_size: images (or windows) per forward pass.
        optimize: how the model runs (:mod:`fcnseg.optimize`): ``"default"`` BN folded into the convs and
            channels-last fp32 (the same logits as ``"none"``, plain fp32 eager, to float rounding, and faster),
            ``"auto"`` the fastest path for this device that passes the accuracy guard, a path name
            (``"bf16"``, ``"int8"``...) or a plan.
    """

    def __init__(
        self,
        model: str | nn.Module | None = None,
        weights: str | Path | WeightsEnum | LoadedWeights | None = _DEFAULT,
        *,
        device: str | torch.device = "auto",
        size: Size = "auto",
        categories: Sequence[str] | None = None,
        tile: int | None = None,
        stride: int | None = None,
        tta: bool | Sequence[float] = False,
        batch_size: int = 4,
        optimize: str | SpeedPlan = "default",
    ) -> None:
        self.device = select_device(str(device))
        if isinstance(model, nn.Module):
            self.model_name, net = type(model).__name__, model
            loaded = None if weights is _DEFAULT else _into_module(model, weights)
        else:
            weights = "DEFAULT" if weights is _DEFAULT else weights
            self.model_name = model_for(model, weights)
            loaded = load_weights(self.model_name, weights)  # read once, then passed down
            net = get_model(self.model_name, weights=loaded, aux_loss=False)
        if categories is None and loaded is not None:
            categories = loaded.categories
        # what was loaded, for the commands to report; the tensors now live in the model
        self.weights = None if loaded is None else replace(loaded, state_dict={})
        self.model = net.eval().to(self.device)
        n = self._num_classes()
        if n > 256:
            raise ValueError(f"the model predicts {n} classes; masks are 8-bit PNGs, so at most 256 are supported")
        self.categories = list(categories) if categories is not None else _default_names(n)
        if len(self.categories) != n:
            raise ValueError(f"{len(self.categories)} category names given for a model with {n} classes")
        self._forward = _optimize(self.model, optimize)
        resize, self.size_reason = input_size(size, loaded, tiled=tile is not None)
        self.preprocess = SemanticSegmentation(resize_size=resize, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        if tile is not None and not 0 < (stride or tile) <= tile:
            raise ValueError(f"tile stride must lie in 1..{tile} (the window size), got {stride}")
        self.tile, self.stride = tile, (stride or max(1, tile * 3 // 4)) if tile else None
        self.tta_scales = tuple(TTA_SCALES if tta is True else tta or ())
        if any(s <= 0 for s in self.tta_scales):
            raise ValueError(f"TTA scales must be positive, got {self.tta_scales}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size

    def describe_size(self) -> str:
        """``preprocessing: shorter side resized to 96 (the size best.pth was validated at...)``: for the log."""
        return describe_size(self.preprocess.resize_size, self.size_reason)

    def speed_path(self) -> str | None:
        """With ``optimize="auto"``: which path runs and which faster ones failed the accuracy guard or broke (after
        the first batch); with a compiled or ONNX Runtime path: that it fell back to eager fp32, if it did;
        ``None`` otherwise."""
        describe = getattr(self._forward, "describe", None)
        return describe() if describe else None

    def speed_details(self) -> list[str]:
        """With ``optimize="auto"``: what each faster candidate did (refused by the guard and on what, failed and
        why, built in how long and whether from the cache); empty otherwise."""
        details = getattr(self._forward, "details", None)
        return details() if details else []

    def prepare_serving(self, side: int) -> str | None:
        """With ``optimize="auto"``: judge the candidates now, on the bundled photos at ``side`` x ``side`` (a
        server has no image of the user's yet), and check a sample of later calls against fp32 in the background.
        Returns what was measured, on what (``None`` with another path)."""
        serve = getattr(self._forward, "serve", None)
        return serve((1, 3, side, side)) if serve else None

    def _num_classes(self) -> int:
        last = [m for m in self.model.modules() if isinstance(m, nn.Conv2d)]
        classifier = getattr(self.model, "classifier", None)
        conv = classifier[-1] if isinstance(classifier, nn.Sequential) else last[-1]
        return conv.out_channels

    @torch.inference_mode()
    def logits(self, batch: Tensor) -> Tensor:
        """Normalized (N, 3, h, w) batch -> (N, K, h, w) float32 logits.

        Every forward pass (whole images, tiles, TTA variants) goes through here: replace this method to
        plug in another runtime; ``optimize=`` does so through :mod:`fcnseg.optimize`.
        """
        return self._forward(batch.to(self.device)).float()

    def forward_tta(self, batch: Tensor) -> Tensor:
        """Like :meth:`logits`, averaged over the TTA variants (each scale, unflipped and flipped) when enabled."""
        if not self.tta_scales:
            return self.logits(batch)
        h, w = batch.shape[-2:]
        total = None
        for s in self.tta_scales:
            size = (max(1, round(h * s)), max(1, round(w * s)))
            x = batch if size == (h, w) else F.interpolate(batch, size=size, mode="bilinear", align_corners=False)
            for flip in (False, True):
                out = self.logits(x.flip(-1)) if flip else self.logits(x)
                out = postprocess(out.flip(-1) if flip else out, (h, w))
                total = out if total is None else total + out
        return total / (2 * len(self.tta_scales))

    def _tiled_rows(self, x: Tensor) -> Iterator[Tensor]:
        """(1, 3, h, w) -> row blocks (K, n, w) of window-averaged logits, holding one band of windows at a time."""
        _, _, h, w = x.shape
        wh, ww = min(self.tile, h), min(self.tile, w)
        ys, xs = window_starts(h, wh, self.stride), window_starts(w, ww, self.stride)
        acc = count = None  # sums and window counts for rows [y, y + wh) of the current band
        for b, y in enumerate(ys):
            crops = torch.cat([x[:, :, y : y + wh, x0 : x0 + ww] for x0 in xs])
            out = torch.cat(
                [self.forward_tta(crops[i : i + self.batch_size]) for i in range(0, len(xs), self.batch_size)]
            )
            if acc is None:
                acc = out.new_zeros(out.shape[1], wh, w)
                count = out.new_zeros(1, wh, w)
            for x0, o in zip(xs, out, strict=True):
                acc[:, :, x0 : x0 + ww] += o
                count[:, :, x0 : x0 + ww] += 1
            done = (ys[b + 1] if b + 1 < len(ys) else h) - y  # rows no later window touches
            yield acc[:, :done] / count[:, :done]
            acc = torch.cat([acc[:, done:], acc.new_zeros(acc.shape[0], done, w)], 1)
            count = torch.cat([count[:, done:], count.new_zeros(1, done, w)], 1)

    @torch.inference_mode()
    def segment_tensors(
        self,
        images: Sequence[Image.Image],
        batch: Tensor,
        *,
        probs: bool = False,
        confidence: bool = False,
        temporal: Callable[[Tensor], Tensor] | None = None,
    ) -> list[SegmentationResult]:
        """Decoded images and their preprocessed, same-size (N, 3, h, w) batch -> one result per image.

        ``confidence`` (the winning class's probability per pixel) and ``probs`` need every class upsampled to
        the image's size; the mask alone does not (:func:`fcnseg.upsample.upsampled_labels`), so they are computed
        only if asked, the confidence otherwise later, on first use, from the low-resolution logits the result
        keeps. Tiles at the image's own size pass their rows once: there the confidence comes with the mask (a
        softmax of rows already at full size, a small part of the tiles' forward passes).
        ``temporal`` maps the batch's (N, K, h, w) logits before the labels (video smoothing; not with tiles).
        """
        results = []
        logits = None if self.tile else self.forward_tta(batch)
        if temporal is not None and logits is not None:
            logits = temporal(logits)
        for i, image in enumerate(images):
            size = (image.height, image.width)
            later = None  # computes the confidence on demand (SegmentationResult.class_stats)
            if self.tile and tuple(batch.shape[-2:]) == size:  # tiles ran at the image's own size, rows one pass:
                mask, conf, p, ent = _labels(self._tiled_rows(batch[i : i + 1]), size, probs, True)  # confidence now
            else:
                low = torch.cat(list(self._tiled_rows(batch[i : i + 1])), 1) if self.tile else logits[i]
                conf = p = ent = None
                if probs or confidence:
                    _, conf, p, ent = _labels(upsampled_rows(low, size), size, probs, confidence)
                else:
                    later = _confidence_later(low.cpu(), size)
                # the mask comes from one path whatever else is asked: near-ties must not flip with confidence=True
                mask = upsampled_labels(low, size)
            results.append(SegmentationResult(mask, self.categories, p, conf, image, confidence_fn=later, entropy=ent))
        return results

    def predict(
        self, image: ImageLike | str | Path, *, probs: bool = False, confidence: bool = False
    ) -> SegmentationResult:
        """Segment one image; ``confidence``/``probs`` also return per-pixel probabilities (slower, see
        :meth:`segment_tensors`)."""
        return self.predict_batch([image], probs=probs, confidence=confidence)[0]

    def predict_batch(
        self, images: Sequence[ImageLike | str | Path], *, probs: bool = False, confidence: bool = False
    ) -> list[SegmentationResult]:
        """Segment several images; same-size inputs share one forward pass."""
        pils = [load_image(im) if _is_path(im) else _as_pil(im) for im in images]
        results: list[SegmentationResult | None] = [None] * len(pils)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(pils):
            groups.setdefault(im.size, []).append(i)
        for idx in groups.values():
            for k in range(0, len(idx), self.batch_size):
                part = idx[k : k + self.batch_size]
                batch = torch.stack([self.preprocess(pils[i]) for i in part])
                found = self.segment_tensors([pils[i] for i in part], batch, probs=probs, confidence=confidence)
                for i, r in zip(part, found, strict=True):
                    results[i] = r
        return results  # type: ignore[return-value]

    def predict_video(self, source: str | Path | Any, **options: Any) -> Iterator[tuple[Any, SegmentationResult]]:
        """Segment a clip or a live stream lazily: ``(frame, result)`` per frame (:func:`fcnseg.video.predict_video`,
        whose keywords ``max_frames``, ``duration``, ``smooth``, ``confidence`` it takes); needs
        ``pip install 'fcnseg[video]'``."""
        from .video import predict_video

        return predict_video(self, source, **options)

    def predict_paths(
        self, paths: Sequence[str | Path], *, workers: int = 0, probs: bool = False, confidence: bool = False
    ) -> Iterator[tuple[Path, SegmentationResult | ImageDecodeError]]:
        """Segment files, decoding them in ``workers`` processes while the model runs.

        Yields ``(path, result)``, or ``(path, ImageDecodeError)`` for a file that could not be decoded, in the
        order of ``paths``. Inputs whose preprocessed size matches are batched, ``batch_size`` at a time; at most
        ``batch_size`` decoded images wait for a batch, so memory does not grow with mixed sizes: when that many
        wait, the batch of the oldest one runs, so results wait for no more than a few batches to be yielded in order.
        """
        paths = [storage.as_path(p) for p in paths]  # a URL stays one: decoded from the stream
        if not (self.tile or self.tta_scales) and hasattr(self._forward, "expect"):  # --fast: is building worth it?
            self._forward.expect(len(paths))
        loader = DataLoader(
            _DecodeFiles(paths, self.preprocess),
            batch_size=None,
            num_workers=workers,
            collate_fn=_identity,
            prefetch_factor=2 if workers else None,
        )
        pending: dict[tuple[int, ...], list[tuple[int, Image.Image, Tensor]]] = {}
        done: dict[int, SegmentationResult | ImageDecodeError] = {}  # finished, waiting for an earlier input
        after = 0  # the next input to yield

        def ready() -> Iterator[tuple[Path, SegmentationResult | ImageDecodeError]]:
            nonlocal after
            while after in done:
                yield paths[after], done.pop(after)
                after += 1

        for i, pixels, x, error in loader:  # in input order
            if error is not None:
                done[i] = ImageDecodeError(error)
            else:
                pending.setdefault(tuple(x.shape), []).append((i, Image.fromarray(pixels.numpy()), x))
                if sum(map(len, pending.values())) >= self.batch_size:
                    oldest = min(pending, key=lambda k: pending[k][0][0])
                    done.update(self._run_group(paths, pending.pop(oldest), probs, confidence))
            yield from ready()
        for key in sorted(pending, key=lambda k: pending[k][0][0]):
            done.update(self._run_group(paths, pending[key], probs, confidence))
            yield from ready()

    def _run_group(
        self, paths: list[Path], group: list[tuple[int, Image.Image, Tensor]], probs: bool, confidence: bool
    ) -> Iterator[tuple[int, SegmentationResult | ImageDecodeError]]:
        """One batch, as ``(input index, result)``; out of memory, it is retried one image at a time, and an image
        that still does not fit fails alone (as an ImageDecodeError saying so)."""
        try:
            batch = torch.stack([x for *_, x in group])
            results = self.segment_tensors([im for _, im, _ in group], batch, probs=probs, confidence=confidence)
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            del e  # its traceback holds the batch's tensors
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            for i, im, x in group:
                alone = len(group) == 1
                yield (
                    i,
                    self._out_of_memory(paths[i], im) if alone else self._alone(paths[i], im, x, probs, confidence),
                )
            return
        for (i, _, _), r in zip(group, results, strict=True):
            yield i, r

    def _alone(
        self, path: Path, image: Image.Image, x: Tensor, probs: bool, confidence: bool
    ) -> SegmentationResult | ImageDecodeError:
        """An image of a batch that ran out of memory, retried by itself."""
        try:
            return self.segment_tensors([image], x[None], probs=probs, confidence=confidence)[0]
        except Exception as e:
            if not is_out_of_memory(e):
                raise
        return self._out_of_memory(path, image)

    def _out_of_memory(self, path: Path, image: Image.Image) -> ImageDecodeError:
        hint = "a smaller --window" if self.tile else "--tile or a smaller --size"
        return ImageDecodeError(f"{path}: out of memory segmenting {image.width}x{image.height} alone; try {hint}")


class _DecodeFiles(Dataset):
    """Decodes and preprocesses in DataLoader workers; a bad file becomes an error message, not an exception."""

    def __init__(self, paths: list[Path], preprocess: SemanticSegmentation) -> None:
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None, Tensor | None, str | None]:
        found = decode_input(self.paths[i], self.preprocess)
        if isinstance(found, str):
            return i, None, None, found
        image, x = found
        return i, torch.from_numpy(np.array(image)), x, None  # tensors travel through shared memory


def _into_module(module: nn.Module, weights: Any) -> LoadedWeights | None:
    """Load a checkpoint path, enum member or weights already read into ``module`` (a one-line error unless every
    key and shape fits; an aux head the module lacks is left out); returns what was read. None leaves it as it is."""
    if weights is None:
        return None
    if isinstance(weights, WeightsEnum):
        loaded = _load_enum_weights(type(weights), weights)
    elif isinstance(weights, LoadedWeights):
        loaded = weights
    elif (path := checkpoint_path(weights)) is not None:
        loaded = read_weights_file(path)
    else:
        raise WeightsError(
            f"weights {weights!r} with a module: a weights name needs a model name (Segmenter('fcn_resnet50', "
            f"{weights!r})); with a module, give a checkpoint file or None"
        )
    state_dict = loaded.state_dict
    if not any(k.startswith("aux_classifier.") for k in module.state_dict()):
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("aux_classifier.")}
    fit_state_dict(module, state_dict, loaded.source)
    return loaded


def _confidence_later(low: Tensor, size: tuple[int, int]) -> Callable[[], np.ndarray]:
    """The (H, W) confidence of (K, h, w) logits upsampled to ``size``, computed when called."""
    return lambda: _labels(upsampled_rows(low, size), size, False, True)[1]


def decode_input(
    source: str | storage.AnyPath | bytes, preprocess: SemanticSegmentation, name: str | None = None
) -> tuple[Image.Image, Tensor] | str:
    """A file or URL (or its bytes, labelled ``name``) -> the upright RGB image and its preprocessed (3, h, w)
    tensor, or the one-line reason it cannot be read: the decode step of every engine (DataLoader workers, Ray
    tasks). A store's fault that every input would meet (:class:`fcnseg.storage.StorageError`) is raised."""
    label = name or (f"<{len(source)} bytes>" if isinstance(source, bytes) else str(source))
    try:
        image = load_image(source, name=name)
        return image, preprocess(image)
    except ImageDecodeError as e:
        return str(e)
    except storage.StorageError:  # the store refuses every input alike: the run stops with its one line
        raise
    except Exception as e:  # keep going on anything a broken file can trigger in a decoder
        return f"{label}: cannot decode ({type(e).__name__}: {e})"


def _identity(item: Any) -> Any:
    return item


def _is_path(image: Any) -> bool:
    """A file to decode: a path, or a URL (``str`` or ``UPath``)."""
    return isinstance(image, (str, Path)) or storage.is_remote(image)


def _as_pil(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    from .transforms import to_uint8_tensor

    return Image.fromarray(to_uint8_tensor(image).permute(1, 2, 0).numpy())


def _default_names(n: int) -> list[str]:
    return VOC_CATEGORIES if n == len(VOC_CATEGORIES) else [f"class_{i}" for i in range(n)]
