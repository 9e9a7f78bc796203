"""The loopback S3 server and a fresh bucket per test (see ``tests/s3server.py``, shared with other test folders),
and the random three-class checkpoint the segment tests run."""

from __future__ import annotations

from pathlib import Path

import pytest
from checkpoints import THREE_CLASSES, write_checkpoint
from s3server import s3, s3_server  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "random3.pth", THREE_CLASSES)
