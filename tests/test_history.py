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


def test_a_holdout_end_may_close_a_holdout_start_in_the_stored_history(world, pred):
    """The stored history is the validation's context, as the full log is in batch (history: false: the posted rows)."""
    from serving.predictor import EventsRejected

    events = pd.read_parquet(world.events)
    marks = events[events.event.isin(["holdout_start", "holdout_end"]) & (events.ts <= world.asof)]
    last = marks.sort_values(["user_id", "ts"]).groupby("user_id").event.last()
    open_ = [u for u in last[last == "holdout_start"].index if u in pred.snap.index]
    assert open_, "the serving world has a user inside a holdout at its asof"
    end = [{"user_id": open_[0], "ts": world.asof.isoformat(), "event": "holdout_end"}]
    (item,), _ = pred.predict_events(end, world.asof)
    assert item["status"] == "ok"
    with pytest.raises(EventsRejected, match="holdout_end without holdout_start"):
        pred.predict_events(end, world.asof, history=False)
    # A user with no open holdout is still refused, with the batch validator's message.
    closed = [u for u in last[last == "holdout_end"].index if u in pred.snap.index]
    with pytest.raises(EventsRejected, match=r"events\[0\]\.event: holdout_end without holdout_start"):
        pred.predict_events([{**end[0], "user_id": closed[0]}], world.asof)


def test_concurrent_requests_share_one_database_and_answer_as_alone(world, pred):
    """A session per request: requests from several threads get the answers they get one by one."""
    from concurrent.futures import ThreadPoolExecutor

    users = pred.snap.user_ids[:6]
    reqs = [[{"user_id": u, "ts": world.asof.isoformat(), "event": "visit"}] for u in users]
    alone = [pred.predict_events(r, world.asof)[0] for r in reqs]
    with ThreadPoolExecutor(3) as ex:
        together = list(ex.map(lambda r: pred.predict_events(r, world.asof)[0], reqs * 2))
    assert together == alone * 2
    assert pred._db is not None  # one database, created once
