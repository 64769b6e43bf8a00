"""LTV end to end on the serving world: registered kind `ltv`, snapshot columns, segments, batch/API parity."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from serving_world import serving_world

from serving.ltv_scores import SEGMENTS, segments


@pytest.fixture(scope="module")
def world():
    return serving_world()


@pytest.fixture(scope="module")
def snap(world):
    return pd.read_parquet(world.scores)


def test_snapshot_has_ltv_for_every_user(world, snap):
    from serving.snapshot import read_meta

    meta = read_meta(world.scores)["ltv"]
    assert meta["version"] >= 1 and meta["referral"] is True
    assert snap["ltv"].notna().all() and (snap["ltv"] >= 0).all()
    assert np.allclose(snap["ltv"], snap["ltv_own"] + snap["ltv_referral"])
    assert set(snap["segment_ltv"]) <= set(SEGMENTS) and snap["reasons_ltv"].map(len).eq(3).all()
    assert snap["pct_ltv"].between(0, 100).all()
    # the segment follows the configured top shares of each axis
    share = (snap["segment_ltv"].isin(["champions", "spenders"])).mean()
    assert share == pytest.approx(world.cfg.ltv.segments.own_top_share, abs=0.02)


def test_segments_cross_the_two_axes(cfg):
    pct_own = np.array([99.0, 99.0, 10.0, 10.0, 99.0])
    pct_ref = np.array([99.0, 10.0, 99.0, 10.0, np.nan])  # NaN: no referral axis (purchases-only log)
    assert segments(pct_own, pct_ref, cfg).tolist() == ["champions", "spenders", "advocates", "others", "spenders"]


def test_registered_ltv_model_loads_without_pickle_and_matches_serving(world, snap):
    import mlflow

    from serving.snapshot import FEATURE_PREFIX
    from training.model_registry import load_model, model_name, use_tracking

    model = load_model(world.cfg, "ltv")
    assert model.kind == "ltv" and model.referral is not None
    X = snap[[FEATURE_PREFIX + f for f in model.feature_names]].to_numpy(dtype=float)
    assert np.allclose(model.predict_proba(X[:50]), snap["ltv"].to_numpy()[:50], rtol=1e-9)
    use_tracking(world.cfg)
    pyf = mlflow.pyfunc.load_model(f"models:/{model_name(world.cfg, 'ltv')}@champion")
    frame = pd.DataFrame(X[:5], columns=model.feature_names)
    assert np.allclose(np.asarray(pyf.predict(frame)), snap["ltv"].to_numpy()[:5])


def test_api_answers_ltv_like_the_batch(world, snap):
    from serving.predictor import Predictor

    p = Predictor.load(world.cfg, str(world.scores))
    ids = snap["user_id"].tolist()[:20]
    items = p.predict_ids(ids)
    got = np.array([i["ltv"] for i in items])
    assert np.allclose(got, snap["ltv"].round(2).to_numpy()[:20], atol=0.006)
    assert [i["lifetime_value"]["segment"] for i in items] == snap["segment_ltv"].tolist()[:20]
    assert p.versions["ltv"] == json.loads(json.dumps(p.versions))["ltv"]
    text, _, _ = p.predict_ids_json(ids + ["nobody"])
    assert json.loads(text) == items + [{"user_id": "nobody", "status": "unknown_user"}]  # fast path: same answer
    reason = items[0]["lifetime_value"]["reasons"][0]
    assert reason["sentence"].endswith("the predicted lifetime value.")
