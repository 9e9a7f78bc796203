"""Checkpoints as data: where each one lives, what it predicts, how it was scored, how to feed it.

Official files go through torch.hub's cache (``$TORCH_HOME/hub/checkpoints``), the same folder
torchvision uses, so a checkpoint a user already downloaded is reused. Local ``.pth``/``.pt``/
``.safetensors`` files (a bare state dict or a training checkpoint with a ``model`` key) load too, and so do
checkpoints at a URL (``s3://b/w.pth``, ``https://...``), fetched once per content into ``urls/`` of that cache.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import storage
from .data.categories import VOC_CATEGORIES

if TYPE_CHECKING:
    import torch
    from torch import Tensor

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_SUFFIXES",
    "CHECKPOINT_VERSION",
    "OFFICIAL_SIZE",
    "VOC_CATEGORIES",
    "MODEL_WEIGHTS",
    "LoadedWeights",
    "Weights",
    "WeightsEnum",
    "WeightsError",
    "FCN_ResNet50_Weights",
    "FCN_ResNet101_Weights",
    "ResNet50_Weights",
    "ResNet101_Weights",
    "checkpoint_path",
    "checkpoints_dir",
    "fit_state_dict",
    "load_state_dict_file",
    "file_identity",
    "load_weights",
    "read_checkpoint",
    "read_weights_file",
    "recorded_model",
    "sha256_file",
    "weights_identity",
]

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")
# What fcnseg's training checkpoints say they are: ``{"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
# "model": ...}``. Version 1 adds the format fields, ``samples`` and ``global_batch`` to the unversioned layout.
CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "fcnseg-checkpoint", 1
_HASH_RE = re.compile(r"-([a-f0-9]{8,})\.")
OFFICIAL_SIZE = 520  # shorter side the official weights are run and scored at


class WeightsError(RuntimeError):
    """A checkpoint could not be found, fetched, verified or read; the message says what to do."""


def checkpoints_dir() -> Path:
    """The torch.hub checkpoint cache, shared with torchvision (``$TORCH_HOME/hub/checkpoints``).

    Without torch imported yet, the folder is worked out from the environment by torch.hub's own rule, so that
    listing the registry (``fcnseg models``) does not import torch; once it is, ``torch.hub.get_dir()`` answers
    (it also knows a folder set with ``torch.hub.set_dir``).
    """
    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir()) / "checkpoints"
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))) / "hub" / "checkpoints"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks so large checkpoints don't sit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(eq=False)
class Weights:
    """One checkpoint: its URL, the preprocessing it expects, and what is known about it."""

    url: str
    transforms: Callable[..., Any] | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def hash_prefix(self) -> str:
        """The first hex digits of the file's sha256, as embedded in its official name."""
        m = _HASH_RE.search(self.file_name)
        if m is None:
            raise ValueError(f"{self.file_name} carries no hash in its name")
        return m.group(1)

    @property
    def cache_path(self) -> Path:
        return checkpoints_dir() / self.file_name


class WeightsEnum(Enum):
    """Base for the per-model weight enums; ``verify`` turns names and strings into members."""

    @classmethod
    def verify(cls, obj: Any) -> WeightsEnum | None:
        if obj is None or isinstance(obj, cls):
            return obj
        if isinstance(obj, str):
            name = obj.removeprefix(cls.__name__ + ".")
            if name in cls.__members__:
                return cls[name]
            raise ValueError(f"Unknown weights {obj!r} for {cls.__name__}; choose one of {list(cls.__members__)}")
        raise TypeError(f"Expected {cls.__name__}, a member name or None, got {type(obj).__name__}")

    @classmethod
    def resolve(cls, obj: Any) -> WeightsEnum | Path | None:
        """A weights argument -> the member it names, or the local file it points to (None stays None).

        The one place that tells a name from a path: a member, its name (``"DEFAULT"``, ``"Enum.NAME"``) names a
        member; a ``Path``, or a string that ends in a checkpoint suffix, holds a path separator or names an
        existing file, is a file; a URL is fetched into the cache (:meth:`fetch_url`) and is that file. Anything
        else is an unknown name, an error listing the known ones.
        """
        if storage.is_url(obj):
            return cls.fetch_url(obj)
        named = isinstance(obj, str) and obj.removeprefix(cls.__name__ + ".") in cls.__members__
        if not named and (path := checkpoint_path(obj)) is not None:
            return path
        return obj if isinstance(obj, Path) else cls.verify(obj)

    @classmethod
    def fetch_url(cls, url: str) -> Path:
        """The local copy of the checkpoint at ``url``, fetched into ``checkpoints_dir()/urls`` unless a copy of this
        very object (URL and ETag) is there; a registry file (same name as an entry's) is checked against the sha256
        its name carries."""
        path = storage.as_path(url)
        if not storage.is_remote(path):  # file://
            return path
        registry = next((m.value.hash_prefix for m in cls if m.file_name == path.name), None)
        try:
            return storage.cached_copy(path, checkpoints_dir() / "urls", hash_prefix=registry)
        except FileNotFoundError:
            raise WeightsError(f"{url}: no such checkpoint object") from None

    @property
    def url(self) -> str:
        return self.value.url

    @property
    def meta(self) -> dict[str, Any]:
        return self.value.meta

    @property
    def transforms(self) -> Callable[..., Any] | None:
        return self.value.transforms

    @property
    def file_name(self) -> str:
        return self.value.file_name

    @property
    def cache_path(self) -> Path:
        return self.value.cache_path

    def get_state_dict(self, progress: bool = True, check_hash: bool = True) -> dict[str, Tensor]:
        """Read the checkpoint from the cache, downloading it (hash-checked) if it is not there yet."""
        import torch

        path = self.cache_path
        if not path.is_file():
            if os.environ.get("FCNSEG_OFFLINE", "") not in ("", "0"):
                raise WeightsError(self._missing_message("FCNSEG_OFFLINE is set"))
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(
                    self.url, str(path), hash_prefix=self.value.hash_prefix if check_hash else None, progress=progress
                )
            except OSError as e:  # URLError, HTTPError and timeouts are OSErrors
                raise WeightsError(self._missing_message(f"download failed: {getattr(e, 'reason', e)}")) from None
            except RuntimeError as e:  # torch.hub's hash mismatch; it removes the bad file itself
                raise WeightsError(f"{self.file_name}: {e}") from None
        return load_state_dict_file(path)

    def _missing_message(self, why: str) -> str:
        return (
            f"Weights {self.file_name} are not cached and could not be fetched ({why}). "
            f"Download {self.url} on a machine with internet and place it at {self.cache_path} "
            f"(or run `fcnseg weights import FILE`). Meanwhile, `--weights none` runs the whole pipeline with "
            f"random weights (meaningless masks), and `fcnseg train` makes a model of your own, which `--weights "
            f"runs/train/best.pth` then uses."
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"


def checkpoint_path(obj: Any) -> Path | None:
    """``obj`` as a local file if it reads as one: a ``Path``, or a string that ends in a checkpoint suffix, holds a
    path separator or names an existing file; None otherwise (a name, a member, None)."""
    if isinstance(obj, Path):
        return obj
    if isinstance(obj, str):
        looks_like_path = Path(obj).suffix.lower() in CHECKPOINT_SUFFIXES or "/" in obj or os.sep in obj
        if looks_like_path or Path(obj).exists():
            return Path(obj)
    return None


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read ``.pth``/``.pt`` (bare state dict, or a checkpoint with a ``model`` key) or ``.safetensors``.

    Returns the state dict (without the ``module.`` prefix DistributedDataParallel leaves) and the
    checkpoint's other entries (``categories``, ``config``... empty for a bare state dict).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise WeightsError(
            f"{path}: reading .safetensors needs safetensors: pip install 'fcnseg[safetensors]'"
        ) from None
    except OSError as e:
        if e.errno is not None:  # the drive failed, not the file: the command words it as an I/O fault
            raise
        raise WeightsError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    except Exception as e:  # unpickling and format errors come in many types
        raise WeightsError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    extra: dict[str, Any] = {}
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        extra = {k: v for k, v in obj.items() if k != "model"}
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: holds no state dict (expected tensors by name, or a 'model' entry)")
    if extra.get("format") == CHECKPOINT_FORMAT and extra.get("version", 0) > CHECKPOINT_VERSION:
        raise WeightsError(
            f"{path}: checkpoint format version {extra['version']} is newer than this fcnseg reads "
            f"({CHECKPOINT_VERSION}); upgrade fcnseg"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}, extra


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """The state dict of a local checkpoint file (see :func:`read_checkpoint`)."""
    return read_checkpoint(path)[0]


@dataclass(frozen=True)
class LoadedWeights:
    """A weights argument read once: what every command needs from it, passed down instead of the path.

    ``size`` is the shorter side the weights are meant to run at: the size a training checkpoint was validated at
    (its config's ``base_size``), else :data:`OFFICIAL_SIZE`; ``size_reason`` says which, for the commands to print.
    """

    state_dict: dict[str, Tensor] = field(repr=False)
    source: str  # what was read: "FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1" or the file's path
    member: WeightsEnum | None  # the registry entry, or None for a local file
    path: Path | None  # the local file, or None for a registry entry
    categories: list[str] | None
    size: int
    size_reason: str
    version: int | None = None  # the training checkpoint format's version; None for other files
    config: dict[str, Any] = field(default_factory=dict, repr=False)  # the training config, if recorded
    model: str | None = None  # the model the file records or its keys show (:func:`recorded_model`); None: unknown


def load_weights(enum: type[WeightsEnum], weights: Any, progress: bool = True) -> LoadedWeights | None:
    """Read a weights argument (member, name, path, or an already loaded one) of the model whose enum is ``enum``."""
    if weights is None or isinstance(weights, LoadedWeights):
        return weights
    found = enum.resolve(weights)
    if isinstance(found, WeightsEnum):
        size = found.meta["preprocessing"]["resize_size"]
        return LoadedWeights(
            found.get_state_dict(progress=progress), repr(found), found, None, list(found.meta["categories"]),
            size, "the official weights' size",
        )  # fmt: skip
    return read_weights_file(found)


def read_weights_file(path: Path) -> LoadedWeights:
    """A local checkpoint read once: its state dict, categories, model, and the size it was validated at."""
    state_dict, extra = read_checkpoint(path)
    config = extra.get("config") if isinstance(extra.get("config"), dict) else {}
    size, reason = config.get("base_size"), f"the size {path} was validated at in training, its base_size"
    if not isinstance(size, int):
        size, reason = OFFICIAL_SIZE, f"{path} records no training size; the official weights' size"
    cats = extra.get("categories")
    return LoadedWeights(
        state_dict, str(path), None, path, list(cats) if cats else None, size, reason, extra.get("version"), config,
        _model_of(state_dict, extra),
    )  # fmt: skip


def _model_of(state_dict: dict[str, Any], extra: dict[str, Any]) -> str | None:
    """The model a checkpoint records (``model_name``, or its training config's ``model``), else the one its keys
    show: ResNet-101 has 23 blocks in layer3, ResNet-50 has 6. None for a file that is neither."""
    config = extra.get("config") if isinstance(extra.get("config"), dict) else {}
    for named in (extra.get("model_name"), config.get("model")):
        if isinstance(named, str) and named:
            return named
    if "backbone.layer3.6.conv1.weight" in state_dict:
        return "fcn_resnet101"
    if "backbone.layer3.5.conv1.weight" in state_dict:
        return "fcn_resnet50"
    return None


def recorded_model(path: str | Path) -> str | None:
    """The model a checkpoint file records or its keys show (see :class:`LoadedWeights`), read without loading its
    tensors (memory-mapped); None when the file says nothing or cannot be read (reading it for real says why)."""
    try:
        if Path(path).suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                return _model_of(dict.fromkeys(k.removeprefix("module.") for k in f.keys()), {})  # noqa: SIM118 (not iterable)
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable, or not a zip-format file torch can map: reading it for real reports it
        return None
    if not isinstance(obj, dict):
        return None
    extra = {k: v for k, v in obj.items() if k != "model"} if isinstance(obj.get("model"), dict) else {}
    keys = obj["model"] if extra else obj
    return _model_of({str(k).removeprefix("module."): None for k in keys}, extra)


def fit_state_dict(
    model: torch.nn.Module, state_dict: dict[str, Tensor], source: str, problem: str = "does not fit this model"
) -> None:
    """Load ``state_dict`` into ``model`` exactly (every key, every shape), or raise one line, ``source: problem:
    ...``, that says how they differ: counts and the first key of each kind, not torch's list of every key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [k for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of the model's {len(own)} tensors missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} it does not have (first: {unexpected[0]})")
        if shapes:
            k = shapes[0]
            theirs, mine = (tuple(t.shape) for t in (state_dict[k], own[k]))
            parts.append(f"{len(shapes)} of another shape (first: {k}, {theirs} in the file, {mine} in the model)")
        raise WeightsError(f"{source}: {problem}: {'; '.join(parts)}")
    model.load_state_dict(state_dict, strict=True)


def weights_identity(loaded: LoadedWeights | None) -> str:
    """The weights' identity, as predictions name their source (Label Studio's ``model_version``): a registry
    entry and its file's hash (``FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1-1167a1af``), a local file's name and
    the first 12 hex digits of its sha256 (by content: retraining into the same path gives a new identity), or
    ``random-init``."""
    if loaded is None:
        return "random-init"
    if loaded.member is not None:
        return f"{loaded.member!r}-{loaded.member.value.hash_prefix}"
    return file_identity(loaded.path)


def file_identity(path: str | Path) -> str:
    """A local weights file's identity (see :func:`weights_identity`), without loading it."""
    return f"{Path(path).name}-{sha256_file(path)[:12]}"


_FCN_META = {
    "categories": VOC_CATEGORIES,
    "min_size": (1, 1),
    "preprocessing": {"resize_size": OFFICIAL_SIZE, "interpolation": "bilinear", "mean": (0.485, 0.456, 0.406),
                      "std": (0.229, 0.224, 0.225)},
    "dataset": "COCO train2017, the 20 categories present in Pascal VOC (+ background)",
}  # fmt: skip


def _fcn_transforms(**kwargs: Any) -> Any:
    """The official weights' preprocessing (:class:`fcnseg.transforms.SemanticSegmentation` at 520), imported when
    first asked for so that the registry reads without torch."""
    from .transforms import SemanticSegmentation

    return SemanticSegmentation(**{"resize_size": OFFICIAL_SIZE, **kwargs})


class FCN_ResNet50_Weights(WeightsEnum):
    COCO_WITH_VOC_LABELS_V1 = Weights(
        url="https://download.pytorch.org/models/fcn_resnet50_coco-1167a1af.pth",
        transforms=_fcn_transforms,
        meta={
            **_FCN_META,
            "num_params": 35_322_218,
            "recipe": "https://github.com/pytorch/vision/tree/main/references/segmentation#fcn_resnet50",
            "metrics": {"COCO-val2017-VOC-labels": {"miou": 60.5, "pixel_acc": 91.4}},
            "gflops": 152.717,  # torchvision's count (multiply-adds) at 520x520; FLOPs are about twice that
            "file_size_mb": 135.009,
        },
    )
    DEFAULT = COCO_WITH_VOC_LABELS_V1


class FCN_ResNet101_Weights(WeightsEnum):
    COCO_WITH_VOC_LABELS_V1 = Weights(
        url="https://download.pytorch.org/models/fcn_resnet101_coco-7ecb50ca.pth",
        transforms=_fcn_transforms,
        meta={
            **_FCN_META,
            "num_params": 54_314_346,
            # torchvision points this model at the deeplabv3_resnet101 recipe section: same command line.
            "recipe": "https://github.com/pytorch/vision/tree/main/references/segmentation#deeplabv3_resnet101",
            "metrics": {"COCO-val2017-VOC-labels": {"miou": 63.7, "pixel_acc": 91.9}},
            "gflops": 232.738,
            "file_size_mb": 207.711,
        },
    )
    DEFAULT = COCO_WITH_VOC_LABELS_V1


_IMAGENET_META = {"dataset": "ImageNet-1K", "num_classes": 1000, "min_size": (1, 1)}


class ResNet50_Weights(WeightsEnum):
    """ImageNet classification weights, used to initialise the backbone for training."""

    IMAGENET1K_V1 = Weights(
        url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
        transforms=None,
        meta={
            **_IMAGENET_META,
            "num_params": 25_557_032,
            "recipe": "https://github.com/pytorch/vision/tree/main/references/classification#resnet",
            "metrics": {"ImageNet-1K": {"acc@1": 76.130, "acc@5": 92.862}},
            "gflops": 4.089,
            "file_size_mb": 97.781,
        },
    )
    DEFAULT = IMAGENET1K_V1


class ResNet101_Weights(WeightsEnum):
    """ImageNet classification weights, used to initialise the backbone for training."""

    IMAGENET1K_V1 = Weights(
        url="https://download.pytorch.org/models/resnet101-63fe2227.pth",
        transforms=None,
        meta={
            **_IMAGENET_META,
            "num_params": 44_549_160,
            "recipe": "https://github.com/pytorch/vision/tree/main/references/classification#resnet",
            "metrics": {"ImageNet-1K": {"acc@1": 77.374, "acc@5": 93.546}},
            "gflops": 7.801,
            "file_size_mb": 170.511,
        },
    )
    DEFAULT = IMAGENET1K_V1


# Each model's name and weights enum: the registry's names, read without torch (``fcnseg --help``, ``fcnseg models``);
# fcnseg.models pairs each name with its builder.
MODEL_WEIGHTS: dict[str, type[WeightsEnum]] = {
    "fcn_resnet50": FCN_ResNet50_Weights,
    "fcn_resnet101": FCN_ResNet101_Weights,
}
