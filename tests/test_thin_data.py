"""Thin data (issue #15, item 5): a label without a champion is scored by the operator rule, marked `rule`."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import yaml

from siyu.config import DEFAULT_CONFIG, load_config
from siyu.contract import LABELS


def test_no_champion_scores_by_rule_in_batch_and_api(tmp_path):
    from events.loader import connect
    from events.validate import load_valid_events
    from features.labels import label_table
    from serving.batch import score_pool
    from serving.predictor import Predictor
    from serving.snapshot import load_snapshot
    from simulation.simulator import simulate_world
    from training.train import train_all

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw["training"]["min_class_count"] = 1_000_000  # too few positives for every label
    path = tmp_path / "mlproject.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    simulate_world(cfg, users=150, days=200, seed=5, out_dir=tmp_path / "w", oracle_cutoffs=[])
    log = tmp_path / "w" / "events.parquet"
    assert not train_all(log, cfg).trained_any()

    last = pd.read_parquet(log, columns=["ts"]).ts.max()
    asof = datetime(last.year, last.month, last.day) + timedelta(days=1)
    out = tmp_path / "scores.parquet"
    summary = score_pool(log, asof, out, cfg, record=False, show_progress=False)
    assert summary.scorers == {lab: "operator_rule" for lab in LABELS}
    assert all(v is None for v in summary.versions.values())
    snap = load_snapshot(out)
    assert set(snap.rules) == set(LABELS)

    # The rule's overall rate is the label's rate one horizon earlier (measured by features.labels).
    con = connect()
    load_valid_events(con, log, cfg)
    past = label_table(con, asof - timedelta(days=cfg.windows.horizon_days), cfg)
    for lab in LABELS:
        y = past.loc[past[f"in_{lab}_pop"], lab].astype(float)
        assert snap.rules[lab]["overall"] == float(y.mean())
        p = snap.proba[lab][snap.pops[lab]]
        assert len(p) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
        assert set(np.round(p, 12)) <= {round(r, 12) for r in _rates(snap.rules[lab])}

    pred = Predictor.load(cfg, str(out))
    assert pred.scorers == {lab: "operator_rule" for lab in LABELS}
    uid = snap.user_ids[np.flatnonzero(snap.pops["churn"])[0]]
    (item,) = pred.predict_ids([uid])
    assert item["p_churn"] == snap.proba["churn"][snap.index[uid]] and item["churn"]["reasons"] == []
    events = pd.read_parquet(log)
    mine = events[(events.user_id == uid) & (events.ts <= asof)]
    rows = [
        {k: (None if pd.isna(v) else (v.isoformat() if isinstance(v, pd.Timestamp) else v)) for k, v in r.items()}
        for r in mine.to_dict("records")
    ]
    got, _ = pred.predict_events(rows, asof)
    assert got[0]["p_churn"] == item["p_churn"]  # the same rule on the same events


def _rates(rule: dict) -> list[float]:
    r = rule["rates"]
    return [*(r.values() if isinstance(r, dict) else r), rule["overall"]]


def test_koc_is_not_predicted_on_a_log_without_advocacy_events(tmp_path):
    """An order log cannot show a KOC: no rule gives everyone 0 (a percentile and bucket that mean nothing);
    p_koc is null in the snapshot and the API, the scorer is null, and `siyu score` says why."""
    from rich.console import Console

    from serving.batch import print_summary, score_pool
    from serving.predictor import Predictor
    from serving.snapshot import load_snapshot
    from simulation.simulator import simulate_world
    from siyu.contract import NEEDS_FAMILY
    from training.train import train_all

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw["simulation"]["export"] = "orders"
    raw["training"]["min_class_count"] = 1_000_000  # no champion for any label
    path = tmp_path / "mlproject.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    simulate_world(cfg, users=300, days=200, seed=5, out_dir=tmp_path / "w", oracle_cutoffs=[])
    log = tmp_path / "w" / "events.parquet"
    trained = train_all(log, cfg)  # training says why koc is not trained: not "too little data"
    assert trained.labels["koc"].message == f"not trained: {NEEDS_FAMILY['koc'][1]}"
    assert trained.labels["churn"].message.startswith("skipped, too little data")
    assert f"koc: not trained: {NEEDS_FAMILY['koc'][1]}" in trained.warnings()
    asof = datetime(2025, 7, 1)
    out = tmp_path / "scores.parquet"
    summary = score_pool(log, asof, out, cfg, record=False, show_progress=False)  # no champion at all
    assert summary.scorers == {"churn": "operator_rule", "promotion": "operator_rule", "koc": None}
    assert summary.scored["koc"] == 0 and summary.scored["churn"] > 0
    snap = load_snapshot(out)
    assert set(snap.rules) == {"churn", "promotion"} and snap.pops["koc"].any()
    assert np.isnan(snap.proba["koc"]).all()
    console = Console(record=True, width=300)
    print_summary(summary, console)
    assert "koc - (no advocacy events in the log: not predicted)" in console.export_text()

    pred = Predictor.load(cfg, str(out))
    assert pred.scorers["koc"] is None
    uid = snap.user_ids[np.flatnonzero(snap.pops["koc"] & snap.pops["promotion"])[0]]
    (item,) = pred.predict_ids([uid])
    assert item["p_koc"] is None and item["koc"] is None and item["p_promotion"] is not None
