"""torchvision's reference recipe: the model to train (fine-tuning loads all but the new heads), the loss, SGD
over its three parameter groups and the poly schedule."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import DistInfo
from ..models import find_weights, get_model_builder
from ..weights import WeightsError, read_checkpoint
from .config import TrainConfig

__all__ = [
    "build_model",
    "build_optimizer",
    "criterion",
    "load_finetune_state_dict",
    "place_model",
    "poly_lr_factor",
    "set_train_mode",
]


AUX_WEIGHT, AUX_LR_MULT, POLY_POWER = 0.5, 10.0, 0.9
HEAD_KEYS = ("classifier.4.", "aux_classifier.4.")  # the two final 1x1 convs, re-initialised for new classes


def load_finetune_state_dict(model: nn.Module, state_dict: dict[str, Tensor]) -> list[str]:
    """Load ``state_dict`` into ``model`` except the final 1x1 convs where the class counts differ.

    Returns the keys left at their fresh initialisation. A source without an aux head leaves the model's aux
    head fresh; any other missing or unexpected key is an error.
    """
    own = model.state_dict()
    fresh = [k for k in own if k.startswith(HEAD_KEYS) and k in state_dict and state_dict[k].shape != own[k].shape]
    source_has_aux = any(k.startswith("aux_classifier.") for k in state_dict)
    model_has_aux = any(k.startswith("aux_classifier.") for k in own)
    sd = {k: v for k, v in state_dict.items() if k not in fresh}
    if not model_has_aux:
        sd = {k: v for k, v in sd.items() if not k.startswith("aux_classifier.")}
    elif not source_has_aux:
        fresh += [k for k in own if k.startswith("aux_classifier.")]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k not in fresh]
    if missing or unexpected:
        raise WeightsError(
            f"weights do not fit {type(model).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return fresh


def _read_weights(model_name: str, weights: str) -> tuple[dict[str, Tensor], list[str] | None]:
    """A weights name of the model's enum or a checkpoint path -> (state dict, categories if known)."""
    member = find_weights(model_name, weights)
    if member is not None:
        return member.get_state_dict(progress=False), list(member.meta["categories"])
    sd, extra = read_checkpoint(weights)
    return sd, extra.get("categories")


def build_model(config: TrainConfig, categories: list[str] | None = None) -> tuple[nn.Module, list[str], list[str]]:
    """The model to train and its categories, starting from the weights the config names.

    ``categories`` are the dataset's (if it has names). Returns (model, categories, freshly initialised keys).
    """
    k = config.num_classes
    if categories is not None and k is not None and k != len(categories):
        raise ValueError(f"num_classes={k} but the dataset lists {len(categories)} classes")
    k = k or (len(categories) if categories else None)
    builder = get_model_builder(config.model)
    fresh: list[str] = []
    if config.weights:
        sd, source_categories = _read_weights(config.model, config.weights)
        if "classifier.4.weight" not in sd:
            raise WeightsError(f"{config.weights}: not an FCN state dict (no 'classifier.4.weight')")
        source_k = sd["classifier.4.weight"].shape[0]
        k = k or source_k
        model = builder(num_classes=k, aux_loss=config.aux_loss, weights_backbone=None)
        fresh = load_finetune_state_dict(model, sd)
        if categories is None and k == source_k:
            categories = source_categories
    else:
        if k is None:
            raise ValueError("the number of classes is unknown: pass num_classes (or a dataset with class names)")
        wb = config.weights_backbone
        wb = None if wb is None or wb.lower() == "none" else wb  # a ResNet weights name or a file: the builder's
        model = builder(num_classes=k, aux_loss=config.aux_loss, weights_backbone=wb)
    if categories is None or len(categories) != k:
        categories = [f"class_{i}" for i in range(k)]
    return model, list(categories), fresh


def criterion(outputs: dict[str, Tensor], target: Tensor, weight: Tensor | None = None, ignore_index: int = 255):
    """CE(out) + 0.5 CE(aux), computed in float32 (autocast may hand us bf16/fp16 logits)."""

    def ce(logits: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index)

    loss = ce(outputs["out"])
    return loss + AUX_WEIGHT * ce(outputs["aux"]) if "aux" in outputs else loss


def poly_lr_factor(step: int, *, total: int, warmup: int = 0, warmup_factor: float = 0.01) -> float:
    """lr multiplier at optimizer step ``step``: linear warm-up from ``warmup_factor``, then (1 - t)^0.9."""
    if step < warmup:
        return warmup_factor + (1 - warmup_factor) * step / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return max(1 - t, 0.0) ** POLY_POWER


def build_optimizer(model: nn.Module, config: TrainConfig, lr: float, steps_per_epoch: int):
    """SGD over the reference's parameter groups (backbone, head, aux head at 10x lr) and its poly schedule."""
    groups = [
        {"params": [p for p in model.backbone.parameters() if p.requires_grad]},
        {"params": [p for p in model.classifier.parameters() if p.requires_grad]},
    ]
    if model.aux_classifier is not None:
        groups.append({"params": list(model.aux_classifier.parameters()), "lr": lr * AUX_LR_MULT})
    groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    factor = partial(
        poly_lr_factor,
        total=steps_per_epoch * config.epochs,
        warmup=int(config.warmup_epochs * steps_per_epoch),
        warmup_factor=config.warmup_factor,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_train_mode(model: nn.Module, config: TrainConfig) -> None:
    model.train()
    if config.freeze_backbone:
        model.backbone.eval()
    if config.freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def place_model(
    model: nn.Module, config: TrainConfig, info: DistInfo, device: torch.device
) -> tuple[nn.Module, nn.Module]:
    """Freezing, SyncBatchNorm, device, memory format; returns (model, what training calls: DDP around it or it)."""
    if config.freeze_backbone:
        model.backbone.requires_grad_(False)
    if config.sync_bn and info.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if not info.enabled:
        return model, model
    return model, nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )
