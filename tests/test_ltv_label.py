"""Hand-worked LTV targets (docs/design.md §4, features/ltv_label.py): own and referral net spend in (T, T+L]."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from helpers_events import con_with

from features.ltv_label import ltv_cutoffs, ltv_labels

T = datetime(2024, 4, 1)


@pytest.fixture
def ltv_cfg(cfg):
    return cfg.model_copy(update={"ltv": cfg.ltv.model_copy(update={"horizon_days": 30})})  # T+L = 2024-05-01


ROWS = [
    # a: an order before T refunded in the horizon (not deducted), two orders in it, one refunded
    ("a", "2024-03-01", "purchase", {"amount": 50.0, "order_id": "a0"}),
    ("a", "2024-04-03", "refund", {"amount": 50.0, "order_id": "a0"}),
    ("a", "2024-04-10", "purchase", {"amount": 100.0, "order_id": "a1"}),
    ("a", "2024-04-12", "purchase", {"amount": 30.0, "order_id": "a2"}),
    ("a", "2024-04-20", "refund", {"amount": 30.0, "order_id": "a2"}),
    ("a", "2024-05-02", "purchase", {"amount": 999.0, "order_id": "a3"}),  # after T+L: never read
    # r refers b before T (b keeps buying) and c inside the horizon; c's friend d counts for c, not r
    ("r", "2024-02-01", "follow"),
    ("b", "2024-02-10 10:00", "purchase", {"amount": 20.0, "order_id": "b0"}),
    ("r", "2024-02-10 10:01", "referral_purchase", {"amount": 20.0, "ref_user_id": "b"}),
    ("b", "2024-04-15", "purchase", {"amount": 40.0, "order_id": "b1"}),
    ("c", "2024-04-20 09:00", "purchase", {"amount": 25.0, "order_id": "c0"}),
    ("r", "2024-04-20 09:01", "referral_purchase", {"amount": 25.0, "ref_user_id": "c"}),
    ("c", "2024-04-25", "purchase", {"amount": 5.0, "order_id": "c1"}),
    ("d", "2024-04-28 08:00", "purchase", {"amount": 7.0, "order_id": "d0"}),
    ("c", "2024-04-28 08:01", "referral_purchase", {"amount": 7.0, "ref_user_id": "d"}),
    ("e", "2024-04-30 12:00", "purchase", {"amount": 9.0}),  # referred only after T+L: not r's value
    ("r", "2024-05-03", "referral_purchase", {"amount": 9.0, "ref_user_id": "e"}),
]


def by_user(df):
    return df.set_index("user_id")


def test_own_and_referral_value_by_hand(ltv_cfg):
    df = by_user(ltv_labels(con_with(ROWS), [T], ltv_cfg))
    assert set(df.index) == {"a", "r", "b"}  # known at T: an event at or before T (c, d, e join later)
    assert df.loc["a", "ltv_own"] == pytest.approx(100.0)  # 100 + 30 - 30; the pre-T order's refund stays out
    assert df.loc["b", "ltv_own"] == pytest.approx(40.0)
    assert df.loc["r", "ltv_own"] == 0.0
    assert df.loc["r", "ltv_referral"] == pytest.approx(40.0 + 25.0 + 5.0)  # b still buying + c from its day on
    assert df.loc["r", "ltv"] == pytest.approx(70.0)
    assert df.loc["a", "spend_last_l"] == 0.0 and df.loc["a", "spend_life"] == pytest.approx(50.0)
    assert df.loc["b", "tenure_days_l"] == pytest.approx((T - datetime(2024, 2, 10, 10)).total_seconds() / 86400)


def test_labels_are_point_in_time(ltv_cfg):
    """Nothing after T+L and nothing at or before T moves a label (beyond the attribution it names)."""
    base = by_user(ltv_labels(con_with(ROWS), [T], ltv_cfg))
    later = ROWS + [
        ("a", "2024-05-01 00:00:01", "purchase", {"amount": 7.0}),
        ("b", "2024-06-01", "refund", {"amount": 40.0, "order_id": "b1"}),
    ]
    after = by_user(ltv_labels(con_with(later), [T], ltv_cfg))
    assert np.allclose(base[["ltv_own", "ltv_referral", "ltv"]], after[["ltv_own", "ltv_referral", "ltv"]])
    before = ROWS + [("a", "2024-03-31 23:59", "purchase", {"amount": 500.0})]
    moved = by_user(ltv_labels(con_with(before), [T], ltv_cfg))
    assert moved.loc["a", "ltv_own"] == base.loc["a", "ltv_own"]
    assert moved.loc["a", "spend_life"] == base.loc["a", "spend_life"] + 500.0  # the baselines' inputs see it
    edge = ROWS + [("a", "2024-05-01 00:00:00", "purchase", {"amount": 3.0})]  # T+L itself is inside (T, T+L]
    assert by_user(ltv_labels(con_with(edge), [T], ltv_cfg)).loc["a", "ltv_own"] == pytest.approx(103.0)


def test_purchases_only_log_has_no_referral_value(ltv_cfg):
    rows = [r for r in ROWS if r[2] != "referral_purchase"]
    df = by_user(ltv_labels(con_with(rows), [T], ltv_cfg))
    assert df["ltv_referral"].isna().all()
    assert (df["ltv"] == df["ltv_own"]).all()


def test_several_cutoffs_and_cutoff_rule(ltv_cfg):
    df = ltv_labels(con_with(ROWS), [datetime(2024, 3, 2), T], ltv_cfg)
    first = by_user(df[df["cutoff"] == datetime(2024, 3, 2)])
    assert first.loc["r", "ltv_referral"] == 0.0  # b bought nothing in (Mar 2, Apr 1]
    cuts = ltv_cutoffs(datetime(2024, 12, 31, 17), datetime(2024, 1, 1), ltv_cfg)
    assert cuts[-1] == datetime(2024, 12, 2)  # (Dec 31 + 1 day) - 30 days
    assert len(cuts) == ltv_cfg.windows.n_cutoffs and cuts == sorted(cuts)
    assert len(ltv_cutoffs(datetime(2024, 3, 31), datetime(2024, 1, 1), ltv_cfg)) == 2  # a month of history each
