"""Shared test fixtures: where the project's shared data lives."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EFFSAM2_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared data folder not found at {SHARED} (set EFFSAM2_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def davis_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "davis2016"


@pytest.fixture(scope="session")
def videos_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "videos"
