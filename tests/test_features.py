"""Features (docs/design.md §5): registry, hand-worked values, point-in-time, absent families, one-user parity."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
from helpers_events import con_with, frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.catalog import FEATURES, feature_names
from features.compute import feature_table, present_families
from features.labels import label_table
from features.tiers import tier_table
from siyu.contract import EVENTS, TIER_RANK
from training.table import training_cutoffs, training_table, validation_cutoff

T = datetime(2024, 4, 1)
START = datetime(2023, 10, 1)


def test_registry_declares_each_feature_once():
    names = feature_names()
    assert len(names) >= 60 and len(set(names)) == len(names)
    fams = {f.family for f in FEATURES}
    assert {"recency", "frequency", "monetary", "engagement", "trust", "advocacy", "ladder"} <= fams
    for f in FEATURES:
        assert f.meaning and f.unit and f.expr
        assert all(lbl in ("churn", "promotion", "koc") and s in (-1, 1) for lbl, s in f.monotone)
    mono = {f.name: dict(f.monotone) for f in FEATURES}
    assert mono["n_complaint_90d"]["churn"] == 1 and mono["n_referral_90d"]["koc"] == 1


def rich_log() -> list[tuple]:
    push = lambda ts: ("u", ts, "message_sent")  # noqa: E731
    return [
        ("u", "2024-01-15", "follow"),
        ("u", "2024-01-15", "member_join"),
        push("2024-03-10"),
        push("2024-03-15"),
        push("2024-03-20"),
        push("2024-03-25"),
        ("u", "2024-03-11", "message_open"),
        ("u", "2024-03-21", "message_reply"),
        ("u", "2024-03-05", "purchase", {"amount": 20.0, "coupon": True, "order_id": "o1"}),
        ("u", "2024-03-28", "purchase", {"amount": 40.0, "coupon": False, "order_id": "o2"}),
        ("u", "2024-03-29", "refund", {"amount": 40.0, "order_id": "o2"}),
        ("u", "2024-03-30", "review", {"rating": 4}),
        ("u", "2024-03-30 08:00", "review", {"rating": 2}),
        ("u", "2024-03-31", "referral_purchase", {"amount": 15.0, "ref_user_id": "x"}),
        ("u", "2024-03-31", "complaint"),
        ("v", "2023-10-05", "purchase", {"amount": 7.0}),
    ]


def test_hand_worked_values(cfg):
    df = feature_table(con_with(rich_log()), T, cfg).set_index("user_id")
    u = df.loc["u"]
    assert list(df.columns) == ["asof", *feature_names()]
    expect = {
        "n_purchase_30d": 2,
        "purchase_amount_30d": 60,
        "days_since_purchase": 4,
        "n_refund_90d": 1,
        "refund_rate_90d": 0.5,
        "coupon_share_90d": 0.5,
        "mean_rating_life": 3,
        "n_review_life": 2,
        "referred_revenue_90d": 15,
        "n_referral_7d": 1,
        "open_rate_30d": 0.25,
        "responsiveness_30d": 0.5,
        "fatigue_30d": 4 / 3,
        "open_rate_life": 0.25,
        "click_rate_life": 0,
        "responsiveness_life": 0.5,
        "fatigue_life": 4 / 3,
        "purchase_rate_life": 2 / 78,  # per day known, the first event's day included
        "visit_rate_life": 0,
        "coupon_claim_rate_life": 0,
        "n_complaint_90d": 1,
        "is_member": 1,
        "channels_open": 1,
        "days_since_join": 77,
        "tenure_days": 77,
        "n_exposure_30d": 4,
        "n_advocacy_7d": 3,
        "period_purchase_days": 1,
    }
    for k, v in expect.items():
        assert u[k] == v, k
    # refunded o2 leaves one purchase day: buyer now and at T-7 (o1), engaged at T-30, unknown at T-90
    assert u["tier"] == TIER_RANK["buyer"] and pd.isna(u["prev_tier"]) and u["days_in_tier"] == 7
    v = df.loc["v"]
    assert v["tier"] == TIER_RANK["engaged"] and v["prev_tier"] == TIER_RANK["buyer"] and v["tier_delta"] == -1
    assert v["days_in_tier"] == 30 and v["lapsed_buyer"] == 1 and v["n_purchase_90d"] == 0


def test_dtypes(cfg):
    df = feature_table(con_with(rich_log()), T, cfg)
    assert str(df["tier"].dtype) == "Int64" and str(df["prev_tier"].dtype) == "Int64"
    others = [c for c in feature_names() if c not in ("tier", "prev_tier")]
    assert (df[others].dtypes == "float64").all()


def test_purchases_only_log_gives_nan_for_absent_families(cfg):
    rows = [
        ("a", "2024-03-01", "purchase", {"amount": 5.0}),
        ("a", "2024-03-09", "purchase", {"amount": 5.0}),
        ("b", "2023-12-01", "purchase", {"amount": 5.0}),
    ]
    df = feature_table(con_with(rows), T, cfg).set_index("user_id")
    by_src = {f.name: f.sources for f in FEATURES}
    absent = [n for n, s in by_src.items() if s and not set(s) <= {"commerce"}]
    assert len(absent) > 30 and df[absent].isna().all().all()
    kept = [
        "n_commerce_90d",
        "n_purchase_life",
        "purchase_amount_life",
        "n_refund_90d",
        "active_days_90d",
        "tenure_days",
        "tier",
        "period_purchase_days",
        "lapsed_buyer",
        "days_in_tier",
    ]
    assert df[kept].notna().all().all() and df.loc["b", "n_refund_90d"] == 0  # present family: zero is real
    assert df.loc["a", "tier"] == TIER_RANK["repeat"] and df.loc["b", "tier"] == TIER_RANK["engaged"]


def test_one_user_in_memory_log_matches_batch(cfg):
    con = con_with(rich_log())
    batch = feature_table(con, T, cfg)
    fams = present_families(con)
    for user in ("u", "v"):
        one = frame([r for r in rich_log() if r[0] == user])
        single = feature_table(con_with(one, "one_user"), T, cfg, events="one_user", families=fams)
        pd.testing.assert_frame_equal(single, batch[batch.user_id == user].reset_index(drop=True))


def test_training_table_equals_single_cutoff_tables(cfg):
    con = con_with(random_log(40, seed=3))
    cutoffs = training_cutoffs(con, cfg)
    assert cutoffs[-1] == validation_cutoff(con, cfg) and len(cutoffs) == cfg.windows.n_cutoffs
    assert all(b - a == timedelta(days=cfg.windows.cutoff_spacing_days) for a, b in zip(cutoffs, cutoffs[1:]))
    tt = training_table(con, cutoffs, cfg)
    for c in cutoffs[-3:]:
        sub = tt[tt.cutoff == c].reset_index(drop=True)
        f, lab = feature_table(con, c, cfg), label_table(con, c, cfg)
        pd.testing.assert_frame_equal(sub[feature_names()], f[feature_names()])
        pd.testing.assert_frame_equal(sub[lab.columns[3:]], lab[lab.columns[3:]])


def test_rows_come_sorted_by_user_id_in_code_point_order(cfg):
    # Non-ASCII ids: the features are sorted in Python, the labels by the engine; the training
    # table refuses rows that do not line up, so both orders must agree.
    log = random_log(30, seed=5)
    names = ["用户", "é", "Z", "a", "z", "Ä", "ü", "_", "0"]
    log["user_id"] = [names[int(u[1:]) % len(names)] + u for u in log["user_id"]]
    con = con_with(log)
    one = feature_table(con, T, cfg)
    assert one["user_id"].tolist() == sorted(one["user_id"]) and len(one) > 20
    tt = training_table(con, training_cutoffs(con, cfg), cfg)
    for _, part in tt.groupby("cutoff"):
        assert part["user_id"].tolist() == sorted(part["user_id"])


def test_engine_columns_become_floats_with_nan_in_the_given_order():
    import numpy as np

    from features.facts import floats

    order = np.array([2, 0, 1])
    masked = np.ma.masked_array([1, 2, 3], mask=[False, True, False])
    obj = np.array([1.5, None, 3], dtype=object)
    plain = np.array([1, 2, 3], dtype="int32")
    np.testing.assert_array_equal(floats(masked, order), [3.0, 1.0, np.nan])
    np.testing.assert_array_equal(floats(masked), [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(floats(obj, order), [3.0, 1.5, np.nan])
    out = floats(plain)
    assert out.dtype == "float64" and out.tolist() == [1.0, 2.0, 3.0]
    assert masked.tolist() == [1, None, 3]  # the input is left as it was


def random_log(n_users: int, seed: int) -> pd.DataFrame:
    import numpy as np

    rng = np.random.default_rng(seed)
    n = n_users * 25
    ev = rng.choice(EVENTS, n)
    df = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in rng.integers(0, n_users, n)],
            "ts": [START + timedelta(seconds=int(s)) for s in rng.integers(0, 250 * 86400, n)],
            "event": ev,
            "amount": np.where(np.isin(ev, ["purchase", "refund", "referral_purchase"]), rng.integers(1, 50, n), None),
            "coupon": np.where(ev == "purchase", rng.random(n) < 0.3, None),
            "rating": np.where(ev == "review", rng.integers(1, 6, n), None),
            "order_id": np.where(np.isin(ev, ["purchase", "refund"]), [f"o{i}" for i in rng.integers(0, 30, n)], None),
        }
    )
    return frame(df.to_dict("records"))


_event = st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.integers(0, 60 * 24 * 200),
    st.sampled_from(EVENTS),
    st.integers(1, 30),
    st.booleans(),
    st.sampled_from(["o1", "o2", None]),
)


def _rows(items, base: datetime):
    return [
        {
            "user_id": u,
            "ts": base + timedelta(minutes=m),
            "event": e,
            "amount": float(a) if e in ("purchase", "refund", "referral_purchase") else None,
            "coupon": c if e == "purchase" else None,
            "rating": (a % 5) + 1 if e == "review" else None,
            "order_id": o if e in ("purchase", "refund") else None,
        }
        for u, m, e, a, c, o in items
    ]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    before=st.lists(_event, min_size=1, max_size=25),
    after=st.lists(_event, min_size=1, max_size=15),
    cut=st.integers(0, 60 * 24 * 200),
)
def test_events_after_the_cutoff_change_nothing(cfg, before, after, cut):
    cutoff = START + timedelta(minutes=cut)
    past = [r for r in _rows(before, START) if r["ts"] <= cutoff]
    future = [{**r, "ts": cutoff + timedelta(minutes=1) + (r["ts"] - START)} for r in _rows(after, START)]
    if not past:
        past = [{**_rows(before, START)[0], "ts": cutoff}]
    c1, c2 = con_with(frame(past)), con_with(frame(past + future))
    pd.testing.assert_frame_equal(feature_table(c1, cutoff, cfg), feature_table(c2, cutoff, cfg))
    pd.testing.assert_frame_equal(tier_table(c1, cutoff, cfg), tier_table(c2, cutoff, cfg))


def test_purchase_rhythm_by_hand_point_in_time_and_missing(cfg):
    buy = lambda u, ts: (u, ts, "purchase", {"amount": 5.0})  # noqa: E731
    log = [
        *(buy("u", ts) for ts in ("2024-01-01", "2024-01-11", "2024-01-11", "2024-01-31", "2024-03-02")),
        buy("v", "2024-02-01"),
        buy("v", "2024-02-05"),
        ("w", "2024-02-01", "visit"),
    ]
    df = feature_table(con_with(log), datetime(2024, 3, 1), cfg).set_index("user_id")
    u, v, w = df.loc["u"], df.loc["v"], df.loc["w"]
    # u: purchase days Jan 1, 11, 31 (two on the 11th count once; Mar 2 is after the cutoff): gaps 10, 20
    assert (u.purchase_gap_mean, round(u.purchase_gap_sd, 4)) == (15.0, round(50**0.5, 4))
    assert (u.repeat_purchase_days, u.days_since_first_purchase, u.purchase_overdue_ratio) == (2, 60, 2.0)
    assert round(u.purchase_overdue_z, 4) == round(15 / 50**0.5, 4)
    # v: one gap -> a mean but no spread; w never bought -> missing, not zero
    assert v.purchase_gap_mean == 4.0 and pd.isna(v.purchase_gap_sd) and v.purchase_overdue_ratio == 25 / 4
    assert pd.isna(w.purchase_gap_mean) and pd.isna(w.purchase_overdue_ratio) and pd.isna(w.days_since_first_purchase)
    assert w.repeat_purchase_days == 0
    # lookback: with 40 days only Jan 31 is in (Jan 21, Mar 1] for u -> one purchase day, no gap
    short = cfg.model_copy(update={"windows": cfg.windows.model_copy(update={"rhythm_lookback_days": 40})})
    s = feature_table(con_with(log), datetime(2024, 3, 1), short).set_index("user_id").loc["u"]
    assert pd.isna(s.purchase_gap_mean) and s.repeat_purchase_days == 0 and s.days_since_first_purchase == 30


def test_auto_windows_rule_span_and_scoring_side():
    from features.catalog import features_of
    from features.windows import auto_windows, for_models, windows_of, with_windows
    from siyu.config import load_config
    from siyu.errors import SiyuError

    assert auto_windows(90, 30) == (7, 30, 90)  # the hand-picked default
    assert auto_windows(90, 90) == (30, 90, 180, 365)  # slow buyers: long windows, no 7-day one
    assert auto_windows(30, 30) == (7, 30, 60, 90)  # a monthly subscription
    assert auto_windows(90, 90, span_days=275) == (30, 90, 180)  # longer than the log: dropped
    assert auto_windows(90, 90, span_days=10) == (30,)
    cfg = load_config()
    auto = cfg.model_copy(update={"windows": cfg.windows.model_copy(update={"feature_windows": "auto"})})
    try:
        features_of(auto)
        raise AssertionError("auto windows must be resolved before the features are declared")
    except SiyuError:
        pass
    names = [f.name for f in features_of(with_windows(cfg, (30, 90, 180)))]
    assert windows_of(names) == (30, 90, 180) and "n_purchase_7d" not in names

    class M:
        feature_names = names

    assert for_models(auto, {"churn": M()}).windows.feature_windows == (30, 90, 180)
    assert for_models(cfg, {"churn": M()}) is cfg  # explicit windows stay as configured
    from features.windows import log_span_days, resolve

    con = con_with([("u", "2024-01-01", "visit"), ("u", "2024-06-29 10:00", "visit")])
    assert log_span_days(con, 30) == 151  # Jan 1 .. Jun 30 (the day after the last event) - 30 days
    slow = auto.model_copy(update={"windows": auto.windows.model_copy(update={"horizon_days": 90})})
    assert resolve(slow, con).windows.feature_windows == (30, 90)  # 180 and 365 exceed the 91 days of history
    assert resolve(cfg, con) is cfg


def test_compiled_registry_is_built_once_per_config(cfg):
    """compiled_for caches by Config object: the same config reuses it, another config compiles its own."""
    from features.compute import compiled_for

    assert compiled_for(cfg) is compiled_for(cfg)
    other = cfg.model_copy(update={"windows": cfg.windows.model_copy(update={"feature_windows": (7, 14)})})
    c = compiled_for(other)
    assert c is not compiled_for(cfg) and c.lookbacks == [7, 14]


def test_in_holdout_reads_the_control_group_open_at_the_cutoff(cfg):
    """in_holdout: 1 inside an open control group (markers at or before T), 0 outside or after it."""
    d = lambda days: (T - timedelta(days=days)).isoformat()  # noqa: E731
    rows = [(u, d(60), "follow") for u in "abcde"]
    rows += [("a", d(0), "holdout_start")]  # starts at the cutoff instant: known at T
    rows += [("b", d(40), "holdout_start"), ("b", d(10), "holdout_end")]  # closed before T
    rows += [("c", d(30), "holdout_start"), ("c", d(0), "holdout_end"), ("c", d(0), "holdout_start")]  # next one
    rows += [("d", (T + timedelta(hours=1)).isoformat(), "holdout_start")]  # after T: unseen
    df = feature_table(con_with(rows), T, cfg).set_index("user_id")["in_holdout"]
    assert df.to_dict() == {"a": 1, "b": 0, "c": 1, "d": 0, "e": 0}
