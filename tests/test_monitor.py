"""`siyu monitor` on a simulated world whose brand triples its pushes from day 195 on (tests/monitor_world.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from monitor_world import monitor_world

from monitoring.run import monitor

PUSH_SIGNALS = ["n_exposure_7d", "push_trend"]  # pushes received: what the policy change moves first


@pytest.fixture(scope="module")
def world():
    return monitor_world()


@pytest.fixture(scope="module")
def control(world):
    """Two snapshots 30 days apart, both before the change."""
    return monitor(
        world.snaps["before_a"],
        world.snaps["before_b"],
        world.cfg,
        world.events,
        world.root / "mon_control",
        log_mlflow=False,
        show_progress=False,
    )


@pytest.fixture(scope="module")
def changed(world):
    """Before the change -> 15 days into it; logged to MLflow."""
    return monitor(
        world.snaps["before_b"],
        world.snaps["after"],
        world.cfg,
        world.events,
        world.root / "mon_changed",
        log_mlflow=True,
        show_progress=False,
    )


def test_the_push_policy_change_is_flagged_and_the_control_is_not(control, changed):
    fc, fx = control.report["drift"]["features"], changed.report["drift"]["features"]
    for f in PUSH_SIGNALS:
        assert fx[f]["status"] == "alert", (f, fx[f])
        assert fc[f]["status"] != "alert", (f, fc[f])
        assert fx[f]["psi"] > 3 * fc[f]["psi"], (f, fc[f]["psi"], fx[f]["psi"])
        assert fx[f]["mean_new"] > fx[f]["mean_old"]  # more pushes, not fewer
    assert changed.status == "alert" and any(a.startswith("drift.features.n_exposure_7d") for a in changed.alerts)
    for r in (control, changed):
        assert set(r.report["drift"]["scores"]) == {"p_churn", "p_promotion"}
        assert r.report["drift"]["users"]["gone_share"] == 0.0  # a log never forgets users
        assert 0 < r.report["drift"]["users"]["new_share"] < 0.3


def test_realised_auc_equals_the_auc_from_siyu_labels_on_the_same_users(world, changed, tmp_path):
    from sklearn.metrics import roc_auc_score

    old = world.asof["before_b"]
    out = tmp_path / "labels.parquet"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "labels",
            str(world.events),
            "--cutoff",
            f"{old:%Y-%m-%d}",
            "--out",
            str(out),
            "--config",
            str(world.cfg_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    labels = pd.read_parquet(out)
    snap = pd.read_parquet(world.snaps["before_b"], columns=["user_id", "p_churn", "p_promotion"])
    j = snap.merge(labels, on="user_id")
    realised = changed.report["realised"]
    assert realised["horizon_complete"] is True
    for lab in ("churn", "promotion"):
        m = j[lab].notna() & j[f"p_{lab}"].notna()
        auc = roc_auc_score(j.loc[m, lab].astype(int), j.loc[m, f"p_{lab}"])
        assert realised[lab]["n"] == int(m.sum()) > 100
        assert realised[lab]["roc_auc"] == pytest.approx(auc, abs=1e-12)
        assert {"pr_auc", "brier", "lift_top10", "catch_top10"} <= set(realised[lab])
        bins = realised[lab]["calibration"]  # quantile bins; tied scores (an isotonic step) merge bins
        assert 2 <= len(bins) <= world.cfg.monitoring.calibration_bins
        assert sum(b["n"] for b in bins) == realised[lab]["n"]
        est = changed.report["estimate"][lab]  # CBPE beside the realised value
        assert est["realised_roc_auc"] == realised[lab]["roc_auc"]
        assert est["gap_roc_auc"] == pytest.approx(realised[lab]["roc_auc"] - est["roc_auc"])
        assert 0.5 < est["roc_auc"] < 1.0


def test_report_files_and_mlflow_run(world, changed):
    import mlflow

    out = changed.out
    rep = json.loads((out / "monitor.json").read_text())
    assert rep["drift"]["features"]["n_exposure_7d"]["psi"] == pytest.approx(
        changed.report["drift"]["features"]["n_exposure_7d"]["psi"]
    )
    assert {"drift_features.png", "tier_mix.png", "calibration.png", "monitor.html"} <= {p.name for p in out.iterdir()}
    assert "n_exposure_7d" in (out / "monitor.html").read_text()
    client = mlflow.MlflowClient(world.cfg.tracking_uri())
    run = client.get_run(changed.run_id)
    psi = rep["drift"]["features"]["n_exposure_7d"]["psi"]
    assert run.data.metrics["drift.features.n_exposure_7d.psi"] == pytest.approx(psi)
    assert run.data.metrics["realised.churn.roc_auc"] == pytest.approx(rep["realised"]["churn"]["roc_auc"])
    v = rep["old"]["versions"]["churn"]
    assert run.data.tags["siyu.old_model.churn"] == f"models:/siyu-churn/{v}"
    tags = client.get_model_version("siyu-churn", str(v)).tags
    assert f"siyu.monitor_old.{changed.run_id}" in tags
    assert "monitor.html" in {a.path for a in client.list_artifacts(changed.run_id)}


def test_cli_fails_on_alert_and_says_the_horizon_is_incomplete(world, tmp_path):
    ev = pd.read_parquet(world.events)
    cut = world.asof["before_b"] + pd.Timedelta(days=12)
    short = tmp_path / "events_short.parquet"
    ev[ev.ts < cut].to_parquet(short)
    args = [
        sys.executable,
        "-m",
        "app",
        "monitor",
        str(world.snaps["before_b"]),
        str(world.snaps["after"]),
        "--events",
        str(short),
        "--no-mlflow",
        "--config",
        str(world.cfg_path),
    ]
    r = subprocess.run(
        [*args, "--out", str(tmp_path / "m"), "--fail-on", "alert"], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 3, r.stdout + r.stderr
    assert "horizon not yet complete" in r.stdout and "Traceback" not in r.stderr
    rep = json.loads((tmp_path / "m" / "monitor.json").read_text())
    assert rep["realised"]["horizon_complete"] is False and "churn" not in rep["realised"]
    assert "~18 days to go" in rep["realised"]["message"]
    assert rep["estimate"]["churn"]["roc_auc"] > 0.5 and "realised_roc_auc" not in rep["estimate"]["churn"]


def test_monitor_refuses_swapped_snapshots_and_unknown_fail_on(world, changed):
    from siyu.errors import SiyuError

    assert changed.fails("alert") and changed.fails("watch") and not changed.fails("never")
    with pytest.raises(SiyuError, match="--fail-on must be one of"):
        changed.fails("bogus")

    with pytest.raises(SiyuError, match="later than the new one"):
        monitor(world.snaps["after"], world.snaps["before_a"], world.cfg, out=world.root / "x", log_mlflow=False)
