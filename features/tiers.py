"""Tiers as of an instant (docs/design.md §3), for one instant or many at once.

connected(T): per channel the latest connect/disconnect at or before T
decides (a close wins a tie); a user with no channel events up to T but with
a user-side event is connected implicitly. Purchases count distinct brand-local
calendar days in (T-P, T] with an order not cancelled by refunds up to T.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from features.facts import (
    Facts,
    Runner,
    build_facts,
    codes_list,
    instants_table,
    pairs_table,
    split_instant,
)
from siyu.config import Config
from siyu.contract import ACTIONS, BRAND_EVENTS, TIER_RANK

TIER_COLUMNS = [
    "user_id",
    "d",
    "tier",
    "tier_rank",
    "connected",
    "member",
    "channels_open",
    "purchase_days",
    "lapsed",
    "n_actions",
    "n_referrals",
    "n_user_events",
]


def tier_sql(facts: Facts, days: list[int], cfg: Config) -> str:
    """SQL for the tier of every known user at every day number in `days` (columns TIER_COLUMNS).

    Args:
        facts: fact tables built for (at least) these instants.
        days: bucket day numbers of the instants.
        cfg: config (period, koc_min_referrals, engaged_min_actions).
    """
    P = cfg.windows.period_days
    inst = instants_table(days)
    rank = " ".join(f"WHEN '{t}' THEN {r}" for t, r in TIER_RANK.items())
    # `act` reads user-side facts only: brand messages are about a third of the facts, and each
    # fact joins every tier day whose period covers it, yet they count in none of its sums.
    return f"""
    WITH known AS (
        SELECT u.user_id, i.d, CASE WHEN u.first_user_b <= i.d THEN 1 ELSE 0 END AS any_user
        FROM {facts.users} u JOIN {inst} i ON u.first_b <= i.d),
    st AS (
        SELECT s.user_id, i.d,
               max(CASE WHEN s.chan <> 'member' THEN 1 ELSE 0 END) AS has_chan,
               sum(CASE WHEN s.chan <> 'member' AND s.is_open = 1 THEN 1 ELSE 0 END) AS channels_open,
               max(CASE WHEN s.chan = 'member' AND s.is_open = 1 THEN 1 ELSE 0 END) AS member
        FROM {facts.states} s JOIN {inst} i ON s.b <= i.d AND (s.b_next IS NULL OR s.b_next > i.d)
        GROUP BY s.user_id, i.d),
    act AS (
        SELECT a.user_id, i.d,
               sum(CASE WHEN a.ev IN {codes_list(ACTIONS)} THEN a.n END) AS n_actions,
               sum(CASE WHEN a.ev IN {codes_list(["referral_purchase"])} THEN a.n END) AS n_referrals,
               sum(a.n) AS n_user_events
        FROM {facts.iv} a JOIN {pairs_table(facts.bounds, days, P)} i ON a.e = i.e
        WHERE a.ev NOT IN {codes_list(BRAND_EVENTS)}
        GROUP BY a.user_id, i.d),
    pur AS (
        SELECT o.user_id, i.d,
               count(DISTINCT CASE WHEN o.b > i.d - {P} THEN o.cday END) AS purchase_days,
               max(CASE WHEN o.b <= i.d - {P} THEN 1 ELSE 0 END) AS lapsed
        FROM {facts.orders} o JOIN {inst} i ON o.b <= i.d AND (o.cancel_b IS NULL OR o.cancel_b > i.d)
        GROUP BY o.user_id, i.d),
    base AS (
        SELECT k.user_id, k.d,
               CASE WHEN coalesce(st.channels_open, 0) > 0
                      OR (coalesce(st.has_chan, 0) = 0 AND k.any_user = 1) THEN 1 ELSE 0 END AS connected,
               coalesce(st.member, 0) AS member, coalesce(st.channels_open, 0) AS channels_open,
               coalesce(pur.purchase_days, 0) AS purchase_days, coalesce(pur.lapsed, 0) AS lapsed,
               coalesce(act.n_actions, 0) AS n_actions, coalesce(act.n_referrals, 0) AS n_referrals,
               coalesce(act.n_user_events, 0) AS n_user_events
        FROM known k
        LEFT JOIN st ON st.user_id = k.user_id AND st.d = k.d
        LEFT JOIN act ON act.user_id = k.user_id AND act.d = k.d
        LEFT JOIN pur ON pur.user_id = k.user_id AND pur.d = k.d),
    tiered AS (
        SELECT *, CASE
            WHEN connected = 0 THEN 'lost'
            WHEN purchase_days >= 2 AND n_referrals >= {cfg.tiers.koc_min_referrals} THEN 'koc'
            WHEN purchase_days >= 2 THEN 'repeat'
            WHEN purchase_days >= 1 THEN 'buyer'
            WHEN member = 1 OR lapsed = 1 OR n_actions >= {cfg.tiers.engaged_min_actions} THEN 'engaged'
            ELSE 'connected' END AS tier
        FROM base)
    SELECT user_id, d, tier, CASE tier {rank} END AS tier_rank, connected, member, channels_open,
           purchase_days, lapsed, n_actions, n_referrals, n_user_events
    FROM tiered"""


def tier_bounds(days: list[int], cfg: Config) -> set[int]:
    """Interval boundaries tier_sql needs for these days: d and d - P."""
    return {x for d in days for x in (d, d - cfg.windows.period_days)}


def tier_table(con, asof: datetime, cfg: Config, events: str = "events") -> pd.DataFrame:
    """Tier of every user with an event at or before `asof`.

    Args:
        con: DuckDB connection holding the canonical events table.
        asof: the instant T (naive brand-local wall time; a date means 00:00).
        cfg: config.
        events: name of the events table.

    Returns:
        DataFrame user_id, asof, tier, tier_rank, connected (bool), member (bool), channels_open,
        purchase_days, lapsed (bool), n_actions, n_referrals, n_user_events, sorted by user_id.
    """
    return tiers_on(Runner(con), asof, cfg, events)


def tiers_on(run: Runner, asof: datetime, cfg: Config, events: str = "events") -> pd.DataFrame:
    """tier_table on any engine runner."""
    day = split_instant(asof)[0]
    facts = build_facts(run, events, [asof], tier_bounds([day], cfg))
    try:
        df = run.df(f"SELECT * FROM ({tier_sql(facts, [day], cfg)}) t ORDER BY user_id")
    finally:
        run.drop(facts.names())
    return tidy_tiers(df, asof)


def tidy_tiers(df: pd.DataFrame, asof: datetime) -> pd.DataFrame:
    """Engine output -> stable dtypes (so DuckDB and Spark frames compare equal)."""
    df = df.drop(columns=["d"]).reset_index(drop=True)
    df.insert(1, "asof", pd.Timestamp(asof))
    for c in ("connected", "member", "lapsed"):
        df[c] = df[c].astype(bool)
    for c in ("tier_rank", "channels_open", "purchase_days", "n_actions", "n_referrals", "n_user_events"):
        df[c] = df[c].astype("int64")
    df["tier"] = df["tier"].astype(str)
    return df
