"""The random three-class checkpoint the segment tests feed to ``--weights``, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from checkpoints import THREE_CLASSES, write_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "random3.pth", THREE_CLASSES)
