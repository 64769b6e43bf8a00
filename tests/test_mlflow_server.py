"""Integration: a real `mlflow server` on 127.0.0.1 (sqlite backend, proxied artifacts); a small
simulated world is validated, featured and trained against it end to end, and the champion loads back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Start `mlflow server` and yield its URL; stop it (this process's child only) afterwards."""
    d = tmp_path_factory.mktemp("server")
    port = _free_port()
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{d / 'mlflow.db'}",
        "--artifacts-destination",
        str(d / "artifacts"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log = open(d / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start: {(d / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url
    os.killpg(proc.pid, 15)  # the server's own process group (its workers), nothing else
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    """A few hundred simulated users with the oracle, via the simulator's function."""
    from simulation.simulator import simulate_world
    from siyu.config import load_config

    out = tmp_path_factory.mktemp("world")
    simulate_world(load_config(), users=600, days=240, out_dir=out, replicas=8)
    return out / "events.parquet"


def test_train_against_a_real_server(server, small_world, monkeypatch):
    from training_world import small_cfg

    from training import model_registry
    from training.train import train_all

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)  # the environment's server wins over the config
    cfg = small_cfg("sqlite:////nonexistent/ignored.db", min_class_count=5)
    result = train_all(small_world, cfg, experiment="server-it")
    assert result.tracking_uri == server
    trained = [r for r in result.labels.values() if r.trained]
    assert trained, [r.message for r in result.labels.values()]
    mlflow.set_tracking_uri(server)
    client = mlflow.MlflowClient()
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["validation_cutoff"] == f"{result.cutoffs[-1]:%Y-%m-%d}"
    for r in trained:
        run = client.get_run(r.run_id)
        assert run.data.metrics["roc_auc"] == pytest.approx(r.metrics["roc_auc"])
        assert "oracle_roc_auc" in run.data.metrics  # the simulator's oracle covers the validation cutoff
        art = {a.path for a in client.list_artifacts(r.run_id, "evaluation")}
        assert f"evaluation/{r.label}_calibration.png" in art
        m = model_registry.load_model(cfg, r.label)  # downloaded through the server's artifact proxy
        assert m.version == r.version == 1 and len(m.feature_names) == m.booster.num_feature()
