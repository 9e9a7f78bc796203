"""The golden parity tests need nothing outside the repository: a user's clone has no shared fixtures beside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_golden_parity_runs_in_a_lone_copy_of_the_repo(tmp_path):
    clone = tmp_path / "clone"  # nothing named shared/ beside it or above it
    shutil.copytree(ROOT / "tests", clone / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", clone)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    test = "tests/models/test_fcn.py::test_golden_parity_with_torchvision[fcn_resnet50]"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout
