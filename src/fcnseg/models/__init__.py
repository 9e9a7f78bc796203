"""Model builders and a small name registry (``get_model("fcn_resnet50", weights="DEFAULT")``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ..weights import MODEL_WEIGHTS, LoadedWeights, WeightsEnum, WeightsError, recorded_model
from ..weights import load_weights as _load_weights
from .fcn import FCN, FCNHead, fcn_resnet50, fcn_resnet101
from .resnet import ResNet, resnet50, resnet101

__all__ = [
    "DEFAULT_MODEL",
    "FCN",
    "FCNHead",
    "ResNet",
    "fcn_resnet50",
    "fcn_resnet101",
    "find_weights",
    "get_model",
    "get_model_builder",
    "get_model_weights",
    "list_models",
    "load_weights",
    "model_for",
    "resnet50",
    "resnet101",
]

_BUILDERS: dict[str, Callable[..., FCN]] = {"fcn_resnet50": fcn_resnet50, "fcn_resnet101": fcn_resnet101}
_MODELS: dict[str, tuple[Callable[..., FCN], type[WeightsEnum]]] = {
    name: (_BUILDERS[name], enum) for name, enum in MODEL_WEIGHTS.items()
}


DEFAULT_MODEL = "fcn_resnet50"  # what is built when neither a name nor the weights say which


def list_models() -> list[str]:
    """Names accepted by :func:`get_model`."""
    return list(_MODELS)


def _entry(name: str) -> tuple[Callable[..., FCN], type[WeightsEnum]]:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {list_models()}") from None


def get_model_builder(name: str) -> Callable[..., FCN]:
    return _entry(name)[0]


def get_model_weights(name: str) -> type[WeightsEnum]:
    """The weights enum of a model, e.g. ``FCN_ResNet50_Weights``."""
    return _entry(name)[1]


def get_model(name: str, **config: Any) -> nn.Module:
    """Build a model by name; ``config`` goes to its builder (``weights``, ``num_classes``, ...)."""
    return get_model_builder(name)(**config)


def find_weights(name: str, weights: object) -> WeightsEnum | None:
    """The registry entry a weights argument names (a member, ``"DEFAULT"``, ``"Enum.MEMBER"``); None for a local
    file, which the builders read themselves (see :meth:`WeightsEnum.resolve`)."""
    found = get_model_weights(name).resolve(weights)
    return found if isinstance(found, WeightsEnum) else None


def load_weights(name: str, weights: object, progress: bool = True) -> LoadedWeights | None:
    """Read model ``name``'s weights argument once (a member, ``"DEFAULT"``, a checkpoint path, None): the state
    dict with its categories and the size to run it at, for the builders and every command to share."""
    return _load_weights(get_model_weights(name), weights, progress)


def model_for(name: str | None, weights: object) -> str:
    """The model to build for a weights argument: the one a checkpoint records (or its keys show), else ``name``,
    else :data:`DEFAULT_MODEL`. A ``name`` other than the checkpoint's is an error of one line naming both."""
    recorded = weights.model if isinstance(weights, LoadedWeights) else None
    if weights is not None and not isinstance(weights, LoadedWeights):
        found = get_model_weights(name or DEFAULT_MODEL).resolve(weights)
        recorded = recorded_model(found) if isinstance(found, Path) and found.is_file() else None
    if name is not None and recorded is not None and recorded != name:
        source = weights.source if isinstance(weights, LoadedWeights) else weights
        raise WeightsError(f"{source} holds an {recorded} model, but {name} was asked for: leave the model name "
                           f"(--model) out to build the one it holds, or name {recorded}")  # fmt: skip
    return name or recorded or DEFAULT_MODEL
