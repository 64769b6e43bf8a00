"""Hand-worked tiers (docs/design.md §3): every tier, channels, refunds, same-day orders, members, lapsed buyers."""

from __future__ import annotations

from datetime import datetime

import pytest
from helpers_events import con_with

from features.tiers import tier_table

T = datetime(2024, 4, 1)
OLD = "2023-12-01"  # before the period (T - 90 days = 2024-01-02)


def tiers(rows, cfg, asof=T) -> dict[str, str]:
    df = tier_table(con_with(rows), asof, cfg)
    return dict(zip(df["user_id"], df["tier"]))


def one(rows, cfg, asof=T):
    df = tier_table(con_with(rows), asof, cfg)
    assert len(df) == 1
    return df.iloc[0]


def buy(u, ts, amount=10.0, order=None, **kw):
    return (u, ts, "purchase", {"amount": amount, "order_id": order, **kw})


def test_every_tier(cfg):
    rows = [
        ("c", OLD, "follow"),
        ("e", OLD, "follow"),
        ("e", "2024-03-01", "visit"),
        ("b", OLD, "follow"),
        buy("b", "2024-03-01"),
        ("r", OLD, "follow"),
        buy("r", "2024-03-01"),
        buy("r", "2024-03-05"),
        ("k", OLD, "follow"),
        buy("k", "2024-03-01"),
        buy("k", "2024-03-05"),
        ("k", "2024-03-06", "referral_purchase", {"amount": 30.0, "ref_user_id": "x"}),
        ("l", OLD, "follow"),
        buy("l", "2024-03-01"),
        ("l", "2024-03-02", "unfollow"),
    ]
    assert tiers(rows, cfg) == {"c": "connected", "e": "engaged", "b": "buyer", "r": "repeat", "k": "koc", "l": "lost"}


def test_disconnect_one_of_two_channels_stays_connected(cfg):
    row = one([("u", OLD, "follow"), ("u", OLD, "add_contact"), ("u", "2024-03-01", "unfollow")], cfg)
    assert row["connected"] and row["channels_open"] == 1 and row["tier"] == "connected"


def test_disconnect_all_channels_is_lost(cfg):
    rows = [
        ("u", OLD, "follow"),
        ("u", OLD, "join_group"),
        ("u", "2024-03-01", "unfollow"),
        ("u", "2024-03-02", "leave_group"),
        ("u", "2024-03-03", "visit"),
    ]
    row = one(rows, cfg)
    assert not row["connected"] and row["tier"] == "lost"


def test_same_timestamp_disconnect_wins_and_rejoin_reconnects(cfg):
    assert one([("u", "2024-03-01 10:00", "follow"), ("u", "2024-03-01 10:00", "unfollow")], cfg)["tier"] == "lost"
    rows = [("u", OLD, "join_group"), ("u", "2024-03-01", "leave_group"), ("u", "2024-03-01 12:00", "join_group")]
    assert one(rows, cfg)["tier"] == "connected"


def test_connection_decided_at_the_instant(cfg):
    rows = [("u", OLD, "follow"), ("u", "2024-04-01 00:00:00", "unfollow")]
    assert one(rows, cfg)["tier"] == "lost"  # ts == T is seen
    rows = [("u", OLD, "follow"), ("u", "2024-04-01 00:00:01", "unfollow")]
    assert one(rows, cfg)["tier"] == "connected"  # one second later is not
    assert one(rows, cfg, asof=datetime(2024, 4, 1, 12))["tier"] == "lost"  # a noon cutoff sees it


def test_refund_with_order_id_cancels_the_order(cfg):
    base = [("u", OLD, "follow"), buy("u", "2024-03-01", 10, "o1"), buy("u", "2024-03-05", 10, "o2")]
    assert one(base, cfg)["tier"] == "repeat"
    full = base + [("u", "2024-03-10", "refund", {"amount": 10.0, "order_id": "o1"})]
    assert one(full, cfg)["tier"] == "buyer"
    parts = base + [
        ("u", "2024-03-10", "refund", {"amount": 4.0, "order_id": "o1"}),
        ("u", "2024-03-11", "refund", {"amount": 6.0, "order_id": "o1"}),
    ]
    assert one(parts, cfg)["tier"] == "buyer"
    partial = base + [("u", "2024-03-10", "refund", {"amount": 9.0, "order_id": "o1"})]
    assert one(partial, cfg)["tier"] == "repeat"
    later = base + [("u", "2024-04-02", "refund", {"amount": 10.0, "order_id": "o1"})]
    assert one(later, cfg)["tier"] == "repeat"  # a refund after T cancels nothing at T


def test_refund_without_order_id_cancels_nothing(cfg):
    rows = [
        ("u", OLD, "follow"),
        buy("u", "2024-03-01", 10, None),
        buy("u", "2024-03-05", 10, None),
        ("u", "2024-03-10", "refund", {"amount": 100.0}),
    ]
    assert one(rows, cfg)["tier"] == "repeat"


def test_same_day_orders_count_once(cfg):
    rows = [("u", OLD, "follow"), buy("u", "2024-03-01 09:00", order="a"), buy("u", "2024-03-01 21:00", order="b")]
    assert one(rows, cfg)["tier"] == "buyer"
    rows = [("u", OLD, "follow"), buy("u", "2024-03-01 23:30"), buy("u", "2024-03-02 00:30")]
    assert one(rows, cfg)["tier"] == "repeat"  # two UTC calendar days


def test_members_are_engaged_until_they_leave(cfg):
    rows = [("u", OLD, "follow"), ("u", OLD, "member_join")]
    assert one(rows, cfg)["tier"] == "engaged"
    assert one(rows + [("u", "2024-02-01", "member_leave")], cfg)["tier"] == "connected"
    # membership is not a channel: a member who unfollowed is lost
    assert one(rows + [("u", "2024-02-01", "unfollow")], cfg)["tier"] == "lost"


def test_lapsed_buyer_is_engaged(cfg):
    rows = [("u", OLD, "follow"), buy("u", "2023-11-01")]
    row = one(rows, cfg)
    assert row["tier"] == "engaged" and row["lapsed"]
    refunded = rows + [("u", "2023-11-02", "refund", {"amount": 10.0, "order_id": "o"})]
    assert (
        one([(*r[:3], {**r[3], "order_id": "o"}) if r[2] == "purchase" else r for r in refunded], cfg)["tier"]
        == "connected"
    )


def test_koc_needs_repeat_and_referrals(cfg):
    ref = ("u", "2024-03-06", "referral_purchase", {"amount": 30.0, "ref_user_id": "x"})
    assert one([("u", OLD, "follow"), buy("u", "2024-03-01"), ref], cfg)["tier"] == "buyer"
    old_ref = ("u", "2023-12-20", "referral_purchase", {"amount": 30.0, "ref_user_id": "x"})
    rows = [("u", OLD, "follow"), buy("u", "2024-03-01"), buy("u", "2024-03-02"), old_ref]
    assert one(rows, cfg)["tier"] == "repeat"  # referral outside the period
    two = cfg.model_copy(update={"tiers": cfg.tiers.model_copy(update={"koc_min_referrals": 2})})
    rows = [("u", OLD, "follow"), buy("u", "2024-03-01"), buy("u", "2024-03-02"), ref]
    assert one(rows, cfg)["tier"] == "koc" and one(rows, two)["tier"] == "repeat"


def test_engaged_min_actions(cfg):
    three = cfg.model_copy(update={"tiers": cfg.tiers.model_copy(update={"engaged_min_actions": 3})})
    rows = [("u", OLD, "follow"), ("u", "2024-03-01", "like"), ("u", "2024-03-02", "click")]
    assert one(rows, cfg)["tier"] == "engaged" and one(rows, three)["tier"] == "connected"
    rows += [("u", "2024-03-03", "message_sent")]  # a push is not the user's action
    assert one(rows, three)["tier"] == "connected"


def test_implicit_connection_without_connection_events(cfg):
    rows = [
        buy("p", "2024-03-01"),
        ("q", "2024-03-01", "visit"),
        ("s", "2024-03-01", "message_sent"),
        ("z", OLD, "follow"),
        ("z", "2024-01-01", "unfollow"),
        buy("z", "2024-03-01"),
    ]
    assert tiers(rows, cfg) == {"p": "buyer", "q": "engaged", "s": "lost", "z": "lost"}


@pytest.mark.parametrize("when,expected", [("2024-01-02 00:00:00", "engaged"), ("2024-01-02 00:00:01", "buyer")])
def test_period_boundary(cfg, when, expected):
    # (T - 90d, T]: a purchase exactly at T - 90 days is before the period (a lapsed buyer)
    assert one([("u", OLD, "follow"), buy("u", when)], cfg)["tier"] == expected
