"""Shared fixtures: golden references (tests/golden), an isolated torch.hub cache, and no network."""

from __future__ import annotations

from pathlib import Path

import golden as golden_fixtures
import pytest
import torch

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
    """``golden(name) -> (state_dict, {"input", "out", "aux"})``: deterministic weights and torchvision's outputs."""

    def load(name: str):
        return golden_fixtures.state_dict(name), golden_fixtures.expected(name)

    return load


@pytest.fixture(scope="session")
def manifest():
    """``manifest(name) -> {key: (shape, dtype)}``: torchvision's state-dict keys in order."""
    return golden_fixtures.manifest
