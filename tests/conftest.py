"""Shared fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))


@pytest.fixture
def cfg():
    """The project's default configuration."""
    from siyu.config import load_config

    return load_config()


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory, monkeypatch):
    """Keep MLflow stores and snapshots of tests out of the developer's .siyu/."""
    home = tmp_path_factory.mktemp("siyu-home")
    monkeypatch.setenv("SIYU_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
