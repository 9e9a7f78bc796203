"""Inputs shared by the fault tests: a random-init 3-class checkpoint, small photos, a tiny training set."""

from __future__ import annotations

from pathlib import Path

import pytest
from checkpoints import write_checkpoint
from imagefiles import photo
from shapes_data import write_shapes_dataset

CATEGORIES = ["background", "thing", "stuff"]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "random3.pth", CATEGORIES)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """``a.png`` and ``b.png``, 40x48, in ``tmp_path/in``."""
    folder = tmp_path / "in"
    folder.mkdir()
    for seed, name in enumerate("ab"):
        photo(40, 48, seed=seed).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("fault_shapes"), n_train=8, n_val=2, seed=3)
