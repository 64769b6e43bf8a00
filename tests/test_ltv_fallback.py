"""No LTV model beats the baselines: BG/NBD + Gamma-Gamma is registered and serves, loudly, without reasons."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from serving_world import small_config

from siyu.config import load_config


def _ltv_run(cfg):
    from events.loader import connect
    from events.validate import load_valid_events
    from features.catalog import features_of
    from features.windows import resolve
    from training.ltv_train import ltv_data, train_ltv
    from training.model_registry import use_experiment

    use_experiment(cfg, cfg.mlflow.experiment)
    con = connect(cfg=cfg)
    load_valid_events(con, cfg.source.parent / "world" / "events.parquet", cfg)
    cfg = resolve(cfg, con)
    table, cuts, why = ltv_data(con, cfg)
    con.close()
    return cfg, table, cuts, train_ltv(table, cuts, why, cfg, features_of(cfg), None, None)


def _config(root, margin: float):
    path = small_config(root)
    raw = yaml.safe_load(path.read_text())
    # A normalized Gini lies in [-1, 1]: no model - baseline difference can clear a margin of 2.
    raw["training"].update(serve_best_baseline=True, gate_margin=margin)
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


@pytest.fixture(scope="module")
def fallback(tmp_path_factory):
    from simulation.simulator import simulate_world

    root = tmp_path_factory.mktemp("ltv-fallback")
    cfg = _config(root, 2.0)
    simulate_world(cfg, users=1500, days=240, seed=3, out_dir=root / "world", oracle_cutoffs=[])
    return (root, *_ltv_run(cfg))


def test_a_losing_ltv_model_is_replaced_by_bgnbd_gg_loudly(fallback):
    from training.model_registry import load_model, model_name, use_tracking
    from training.train import TrainResult

    _, cfg, table, cuts, res = fallback
    assert res.trained and not res.beats_baselines and res.scorer == "bgnbd_gg"
    assert res.gate.promoted and "serving bgnbd_gg" in res.gate.reason
    model = load_model(cfg, "ltv")
    assert model.kind == "ltv_bgnbd_gg" and model.version == res.version and model.referral is None
    # what serves scores the validation rows exactly as the bgnbd_gg baseline of the table did
    from training import ltv_metrics as lm
    from training.fit import matrix

    val = table[table["cutoff"] == cuts[-1]].reset_index(drop=True)
    y = val["ltv_own"].to_numpy(dtype=float) + np.nan_to_num(val["ltv_referral"].to_numpy(dtype=float))
    p = model.predict_proba(matrix(val, model.feature_names, np.arange(len(val))))
    assert lm.gini(y, p) == pytest.approx(res.metrics["bgnbd_gg"]["gini"], abs=1e-12)
    use_tracking(cfg)
    run = mlflow.get_run(res.run_id)
    assert run.data.tags["siyu.scorer"] == "bgnbd_gg" and run.data.params["scorer"] == "bgnbd_gg"
    assert "serving the best baseline (bgnbd_gg)" in run.data.tags["siyu.warning"]
    result = TrainResult("", "", "", [], {}, {}, ltv=res)
    assert any("serving the best baseline 'bgnbd_gg'" in w for w in result.warnings())
    # the MLflow model is the same seven numbers, loaded without pickle
    pyf = mlflow.pyfunc.load_model(f"models:/{model_name(cfg, 'ltv')}@champion")
    frame = pd.DataFrame(matrix(val, model.feature_names, np.arange(5)), columns=model.feature_names)
    assert np.allclose(np.asarray(pyf.predict(frame)), p[:5])


def test_the_served_baseline_has_own_value_only_and_no_reasons(fallback, tmp_path):
    from features.catalog import features_of
    from serving.ltv_scores import LtvScorer, add_meta, snapshot_columns
    from training.fit import matrix
    from training.model_registry import load_model

    _, cfg, table, cuts, _ = fallback
    names = [f.name for f in features_of(cfg)]
    val = table[table["cutoff"] == cuts[-1]].reset_index(drop=True)
    X = matrix(val, names, np.arange(len(val)))
    scorer = LtvScorer(load_model(cfg, "ltv"), names)
    assert scorer.scorer == "bgnbd_gg" and not scorer.has_referral
    s = scorer.score(X)
    assert np.isnan(s.referral).all() and np.allclose(s.ltv, s.own) and (s.ltv >= 0).all()
    assert (s.reason_idx == -1).all()
    cols = snapshot_columns(scorer, X, names, cfg)
    assert cols["reasons_ltv"].null_count == len(X) and cols["ltv_referral"].null_count == len(X)
    assert set(cols["segment_ltv"].to_pylist()) == {"spenders", "others"}
    import json

    import pyarrow as pa

    from serving.snapshot import META_KEY

    t = pa.table({"x": [1]}).replace_schema_metadata({META_KEY: json.dumps({})})
    assert json.loads(add_meta(t, scorer).schema.metadata[META_KEY])["ltv"]["scorer"] == "bgnbd_gg"


def test_a_model_that_beats_every_baseline_takes_over_from_the_served_baseline(fallback):
    from training.model_registry import load_model

    root, *_ = fallback
    cfg, _, _, res = _ltv_run(_config(root, 0.0))
    assert res.beats_baselines and res.scorer == "lightgbm", res.message
    assert res.gate.promoted and "ltv_bgnbd_gg" in res.gate.reason, res.gate.reason
    assert load_model(cfg, "ltv").kind == "ltv"
