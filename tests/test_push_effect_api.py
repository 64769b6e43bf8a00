"""The contact advice in the snapshot and the API answer (issue #17), on the shared serving world."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from serving_world import serving_world

from serving.advice import FIELDS


@pytest.fixture(scope="module")
def world():
    return serving_world()


def _model(cfg, names, X):
    """A push-effect model on the snapshot's features with a made-up contrast (the world is too small for one)."""
    from training.uplift import fit_push_effect

    rng = np.random.default_rng(0)
    held = rng.random(len(X)) < 0.3
    tired = np.nan_to_num(X[:, names.index("fatigue_30d")]) > 1.5
    churn = rng.random(len(X)) < np.where(held, 0.3, np.where(tired, 0.6, 0.1))
    u = cfg.uplift.model_copy(
        update={"num_boost_round": 20, "lgbm_params": {**cfg.uplift.lgbm_params, "min_data_in_leaf": 5}}
    )
    return fit_push_effect(X, churn, rng.random(len(X)) * 10, held, cfg.model_copy(update={"uplift": u}), names, "m")


def test_snapshot_has_the_advice_columns(world):
    table = pq.read_table(world.scores)
    for f in FIELDS:
        assert f in table.column_names, f
    # The tiny world's control groups are below uplift.min_held_rows: no model, so no advice (null, never made up).
    assert table.column("contact").null_count == table.num_rows


def test_api_answers_the_advice_and_the_fast_json_equals_the_dicts(world):
    from serving.predictor import Predictor

    pred = Predictor.load(world.cfg, str(world.scores))
    snap = pred.snap
    pred.push_effect = model = _model(world.cfg, snap.feature_names, snap.X)
    ids = ["nobody", *pd.Series(list(snap.index)).head(300)]
    items = pred.predict_ids(ids)
    text, _, _ = pred.predict_ids_json(ids)
    assert text == json.dumps(items, allow_nan=False, separators=(",", ":"))
    ok = [i for i in items if i["status"] == "ok"]
    rows = np.array([snap.index[i["user_id"]] for i in ok])
    in_pop = snap.pops["churn"][rows]
    assert in_pop.any() and (~in_pop).any()
    eff = model.effects(snap.X[rows])["churn"]
    for item, inside, e in zip(ok, in_pop, eff):
        assert list(item)[-len(FIELDS) :] == list(FIELDS)
        if inside:
            assert item["push_effect_churn"] == pytest.approx(e)
            assert item["contact"] in ("push", "hold") and item["contact_reason"]
            assert item["fatigue"] in ("rested", "tiring", "fatigued")
        else:
            assert all(item[f] is None for f in FIELDS)
    held = [i for i in ok if i["contact"] == "hold"]
    assert all(i["push_effect_churn"] > world.cfg.uplift.policy.hold_above for i in held)
