"""Lifetime-value targets at a cutoff T over the LTV horizon L (docs/design.md §4).

`ltv_own`: the user's net spend in (T, T+L]: purchases minus refunds, where a refund of an order
placed at or before T is not deducted (that money belongs to the earlier period).
`ltv_referral`: the net spend in (T, T+L], by the same rule, of the buyers the user referred. A
referred buyer belongs to the referrer named by the earliest `referral_purchase` row carrying
their `ref_user_id` (first touch, one referrer per buyer); from the local calendar day of that
row on, every order of theirs counts for the referrer, as long as the referral happened by T+L
(referrals made in the horizon, and earlier ones still buying). `ltv` = the sum.
Events after T+L are never read; nothing of (T, T+L] reaches the features (they see ts <= T).
A log without advocacy events has no way to see referrals: `ltv_referral` is missing there.

Also the baselines' inputs at T (events at or before T only): net spend in (T-L, T] and over
the whole history, and the days since the user's first event.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from siyu.config import Config
from siyu.errors import SiyuError

LTV_COLUMNS = ["user_id", "cutoff", "ltv_own", "ltv_referral", "ltv", "spend_last_l", "spend_life", "tenure_days_l"]


def ltv_cutoffs(last_ts: datetime, first_ts: datetime, cfg: Config) -> list[datetime]:
    """The LTV training cutoffs, oldest first; the last validates: (date(last ts) + 1 day) - L, at midnight.

    Stepped back by `windows.cutoff_spacing_days` up to `windows.n_cutoffs` of them, keeping only those
    with at least one spacing of history before them.
    """
    if last_ts is None:
        raise SiyuError("the event log is empty: no LTV cutoff to compute")
    w, L = cfg.windows, cfg.ltv.horizon_days
    t_val = datetime(last_ts.year, last_ts.month, last_ts.day) + timedelta(days=1) - timedelta(days=L)
    cuts = [t_val - timedelta(days=k * w.cutoff_spacing_days) for k in range(w.n_cutoffs - 1, -1, -1)]
    return [c for c in cuts if c - timedelta(days=w.cutoff_spacing_days) >= first_ts]


def ltv_sql(cutoffs: list[datetime], horizon_days: int, events: str = "events") -> str:
    """SQL of LTV_COLUMNS for every user known (an event at or before) at each cutoff."""
    if not cutoffs:
        raise SiyuError("no cutoffs given for the LTV labels")
    cuts = ", ".join(f"(TIMESTAMP '{c:%Y-%m-%d %H:%M:%S}')" for c in cutoffs)
    L = int(horizon_days)
    return f"""
    WITH cuts(cutoff) AS (VALUES {cuts}),
    firsts AS (SELECT user_id, min(ts) AS first_ts FROM {events} GROUP BY user_id),
    orders AS (SELECT user_id, order_id, min(ts) AS ots FROM {events}
               WHERE event = 'purchase' AND order_id IS NOT NULL GROUP BY user_id, order_id),
    attrib AS (SELECT ref_user_id AS buyer, arg_min(user_id, ts) AS referrer, min(ts) AS at FROM {events}
               WHERE event = 'referral_purchase' AND ref_user_id IS NOT NULL GROUP BY ref_user_id),
    money AS (  -- signed amount of each purchase / refund; refunds of an order placed by `pre` do not count
        SELECT e.user_id, e.ts, e.event,
               CASE WHEN e.event = 'purchase' THEN e.amount ELSE -e.amount END AS amt, o.ots
        FROM {events} e LEFT JOIN orders o
          ON e.event = 'refund' AND o.user_id = e.user_id AND o.order_id = e.order_id
        WHERE e.event IN ('purchase', 'refund') AND e.amount IS NOT NULL),
    fut AS (
        SELECT m.user_id, c.cutoff, a.referrer,
               sum(m.amt) AS own,
               sum(CASE WHEN a.at <= c.cutoff + INTERVAL {L} DAY AND m.ts >= date_trunc('day', a.at)
                   THEN m.amt ELSE 0 END) AS attributed
        FROM money m JOIN cuts c ON m.ts > c.cutoff AND m.ts <= c.cutoff + INTERVAL {L} DAY
        LEFT JOIN attrib a ON a.buyer = m.user_id
        WHERE m.event = 'purchase' OR m.ots IS NULL OR m.ots > c.cutoff
        GROUP BY m.user_id, c.cutoff, a.referrer),
    ref AS (SELECT referrer AS user_id, cutoff, sum(attributed) AS referral FROM fut
            WHERE referrer IS NOT NULL GROUP BY referrer, cutoff),
    past AS (
        SELECT m.user_id, c.cutoff, sum(m.amt) AS life,
               sum(CASE WHEN m.ts > c.cutoff - INTERVAL {L} DAY THEN m.amt ELSE 0 END) AS recent
        FROM money m JOIN cuts c ON m.ts <= c.cutoff
        GROUP BY m.user_id, c.cutoff),
    known AS (SELECT f.user_id, c.cutoff, f.first_ts FROM firsts f JOIN cuts c ON f.first_ts <= c.cutoff)
    SELECT k.user_id, k.cutoff,
           coalesce(o.own, 0.0) AS ltv_own, coalesce(r.referral, 0.0) AS ltv_referral,
           coalesce(o.own, 0.0) + coalesce(r.referral, 0.0) AS ltv,
           coalesce(p.recent, 0.0) AS spend_last_l, coalesce(p.life, 0.0) AS spend_life,
           date_diff('second', k.first_ts, k.cutoff) / 86400.0 AS tenure_days_l
    FROM known k
    LEFT JOIN (SELECT user_id, cutoff, sum(own) AS own FROM fut GROUP BY user_id, cutoff) o
      ON o.user_id = k.user_id AND o.cutoff = k.cutoff
    LEFT JOIN ref r ON r.user_id = k.user_id AND r.cutoff = k.cutoff
    LEFT JOIN past p ON p.user_id = k.user_id AND p.cutoff = k.cutoff
    ORDER BY k.cutoff, k.user_id"""


def ltv_labels(con, cutoffs: list[datetime], cfg: Config, events: str = "events", referral: bool | None = None):
    """LTV targets and baseline inputs of every user known at each cutoff.

    Args:
        con: DuckDB connection holding the canonical events table.
        cutoffs: the instants T (naive brand-local).
        cfg: config (`ltv.horizon_days`).
        events: the events table.
        referral: whether the log can show referrals; None: it has advocacy events.

    Returns:
        DataFrame with LTV_COLUMNS (currency of the log); `ltv_referral` is NaN and `ltv` = `ltv_own`
        when the log has no advocacy events.
    """
    if referral is None:
        from features.compute import present_families

        referral = "advocacy" in present_families(con, events)
    df = con.execute(ltv_sql(cutoffs, cfg.ltv.horizon_days, events)).df()
    df["user_id"] = df["user_id"].astype(str)
    df["cutoff"] = pd.to_datetime(df["cutoff"])
    if not referral:
        df["ltv_referral"] = np.nan
        df["ltv"] = df["ltv_own"]
    return df[LTV_COLUMNS]
