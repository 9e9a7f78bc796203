"""The served model, replaceable while the server runs: :class:`ServedModel` stands where a
:class:`~fcnseg.predict.Segmenter` stands (``predict_batch``, ``categories``, ``preprocess``, ``model_name``) and
hands each batch to the segmenter current when the batch starts.

A swap is one assignment under a lock, so it is atomic: a batch already running finishes on the model it started
with (it holds its own reference), every later batch runs on the new one, and no batch sees half of each. The old
model is freed when its last batch ends. Each model comes with its :class:`Version` (its identity, where it came
from, its validation score), which the answers report as ``model_version``.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ServedModel", "Version"]


@dataclass
class Version:
    """One model the server has served or considered: identity, weights, and where it came from."""

    version: str  # :func:`fcnseg.weights.weights_identity`, Label Studio's ``model_version``
    weights: str | None
    run: str | None = None  # the fine-tuning run folder that made it (None: the model the server started with)
    miou: float | None = None  # validation mIoU on its run's validation split, when it was compared
    served_miou: float | None = None  # the model it was compared with, on the same split
    swapped: bool | None = None  # whether it replaced the served model (None: the first one)
    reason: str | None = None  # why it was or was not swapped

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ServedModel:
    """A segmenter that can be replaced while requests run (see the module docstring)."""

    def __init__(self, segmenter: Any, version: Version) -> None:
        self._lock = threading.Lock()
        self._segmenter, self._version = segmenter, version

    def current(self) -> tuple[Any, Version]:
        """The segmenter and version serving now, read together."""
        with self._lock:
            return self._segmenter, self._version

    @property
    def version(self) -> Version:
        return self.current()[1]

    def swap(self, segmenter: Any, version: Version) -> None:
        """Serve ``segmenter`` from the next batch on (its classes may differ: a first fine-tuning to a project's
        labels; whoever describes the model reads :meth:`current` again)."""
        with self._lock:
            self._segmenter, self._version = segmenter, version

    def predict_batch(self, images: list[Any], **kwargs: Any) -> list[Any]:
        segmenter, version = self.current()  # this batch runs on this model, whatever a swap does meanwhile
        results = segmenter.predict_batch(images, **kwargs)
        for result in results:  # each answer names the model that made it (Label Studio's model_version)
            result.model_version = version.version
        return results

    def __getattr__(self, name: str) -> Any:  # categories, preprocess, model_name, weights, describe_size...
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.current()[0], name)
