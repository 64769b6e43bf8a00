"""/predict_events uses what siyu already knows (issue #15, item 3): stored history + posted events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from serving_world import serving_world

from siyu.contract import LABELS, TIER_RANK


@pytest.fixture(scope="module")
def world():
    return serving_world()


@pytest.fixture(scope="module")
def pred(world):
    from serving.predictor import Predictor

    p = Predictor.load(world.cfg, str(world.scores))
    assert p.history is not None and len(p.history) == len(p.snap.user_ids)
    return p


def _rows(df: pd.DataFrame) -> list[dict]:
    return [
        {k: (None if pd.isna(v) else (v.isoformat() if isinstance(v, pd.Timestamp) else v)) for k, v in r.items()}
        for r in df.to_dict("records")
    ]


def _snapshot_item(pred, uid):
    i = pred.snap.index[uid]
    return pred.snap.tier[i], {lab: pred.snap.proba[lab][i] for lab in LABELS}


def test_posting_a_copy_of_a_stored_event_returns_the_snapshot_scores(world, pred):
    events = pd.read_parquet(world.events)
    events = events[events.ts <= world.asof]
    known = [u for u in pred.snap.user_ids if pred.snap.pops["churn"][pred.snap.index[u]]][:5]
    for uid in known:
        copy = events[events.user_id == uid].tail(1)  # an exact copy of an event the user already has
        (item,), used = pred.predict_events(_rows(copy), world.asof)
        assert used == world.asof
        tier, p = _snapshot_item(pred, uid)
        assert item["tier"] == tier
        for lab in LABELS:
            got = np.nan if item[f"p_{lab}"] is None else item[f"p_{lab}"]
            assert np.array_equal(got, p[lab], equal_nan=True), (uid, lab)  # exactly, not approximately
    # Without the history (what-if) the one event alone scores differently: the test can fail.
    alone = [
        pred.predict_events(_rows(events[events.user_id == u].tail(1)), world.asof, history=False)[0][0] for u in known
    ]
    assert any(a["p_churn"] != _snapshot_item(pred, u)[1]["churn"] for a, u in zip(alone, known))


def test_a_loyal_buyer_who_opens_one_message_stays_a_buyer(world, pred):
    buyers = [u for u, t in zip(pred.snap.user_ids, pred.snap.tier) if TIER_RANK[t] >= TIER_RANK["buyer"]]
    assert buyers
    uid = buyers[0]
    open_one = [{"user_id": uid, "ts": world.asof.isoformat(), "event": "message_open"}]
    (item,), _ = pred.predict_events(open_one, world.asof)
    assert TIER_RANK[item["tier"]] >= TIER_RANK["buyer"]
    (stranger,), _ = pred.predict_events(open_one, world.asof, history=False)
    assert TIER_RANK[stranger["tier"]] < TIER_RANK["buyer"]


def test_unknown_users_score_from_their_posted_events_only(world, pred):
    rows = [{"user_id": "never-seen", "ts": world.asof.isoformat(), "event": "follow"}]
    (a,), _ = pred.predict_events(rows, world.asof)
    (b,), _ = pred.predict_events(rows, world.asof, history=False)
    assert a == b
