"""Shared fixtures: golden references, an isolated torch.hub cache, and no network."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "golden"

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty TORCH_HOME and no downloads, so results never depend on the user's cache."""
    home = tmp_path_factory.mktemp("torch_home")
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("FCNSEG_OFFLINE", "1")
    return home


@pytest.fixture
def torch_home(_isolated_cache: Path) -> Path:
    return _isolated_cache


@pytest.fixture(scope="session")
def golden():
    """``golden(name) -> (state_dict, {"input", "out", "aux"})`` from ../shared/golden."""
    if not GOLDEN.is_dir():
        pytest.fail(f"golden fixtures not found at {GOLDEN}")
    sys.path.insert(0, str(GOLDEN))
    from golden_weights import golden_state_dict, load_manifest

    def load(name: str):
        ref = torch.load(GOLDEN / f"{name}.expected.pt", weights_only=True)
        return golden_state_dict(load_manifest(name)), ref

    return load


@pytest.fixture(scope="session")
def manifest():
    sys.path.insert(0, str(GOLDEN))
    from golden_weights import load_manifest

    return load_manifest
