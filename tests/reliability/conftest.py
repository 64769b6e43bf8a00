"""Shared fixtures of the reliability suite: one trained world (the serving tests' one) and one API server."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from serving_world import serving_world

from reliability.server import start_server, stop_server, wait_status


@pytest.fixture(scope="session")
def world():
    """The session's small simulated world: trained champions in a temp MLflow store, and a scores snapshot."""
    return serving_world()


@pytest.fixture(scope="session")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="siyu-reliability-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def api(world, workdir):
    """One `siyu serve` on 127.0.0.1 with a bearer token, ready; shared by the tests that only send requests.

    Access logs are on (off by default): the token checks need request lines in the log, and the load
    test then measures the heavier configuration.
    """
    server = start_server(
        world.cfg_path,
        world.scores,
        workdir,
        extra_env={"MLFLOW_TRACKING_URI": world.cfg.tracking_uri(), "SIYU_ACCESS_LOG": "1"},
    )
    try:
        wait_status(server, "/readyz", 200, timeout=180)
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def user_ids(world):
    import pandas as pd

    return pd.read_parquet(world.scores, columns=["user_id"]).user_id.astype(str).tolist()
