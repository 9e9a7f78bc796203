"""FCN (Long, Shelhamer & Darrell) on a dilated ResNet, laid out exactly like torchvision's.

State-dict keys: ``backbone.*`` (the ResNet without its classifier), ``classifier.{0,1,4}.*`` and
``aux_classifier.{0,1,4}.*``, so the official checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..weights import (
    FCN_ResNet50_Weights,
    FCN_ResNet101_Weights,
    LoadedWeights,
    ResNet50_Weights,
    ResNet101_Weights,
    WeightsEnum,
    WeightsError,
    fit_state_dict,
    load_state_dict_file,
    read_weights_file,
)
from .resnet import ResNet, resnet50, resnet101

__all__ = ["FCN", "FCNHead", "fcn_resnet50", "fcn_resnet101"]


class FCNHead(nn.Sequential):
    """3x3 conv to in/4 channels -> BN -> ReLU -> Dropout(0.1) -> 1x1 conv to class logits."""

    def __init__(self, in_channels: int, channels: int) -> None:
        inter_channels = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter_channels),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(inter_channels, channels, 1),
        )


class FCN(nn.Module):
    """Backbone features -> per-pixel logits, upsampled bilinearly to the input size.

    Returns an ``OrderedDict`` with ``out`` (N, K, H, W) and, with an aux head, ``aux`` from layer3.
    """

    def __init__(self, backbone: ResNet, classifier: nn.Module, aux_classifier: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        input_shape = x.shape[-2:]
        features = self.backbone(x)  # layer3 (N, 1024, H/8, W/8), layer4 (N, 2048, H/8, W/8)
        result = OrderedDict()
        out = self.classifier(features["layer4"])  # (N, K, H/8, W/8)
        result["out"] = F.interpolate(out, size=input_shape, mode="bilinear", align_corners=False)
        if self.aux_classifier is not None:
            aux = self.aux_classifier(features["layer3"])
            result["aux"] = F.interpolate(aux, size=input_shape, mode="bilinear", align_corners=False)
        return result


def _handle_legacy(kwargs: dict[str, Any], weights: Any, weights_backbone: Any, default: Any, default_bb: Any):
    """Map torchvision's old ``pretrained``/``pretrained_backbone`` booleans onto the weight enums."""
    for old, new, value in (
        ("pretrained", "weights", default),
        ("pretrained_backbone", "weights_backbone", default_bb),
    ):
        if old in kwargs:
            flag = kwargs.pop(old)
            warnings.warn(
                f"'{old}' is deprecated, use '{new}={value!r}' (or None) instead", DeprecationWarning, stacklevel=3
            )
            if flag:
                if new == "weights":
                    weights = value
                else:
                    weights_backbone = value
    if kwargs:
        raise TypeError(f"unexpected keyword arguments: {sorted(kwargs)}")
    return weights, weights_backbone


def _checkpoint_classes(state_dict: dict[str, Tensor]) -> int:
    try:
        return state_dict["classifier.4.weight"].shape[0]
    except KeyError:
        raise WeightsError("checkpoint has no 'classifier.4.weight': not an FCN state dict") from None


def _checkpoint_aux(source: Path, state_dict: dict[str, Tensor], aux_loss: bool | None) -> bool:
    """Whether to build the aux head for a local file: as the file has it, unless asked; asking for one it lacks
    is an error (a ``--no-aux-loss`` training run saves none)."""
    has_aux = any(k.startswith("aux_classifier.") for k in state_dict)
    if aux_loss and not has_aux:
        raise WeightsError(f"{source}: has no aux head (trained without one); build it with aux_loss=False")
    return has_aux if aux_loss is None else aux_loss


def _fcn_resnet(
    backbone_fn: Any,
    weights_enum: type[WeightsEnum],
    backbone_enum: type[WeightsEnum],
    *,
    weights: Any,
    progress: bool,
    num_classes: int | None,
    aux_loss: bool | None,
    weights_backbone: Any,
    kwargs: dict[str, Any],
) -> FCN:
    weights, weights_backbone = _handle_legacy(
        kwargs, weights, weights_backbone, weights_enum.DEFAULT, backbone_enum.DEFAULT
    )
    weights = weights_enum.resolve(weights) if not isinstance(weights, LoadedWeights) else weights
    if isinstance(weights, Path):
        weights = read_weights_file(weights)
    if isinstance(weights, LoadedWeights):  # read once (by the caller: fcnseg.weights.load_weights)
        name = f"fcn_{backbone_fn.__name__}"
        if weights.model not in (None, name):
            raise WeightsError(
                f"{weights.source} holds an {weights.model} model, not {name}: build {weights.model} (or leave the "
                "model name out: it is taken from the checkpoint)"
            )
        weights, state_dict = weights.member or weights.path, weights.state_dict
    else:
        state_dict = None
    if state_dict is not None:
        expected = _checkpoint_classes(state_dict)
        aux_loss = _checkpoint_aux(weights, state_dict, aux_loss)
    elif weights is not None:
        expected = len(weights.meta["categories"])
        aux_loss = True if aux_loss is None else aux_loss  # the official files carry an aux head
    else:
        expected = None
    if expected is not None:
        weights_backbone = None
        if num_classes is not None and num_classes != expected:
            raise ValueError(
                f"num_classes={num_classes} conflicts with the weights, which predict {expected} classes; "
                "to fine-tune to a new class count, build without weights and load all but the last layers "
                "(fcnseg train --num-classes does this)"
            )
        num_classes = expected
    elif num_classes is None:
        num_classes = 21
    weights_backbone = backbone_enum.resolve(weights_backbone)

    backbone = backbone_fn(replace_stride_with_dilation=[False, True, True])
    if isinstance(weights_backbone, Path):
        backbone.load_imagenet_state_dict(load_state_dict_file(weights_backbone), str(weights_backbone))
    elif weights_backbone is not None:
        backbone.load_imagenet_state_dict(weights_backbone.get_state_dict(progress=progress))
    model = FCN(backbone, FCNHead(2048, num_classes), FCNHead(1024, num_classes) if aux_loss else None)

    if weights is not None:
        if state_dict is None:
            state_dict = weights.get_state_dict(progress=progress, check_hash=True)
        if not aux_loss:  # a model built without the aux head skips the file's
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("aux_classifier.")}
        fit_state_dict(model, state_dict, str(weights))
    return model


def fcn_resnet50(
    *,
    weights: FCN_ResNet50_Weights | LoadedWeights | str | Path | None = None,
    progress: bool = True,
    num_classes: int | None = None,
    aux_loss: bool | None = None,
    weights_backbone: ResNet50_Weights | str | Path | None = None,
    **kwargs: Any,
) -> FCN:
    """FCN with a dilated ResNet-50 backbone (output stride 8).

    Args:
        weights: ``FCN_ResNet50_Weights`` member or name (``"DEFAULT"``), a local checkpoint path, or weights
            already read by :func:`fcnseg.models.load_weights`.
            Weights fix ``num_classes`` (21 for the official ones); the aux head is built by default when they
            carry one (the official ones do; a checkpoint trained with ``aux_loss=False`` does not).
        progress: show a progress bar while downloading.
        num_classes: number of output classes (default 21); must match the weights if both are given.
        aux_loss: add the auxiliary head on layer3 (used for training).
        weights_backbone: ImageNet weights for the backbone (member, name or local file); ignored when
            ``weights`` are given.
        **kwargs: only the deprecated ``pretrained`` / ``pretrained_backbone`` booleans.
    """
    return _fcn_resnet(
        resnet50, FCN_ResNet50_Weights, ResNet50_Weights,
        weights=weights, progress=progress, num_classes=num_classes, aux_loss=aux_loss,
        weights_backbone=weights_backbone, kwargs=kwargs,
    )  # fmt: skip


def fcn_resnet101(
    *,
    weights: FCN_ResNet101_Weights | LoadedWeights | str | Path | None = None,
    progress: bool = True,
    num_classes: int | None = None,
    aux_loss: bool | None = None,
    weights_backbone: ResNet101_Weights | str | Path | None = None,
    **kwargs: Any,
) -> FCN:
    """FCN with a dilated ResNet-101 backbone (output stride 8); arguments as :func:`fcn_resnet50`."""
    return _fcn_resnet(
        resnet101, FCN_ResNet101_Weights, ResNet101_Weights,
        weights=weights, progress=progress, num_classes=num_classes, aux_loss=aux_loss,
        weights_backbone=weights_backbone, kwargs=kwargs,
    )  # fmt: skip
