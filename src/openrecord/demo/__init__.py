"""Synthetic sample patients for `openrecord demo` (Synthea, Apache-2.0; no real people)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["demo_files"]


def demo_files() -> list[Path]:
    folder = resources.files("openrecord.demo").joinpath("data")
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".json.gz"))
