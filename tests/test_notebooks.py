"""Both notebooks run top to bottom (nbclient, real kernel) on a small simulated world trained into MLflow."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

pytestmark = pytest.mark.slow
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture(scope="module")
def trained_world(tmp_path_factory):
    """A 600-user world, a config scaled for it, and one training in a throwaway store."""
    import os

    from simulation.simulator import simulate_world
    from siyu.config import DEFAULT_CONFIG, load_config
    from training.train import train_all

    d = tmp_path_factory.mktemp("nbworld")
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["training"]["min_class_count"] = 5
    raw["mlflow"]["experiment"] = "notebooks"
    raw["ltv"]["horizon_days"] = 60  # the LTV section gets a run (and the simulator its LTV oracle) in 240 days
    (d / "siyu.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(d / "siyu.yaml")
    simulate_world(cfg, users=600, days=240, out_dir=d / "world", replicas=8)
    env = {
        "SIYU_EVENTS": str(d / "world" / "events.parquet"),
        "SIYU_CONFIG": str(d / "siyu.yaml"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}",
    }
    os.environ.update(env)
    try:
        result = train_all(env["SIYU_EVENTS"], cfg)
    finally:
        for k in env:
            os.environ.pop(k, None)
    return env, result


@pytest.mark.parametrize("name", ["exploration.ipynb", "model_report.ipynb"])
def test_notebook_runs_top_to_bottom(name, trained_world, monkeypatch, tmp_path):
    env, result = trained_world
    assert any(r.trained for r in result.labels.values())
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # the kernel inherits this process's environment
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors
    if name == "model_report.ipynb":
        assert result.parent_run_id in text and "because" in text  # the latest run, and users' reasons
        assert result.ltv.trained and "model / oracle Gini" in text  # the LTV table beside baselines and oracle
    else:
        assert "events" in text and any(
            o.get("data", {}).get("image/png") for c in nb.cells for o in c.get("outputs", [])
        )
