"""Hand-worked labels (docs/design.md §4): every tier transition, churn modes, rejoin, the (T, T+H] window."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest
from helpers_events import con_with

from features.labels import LABEL_COLUMNS, label_table

T = datetime(2024, 4, 1)  # T+H = 2024-05-01; period at T starts 2024-01-02, at T+H 2024-02-01
OLD = "2023-12-01"
AT_T = {  # events before T (aged out of the period by T+H) giving each tier at T
    "connected": [],
    "engaged": [("visit", "2024-01-10")],
    "buyer": [("purchase", "2024-01-10")],
    "repeat": [("purchase", "2024-01-10"), ("purchase", "2024-01-11")],
    "koc": [("purchase", "2024-01-10"), ("purchase", "2024-01-11"), ("referral_purchase", "2024-01-12")],
    "lost": [("unfollow", "2024-01-10")],
}
IN_H = {  # events in (T, T+H]
    "none": [],
    "engaged": [("visit", "2024-04-10")],
    "buyer": [("purchase", "2024-04-10")],
    "repeat": [("purchase", "2024-04-10"), ("purchase", "2024-04-11")],
    "koc": [("purchase", "2024-04-10"), ("purchase", "2024-04-11"), ("referral_purchase", "2024-04-12")],
    "lost": [("unfollow", "2024-04-10")],
    "back": [("follow", "2024-04-10")],
}
# (tier at T, events in H) -> tier at T+H
TRANSITIONS = {
    ("connected", "engaged"): "engaged",
    ("connected", "buyer"): "buyer",
    ("connected", "repeat"): "repeat",
    ("connected", "koc"): "koc",
    ("connected", "none"): "connected",
    ("connected", "lost"): "lost",
    ("engaged", "buyer"): "buyer",
    ("engaged", "repeat"): "repeat",
    ("engaged", "koc"): "koc",
    ("engaged", "none"): "connected",
    ("engaged", "engaged"): "engaged",
    ("buyer", "repeat"): "repeat",
    ("buyer", "koc"): "koc",
    ("buyer", "none"): "engaged",
    ("buyer", "buyer"): "buyer",
    ("repeat", "koc"): "koc",
    ("repeat", "none"): "engaged",
    ("repeat", "buyer"): "buyer",
    ("repeat", "lost"): "lost",
    ("koc", "repeat"): "repeat",
    ("koc", "koc"): "koc",
    ("koc", "none"): "engaged",
    ("lost", "back"): "connected",
    ("lost", "none"): "lost",
}


def rows_for(tier_t: str, h: str, u: str = "u") -> list[tuple]:
    out = [(u, OLD, "follow")]
    for ev, ts in AT_T[tier_t] + IN_H[h]:
        extra = {"amount": 10.0} if ev in ("purchase", "referral_purchase") else {}
        out.append((u, ts, ev, extra))
    return out


def labels(rows, cfg, cutoff=T) -> pd.DataFrame:
    return label_table(con_with(rows), cutoff, cfg)


@pytest.mark.parametrize("tier_t,h", sorted(TRANSITIONS))
def test_every_transition(cfg, tier_t, h):
    row = labels(rows_for(tier_t, h), cfg).iloc[0]
    nxt = TRANSITIONS[(tier_t, h)]
    assert (row["tier"], row["tier_next"]) == (tier_t, nxt)
    order = ["lost", "connected", "engaged", "buyer", "repeat", "koc"]
    in_pop = tier_t not in ("lost", "koc")
    assert row["in_promotion_pop"] == in_pop and row["in_koc_pop"] == in_pop
    if in_pop:
        assert row["promotion"] == int(order.index(nxt) > order.index(tier_t))
        assert row["koc"] == int(nxt == "koc")
    else:
        assert pd.isna(row["promotion"]) and pd.isna(row["koc"])


def test_columns_and_dtypes(cfg):
    df = labels(rows_for("buyer", "none") + rows_for("lost", "none", "v"), cfg)
    assert list(df.columns) == LABEL_COLUMNS
    assert str(df["churn"].dtype) == "Int8" and df["in_churn_pop"].dtype == bool
    assert df.loc[df.user_id == "v", "churn"].isna().all()  # lost at T: outside every population


@pytest.mark.parametrize(
    "mode,h,expected",
    [
        ("either", "none", 1),
        ("either", "lost", 1),
        ("either", "engaged", 0),
        ("inactive", "none", 1),
        ("inactive", "lost", 0),
        ("inactive", "engaged", 0),
        ("disconnect", "none", 0),
        ("disconnect", "lost", 1),
        ("disconnect", "engaged", 0),
    ],
)
def test_churn_modes(cfg, mode, h, expected):
    c = cfg.model_copy(update={"labels": cfg.labels.model_copy(update={"churn_mode": mode})})
    row = labels(rows_for("buyer", h), c).iloc[0]
    assert row["in_churn_pop"] and row["churn"] == expected


def test_churn_population_needs_activity_in_the_period(cfg):
    row = labels(rows_for("connected", "none"), cfg).iloc[0]  # only a follow before the period
    assert not row["in_churn_pop"] and pd.isna(row["churn"])


def test_leave_and_rejoin_within_horizon_is_not_churn(cfg):
    rows = rows_for("buyer", "none") + [("u", "2024-04-05", "unfollow"), ("u", "2024-04-20", "follow")]
    assert labels(rows, cfg).iloc[0]["churn"] == 0


def test_disconnect_one_of_two_channels_is_not_churn(cfg):
    rows = rows_for("buyer", "none") + [("u", OLD, "add_contact"), ("u", "2024-04-05", "unfollow")]
    assert labels(rows, cfg).iloc[0]["churn"] == 0
    rows += [("u", "2024-04-06", "delete_contact")]
    assert labels(rows, cfg).iloc[0]["churn"] == 1


def test_labels_see_only_the_horizon(cfg):
    base = rows_for("buyer", "none")
    assert labels(base, cfg).iloc[0]["churn"] == 1
    after = base + [("u", "2024-05-01 00:00:01", "visit"), ("u", "2024-06-01", "purchase", {"amount": 5.0})]
    pd.testing.assert_frame_equal(labels(base, cfg), labels(after, cfg))
    edge = base + [("u", "2024-05-01 00:00:00", "visit")]  # ts == T+H is inside (T, T+H]
    assert labels(edge, cfg).iloc[0]["churn"] == 0
    at_t = base + [("u", "2024-04-01 00:00:00", "visit")]  # ts == T is not in the horizon
    assert labels(at_t, cfg).iloc[0]["churn"] == 1


def test_users_are_those_known_at_the_cutoff(cfg):
    rows = rows_for("buyer", "none") + [("new", "2024-04-10", "follow")]
    assert labels(rows, cfg)["user_id"].tolist() == ["u"]


def test_purchases_only_log(cfg):
    rows = [
        ("a", "2024-03-01", "purchase", {"amount": 5.0}),
        ("a", "2024-04-10", "purchase", {"amount": 5.0}),
        ("b", "2023-12-01", "purchase", {"amount": 5.0}),
        ("c", "2024-03-01", "purchase", {"amount": 5.0}),
        ("c", "2024-03-09", "purchase", {"amount": 5.0}),
    ]
    df = labels(rows, cfg).set_index("user_id")
    assert df["tier"].to_dict() == {"a": "buyer", "b": "engaged", "c": "repeat"}
    assert df.loc["a", "tier_next"] == "repeat" and df.loc["a", "promotion"] == 1
    assert df.loc["c", "churn"] == 1 and df.loc["a", "churn"] == 0  # inactivity is the only churn signal
    assert (df["koc"].dropna() == 0).all()  # KOC impossible without referral events


def test_labels_match_the_simulators_bookkeeping(cfg, tmp_path):
    """Two independent implementations of docs/design.md §3-§4: the simulator's state and this SQL."""
    import duckdb

    from simulation.simulator import simulate_world

    simulate_world(cfg, users=800, days=200, out_dir=tmp_path, replicas=1)
    oracle = pd.read_parquet(tmp_path / "oracle.parquet")
    con = duckdb.connect()
    con.execute(f"CREATE TABLE events AS SELECT * FROM read_parquet('{tmp_path / 'events.parquet'}')")
    mine = label_table(con, oracle["cutoff"].iloc[0].to_pydatetime(), cfg)
    for lbl in ("churn", "promotion", "koc"):
        theirs = oracle[oracle["label"] == lbl][["user_id", "y"]].astype({"user_id": str})
        pop = mine[mine[lbl].notna()][["user_id", lbl]]
        both = theirs.merge(pop, on="user_id", how="outer")
        assert len(both) == len(theirs) == len(pop) > 100, lbl
        assert (both["y"] == both[lbl].astype(int)).all(), lbl
