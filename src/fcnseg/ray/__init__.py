"""Segmentation on a Ray cluster: the engine of ``fcnseg segment --engine ray`` and a Python API for Ray pipelines.

- :func:`segment`: a Ray Dataset of images -> the same rows with a ``mask`` column (and ``probs``/``class_share``).
- :class:`SegmentBatch`: the batch predictor behind it, for ``Dataset.map_batches`` in a pipeline of one's own
  (rows prepared by :func:`decode_row`).
- :mod:`fcnseg.ray.engine`: files in, outputs written by the actors, as the CLI runs it.

Needs ``pip install 'fcnseg[ray]'``; importing this package does not import Ray (its modules use absolute imports,
so ``import ray`` inside them is Ray itself, never this package).
"""

from __future__ import annotations

from ._session import RAY_HINT, ray_session, require_ray
from .api import segment
from .batch import SegmentBatch, decode_row

__all__ = ["RAY_HINT", "SegmentBatch", "decode_row", "ray_session", "require_ray", "segment"]
