"""Package attributes imported on first use (PEP 562), so that a light import stays light.

``fcnseg --help`` and ``fcnseg models`` must not wait for torch (seconds); a package whose ``__init__`` re-exports
torch-backed names (``fcnseg``, ``fcnseg.train``) maps each name to the submodule that defines it instead:

    __getattr__, __dir__ = lazy_attributes(__name__, {"Segmenter": ".predict", ...})

``from fcnseg import Segmenter`` then imports ``fcnseg.predict`` at that moment, and only then.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, homes: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``: ``homes`` maps a public name to its (relative) module."""

    def getattr_(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(homes[name], package), name)
        setattr(sys.modules[package], name, value)  # found once; later lookups are plain attribute reads
        return value

    def dir_() -> list[str]:
        return sorted({*vars(sys.modules[package]), *homes})

    return getattr_, dir_
