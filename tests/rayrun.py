"""What the Ray tests share with their conftest: how they run ``fcnseg segment`` and with which settings."""

from __future__ import annotations

from pathlib import Path

from fcnseg.cli import main

SETTINGS = ["--size", "64", "--save", "mask,json", "--quiet"]  # with the seeded random checkpoint: fast, exact


def segment(*argv: str | Path) -> int:
    return main(["segment", *map(str, argv)])
