"""Registry: aliases, the champion gate, promote / rollback (API and CLI), and fast model loading."""

from __future__ import annotations

import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from training_world import FEATURES, make_table, small_cfg

from siyu.errors import SiyuError
from training import model_registry
from training.train import train_table

NAMES = [f.name for f in FEATURES]


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """v1: a real model; v2: a one-split stump trained on the same data (must lose the gate)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    # Enough users that LightGBM beats both baselines on churn beyond the bootstrap noise (v1 serves it).
    table, cutoffs = make_table(1500, 3, seed=11)
    lgbm = ("lightgbm", "logistic", "rule")  # no blend: these tests read the booster itself
    cfg = small_cfg(uri, candidates=lgbm)
    first = train_table(table, cutoffs, cfg, FEATURES, experiment="r")
    assert first.labels["churn"].scorer == "lightgbm", first.labels["churn"].message
    weak = small_cfg(uri, num_boost_round=1, candidates=("lightgbm",), lgbm_params={"num_leaves": 2})
    second = train_table(table, cutoffs, weak, FEATURES, experiment="r")
    return cfg, table, cutoffs, first, second


def test_first_version_becomes_champion(two_versions):
    _, _, _, first, _ = two_versions
    g = first.labels["churn"].gate
    assert first.labels["churn"].version == 1 and g.promoted and g.reason.startswith("no champion yet")


def test_worse_challenger_does_not_replace_champion(two_versions):
    cfg, _, _, first, second = two_versions
    r2, r1 = second.labels["churn"], first.labels["churn"]
    g = r2.gate
    assert r2.version == 2 and not g.promoted
    # both numbers are on the same validation rows: the champion's is v1's own validation AUC
    served = r2.metrics if r2.scorer == "lightgbm" else r2.baselines[r2.scorer]  # the stump may lose to a baseline
    assert g.champion == pytest.approx(r1.metrics["roc_auc"]) and g.challenger == pytest.approx(served["roc_auc"])
    assert g.challenger < g.champion and g.champion_version == 1
    assert model_registry.resolve_alias(cfg, "churn", "champion") == 1
    assert model_registry.resolve_alias(cfg, "churn", "challenger") == 2
    model_registry.use_tracking(cfg)
    run = mlflow.get_run(r2.run_id)
    assert run.data.tags["siyu.gate"] == "kept_champion" and "champion v1" in run.data.tags["siyu.gate_reason"]
    assert run.data.metrics["gate_champion_roc_auc"] == pytest.approx(g.champion)


def test_load_model_scores_like_the_pyfunc(two_versions):
    cfg, table, cutoffs, first, _ = two_versions
    m = model_registry.load_model(cfg, "churn")
    assert (m.label, m.name, m.version, m.feature_names, m.kind) == ("churn", "siyu-churn", 1, NAMES, "lightgbm")
    X = table.loc[table.cutoff == cutoffs[-1], NAMES].astype(float).to_numpy()[:50]
    p = m.predict_proba(X)
    assert p.shape == (50,) and np.all((p >= 0) & (p <= 1))
    model_registry.use_tracking(cfg)
    pyfunc = mlflow.pyfunc.load_model("models:/siyu-churn@champion")
    np.testing.assert_allclose(pyfunc.predict(pd.DataFrame(X, columns=NAMES)), p)
    c = m.contributions(X)
    assert c.shape == (50, len(NAMES) + 1)
    np.testing.assert_allclose(c.sum(axis=1), m.booster.predict(X, raw_score=True), rtol=1e-6, atol=1e-9)


def test_promote_and_rollback(two_versions):
    cfg = two_versions[0]
    assert model_registry.resolve_alias(cfg, "churn", "champion") == 1  # the gate kept v1
    assert model_registry.promote(cfg, "churn", 2) == 1
    assert model_registry.resolve_alias(cfg, "churn", "champion") == 2
    assert model_registry.rollback(cfg, "churn") == 1
    assert model_registry.resolve_alias(cfg, "churn", "champion") == 1
    with pytest.raises(SiyuError, match="no earlier champion"):
        model_registry.rollback(cfg, "churn")
    with pytest.raises(SiyuError, match="no version 7"):
        model_registry.promote(cfg, "koc", 7)
    with pytest.raises(SiyuError, match="alias 'staging'"):
        model_registry.resolve_alias(cfg, "koc", "staging")
    with pytest.raises(SiyuError, match="unknown label"):
        model_registry.resolve_alias(cfg, "ltv")


def _cli(monkeypatch, capsys, *argv) -> tuple[int, str]:
    from app.cli import main

    monkeypatch.setattr(sys, "argv", ["siyu", *argv])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def test_cli_promote_rollback(two_versions, monkeypatch, capsys, tmp_path):
    cfg = two_versions[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.mlflow.tracking_uri)  # the CLI reads the default config
    model_registry.promote(cfg, "promotion", 1)  # whatever the gate decided, start from v1
    code, out = _cli(monkeypatch, capsys, "promote", "promotion", "--version", "2")
    assert code == 0 and "champion v1 -> v2" in out
    code, out = _cli(monkeypatch, capsys, "rollback", "promotion")
    assert code == 0 and "champion is now v1" in out
    code, out = _cli(monkeypatch, capsys, "promote", "promotion", "--version", "9")
    assert code == 2 and "no version 9" in out and "Traceback" not in out


def test_tracking_follows_each_config(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI; siyu must not let that pin later configs."""
    a, b = small_cfg(f"sqlite:///{tmp_path / 'a.db'}"), small_cfg(f"sqlite:///{tmp_path / 'b.db'}")
    assert model_registry.use_tracking(a) == a.mlflow.tracking_uri
    assert (
        model_registry.use_tracking(b) == b.mlflow.tracking_uri and mlflow.get_tracking_uri() == b.mlflow.tracking_uri
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # a user's server still wins
    assert model_registry.use_tracking(a) == "http://127.0.0.1:9"


def test_local_store_keeps_artifacts_beside_the_store_not_in_cwd(cfg, tmp_path, monkeypatch):
    import mlflow

    from training.model_registry import use_experiment

    monkeypatch.chdir(tmp_path)
    use_experiment(cfg, "where-do-artifacts-go")
    loc = mlflow.get_experiment_by_name("where-do-artifacts-go").artifact_location
    assert loc.startswith((cfg.home() / "mlartifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()
