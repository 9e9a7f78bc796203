"""Video in, one label map per frame out, through the photos' own pipeline; outputs that survive an interruption.

The data path of a clip or a live stream::

    container --PyAV demux + decode (a reader thread)--> Frame: upright RGB uint8 (display matrix applied,
    10-bit converted), its timestamp, the audio packets that came before it
    --Segmenter.preprocess, batch_size frames a batch--> Segmenter.segment_tensors (the photos' forward, TTA,
    tiles, labels) [--TemporalSmoothing of the low-resolution logits--] --> SegmentationResult per frame
    --VideoWriter (a writer thread)--> NAME_overlay.mp4, NAME_mask.mkv, NAME_stats.csv [, NAME_frames/*.png]

Decoding, the model and encoding overlap (FFmpeg's decoder and x264 release the GIL), and at most a few batches
of frames are held at a time, so a two-hour clip needs the memory of a few frames.

The package: :mod:`.reader` (decoding), :mod:`.writer` (the output files and why their formats), and here the
glue that runs a :class:`~fcnseg.predict.Segmenter` over the frames (:func:`predict_video`, :func:`segment_video`)
with :class:`TemporalSmoothing`.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .reader import (
    VIDEO_SUFFIXES,
    Frame,
    VideoDecodeError,
    VideoReader,
    autorotate_steps,
    display_upright,
    is_video,
    require_av,
)
from .writer import DEFAULT_KINDS, VIDEO_OUTPUTS, VideoWriter, read_masks, remove_video_outputs

if TYPE_CHECKING:
    from torch import Tensor

    from ..predict import Segmenter
    from ..results import SegmentationResult

__all__ = [
    "VIDEO_OUTPUTS",
    "VIDEO_SUFFIXES",
    "Frame",
    "TemporalSmoothing",
    "VideoDecodeError",
    "VideoReader",
    "VideoWriter",
    "autorotate_steps",
    "display_upright",
    "flicker",
    "is_video",
    "predict_video",
    "read_masks",
    "remove_video_outputs",
    "require_av",
    "segment_frames",
    "segment_video",
]


class TemporalSmoothing:
    """An exponential moving average of the low-resolution logits over consecutive frames.

    ``s_t = weight * s_{t-1} + (1 - weight) * logits_t``: a pixel changes class only when the new class's evidence
    outweighs the past frames', which removes single-frame flicker on a still scene at the cost of a lag of about
    ``1 / (1 - weight)`` frames on moving edges. Holds one (K, h, w) state: feed frames in order.
    """

    def __init__(self, weight: float) -> None:
        if not 0 <= weight < 1:
            raise ValueError(f"smoothing weight must lie in [0, 1), got {weight}")
        self.weight, self.state = weight, None

    def __call__(self, logits: Tensor) -> Tensor:
        """(N, K, h, w) logits of N consecutive frames -> the same, smoothed."""
        import torch

        out = torch.empty_like(logits)
        for i, x in enumerate(logits):
            if self.state is None or self.state.shape != x.shape:  # the first frame, or a size change
                self.state = x.clone()
            else:
                self.state.mul_(self.weight).add_(x, alpha=1 - self.weight)
            out[i] = self.state
        return out


def flicker(masks: Iterable[np.ndarray]) -> float:
    """Share of pixels whose class differs from the previous frame's, averaged over consecutive pairs."""
    changes, pairs, previous = 0.0, 0, None
    for m in masks:
        if previous is not None and previous.shape == m.shape:
            changes += float(np.mean(previous != m))
            pairs += 1
        previous = m
    return changes / pairs if pairs else 0.0


def _prefetch(items: Iterator[Frame], depth: int) -> Iterator[Frame]:
    """``items`` produced in a thread, at most ``depth`` ahead; its exception is re-raised here, in order."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def offer(entry: tuple[Any, BaseException | None]) -> bool:  # False once the consumer has stopped
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                q.put(entry, timeout=0.1)
                return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((done, None))
        except BaseException as e:  # handed to the consumer
            offer((done, e))

    thread = threading.Thread(target=produce, name="fcnseg-video-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def segment_frames(
    segmenter: Segmenter,
    frames: Iterable[Frame],
    *,
    smooth: TemporalSmoothing | None = None,
    confidence: bool = False,
) -> Iterator[tuple[Frame, SegmentationResult]]:
    """``(frame, result)`` per frame, ``segmenter.batch_size`` frames a forward pass, through
    :meth:`Segmenter.segment_tensors`: the photos' preset, model, TTA, tiles and labels."""
    if smooth is not None and segmenter.tile:
        raise ValueError("temporal smoothing works on whole frames; it cannot be combined with tiles")
    batch: list[Frame] = []

    def run() -> Iterator[tuple[Frame, SegmentationResult]]:
        import torch

        x = torch.stack([segmenter.preprocess(f.image) for f in batch])
        images = [f.image for f in batch]
        results = segmenter.segment_tensors(images, x, confidence=confidence, temporal=smooth)
        yield from zip(batch, results, strict=True)

    try:
        for frame in frames:
            if batch and batch[0].image.size != frame.image.size:  # a stream may change size mid-way
                yield from run()
                batch = []
            batch.append(frame)
            if len(batch) == segmenter.batch_size:
                yield from run()
                batch = []
    except VideoDecodeError:  # damage: the frames decoded before it are still segmented
        if batch:
            yield from run()
        raise
    if batch:
        yield from run()


def predict_video(
    segmenter: Segmenter,
    source: str | Path | VideoReader,
    *,
    max_frames: int | None = None,
    duration: float | None = None,
    smooth: float | None = None,
    confidence: bool = False,
) -> Iterator[tuple[Frame, SegmentationResult]]:
    """Segment a clip or stream lazily: ``(frame, result)`` per frame, decoding in a thread ahead of the model.

    ``smooth``: the weight of the past in :class:`TemporalSmoothing` (e.g. 0.6), None for none.
    """
    reader = source if isinstance(source, VideoReader) else VideoReader(source)
    frames = _prefetch(reader.frames(max_frames=max_frames, duration=duration), depth=2 * segmenter.batch_size)
    smoothing = TemporalSmoothing(smooth) if smooth else None
    try:
        yield from segment_frames(segmenter, frames, smooth=smoothing, confidence=confidence)
    finally:
        frames.close()
        if reader is not source:
            reader.close()


def segment_video(
    segmenter: Segmenter,
    source: str | Path | VideoReader,
    base: str | Path,
    kinds: Sequence[str] = DEFAULT_KINDS,
    *,
    on_frame: Callable[[Frame, SegmentationResult], None] | None = None,
    caption: str | None = None,
    **options: Any,
) -> tuple[VideoWriter, VideoDecodeError | KeyboardInterrupt | None]:
    """Segment a clip or stream into ``base``'s outputs (``OUT_DIR/NAME`` -> ``NAME_overlay.mp4``...).

    The model runs here while a writer thread encodes the frames before (at most two waiting). ``options`` go to
    :func:`predict_video`; ``on_frame(frame, result)`` is called once each frame is written; ``caption`` is written
    across the top of every overlay frame. The files are
    finalized and renamed in every case but an unexpected error (then removed): after the last frame, at a
    damaged frame and on Ctrl-C/KeyboardInterrupt alike, which come back as the second value (None: the whole
    video). Returns the closed writer (``.frames``, ``.paths``, ``.notes``).
    """
    reader = source if isinstance(source, VideoReader) else VideoReader(source)
    writer = VideoWriter(Path(base), reader, segmenter.categories, kinds, caption)
    stop: VideoDecodeError | KeyboardInterrupt | None = None
    pending: deque = deque()

    def settle(limit: int) -> None:  # wait for all but ``limit`` writes, oldest first
        while len(pending) > limit or (pending and pending[0][2].done()):
            frame, result, done = pending.popleft()
            done.result()
            if on_frame is not None:
                on_frame(frame, result)

    results = predict_video(segmenter, reader, **options)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="fcnseg-video-encode") as pool:
            try:
                for frame, result in results:
                    pending.append((frame, result, pool.submit(writer.write, frame, result)))
                    settle(2)
                settle(0)
            except (VideoDecodeError, KeyboardInterrupt) as e:
                stop = e
                settle(0)  # the frames segmented so far are written (in order) before the files are closed
            finally:
                results.close()  # stops the decoding thread before the container closes
    except BaseException:
        writer.discard()
        raise
    finally:
        if reader is not source:
            reader.close()
    writer.close()
    return writer, stop
