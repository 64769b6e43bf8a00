"""Shared fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))


def java_missing() -> str | None:
    """Why Spark cannot start here (no Java), or None when it can."""
    import os
    import shutil

    home = os.environ.get("JAVA_HOME")
    if shutil.which("java") or (home and (Path(home) / "bin" / "java").exists()):
        return None
    return "Spark needs Java 17+: no `java` on PATH and no JAVA_HOME (install a JDK to run the Spark tests)"


def pytest_collection_modifyitems(config, items):
    """Spark tests skip with the reason when Java is missing, instead of failing in the JVM launcher."""
    reason = java_missing()
    if reason:
        for item in items:
            if item.get_closest_marker("spark"):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def cfg():
    """The project's default configuration."""
    from siyu.config import load_config

    return load_config()


@pytest.fixture(scope="session", autouse=True)
def _isolated_session_state(tmp_path_factory):
    """Module- and session-scoped fixtures load their config before any test's SIYU_HOME is set:
    give them a throwaway home too (the config resolves SIYU_HOME when it is loaded)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIYU_HOME", str(tmp_path_factory.mktemp("siyu-session-home")))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("SIYU_CONFIG", raising=False)
        yield


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory, monkeypatch):
    """Keep MLflow stores and snapshots of tests out of the developer's .siyu/."""
    home = tmp_path_factory.mktemp("siyu-home")
    monkeypatch.setenv("SIYU_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
