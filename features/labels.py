"""Prediction targets at a cutoff T (docs/design.md §4): churn, promotion and KOC.

Labels compare the tier at T with the tier at T+H and look at user-side
events in (T, T+H] only; whatever happens after T+H is never read.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from features.facts import (
    Facts,
    Runner,
    build_facts,
    codes_list,
    floats,
    instants_of,
    pairs_table,
    split_instant,
)
from features.tiers import tier_bounds, tier_sql
from siyu.config import Config
from siyu.contract import BRAND_EVENTS, TIER_RANK

LABEL_COLUMNS = [
    "user_id",
    "cutoff",
    "tier",
    "tier_next",
    "in_churn_pop",
    "in_promotion_pop",
    "in_koc_pop",
    "churn",
    "promotion",
    "koc",
]


def label_sql(facts: Facts, tiers: str, days: list[int], cfg: Config) -> str:
    """SQL for the labels of every user known at each cutoff day in `days`.

    Args:
        facts: fact tables with boundaries at the cutoffs, cutoff + H and the tiers' boundaries.
        tiers: a table with tier_sql output at every d and d + H.
        days: cutoff day numbers.
        cfg: config (horizon, churn_mode).
    """
    H = cfg.windows.horizon_days
    mode = cfg.labels.churn_mode
    gone = {
        "either": "(n.connected = 0 OR f.n_future = 0)",
        "disconnect": "n.connected = 0",
        "inactive": "f.n_future = 0",
    }[mode]
    koc = TIER_RANK["koc"]
    return f"""
    WITH fut AS (
        SELECT a.user_id, i.d - {H} AS d, sum(a.n) AS n_future
        FROM {facts.iv} a JOIN {pairs_table(facts.bounds, [d + H for d in days], H)} i ON a.e = i.e
        WHERE a.ev NOT IN {codes_list(BRAND_EVENTS)}
        GROUP BY a.user_id, i.d - {H}),
    j AS (
        SELECT t.user_id, t.d, t.tier, n.tier AS tier_next, t.tier_rank, n.tier_rank AS rank_next,
               n.connected AS connected_next, coalesce(f.n_future, 0) AS n_future,
               CASE WHEN t.connected = 1 AND t.n_user_events >= 1 THEN 1 ELSE 0 END AS in_churn_pop,
               CASE WHEN t.connected = 1 AND t.tier_rank < {koc} THEN 1 ELSE 0 END AS in_up_pop,
               CASE WHEN {gone.replace("f.n_future", "coalesce(f.n_future, 0)")} THEN 1 ELSE 0 END AS gone
        FROM {tiers} t
        JOIN {tiers} n ON n.user_id = t.user_id AND n.d = t.d + {H}
        LEFT JOIN fut f ON f.user_id = t.user_id AND f.d = t.d
        WHERE t.d IN ({", ".join(str(d) for d in days)}))
    SELECT user_id, d, tier, tier_next, in_churn_pop, in_up_pop AS in_promotion_pop, in_up_pop AS in_koc_pop,
           CASE WHEN in_churn_pop = 1 THEN gone END AS churn,
           CASE WHEN in_up_pop = 1 THEN CASE WHEN rank_next > tier_rank THEN 1 ELSE 0 END END AS promotion,
           CASE WHEN in_up_pop = 1 THEN CASE WHEN rank_next = {koc} THEN 1 ELSE 0 END END AS koc
    FROM j
    ORDER BY d, user_id"""


def tidy_labels(cols: dict[str, np.ndarray], offset: int) -> pd.DataFrame:
    """Engine columns (Runner.arrays) -> LABEL_COLUMNS with stable dtypes (bool flags, nullable Int8 labels)."""
    out = {
        "user_id": np.asarray(cols["user_id"], dtype=object),
        "cutoff": instants_of(np.asarray(cols["d"], dtype="int64"), offset),
    }
    for c in ("tier", "tier_next"):
        out[c] = np.asarray(cols[c], dtype=object)  # str objects already: no numpy-unicode detour
    for c in ("in_churn_pop", "in_promotion_pop", "in_koc_pop"):
        out[c] = np.asarray(cols[c]).astype(bool)
    for c in ("churn", "promotion", "koc"):
        v = floats(cols[c])
        out[c] = pd.arrays.IntegerArray(np.nan_to_num(v).astype("int8"), np.isnan(v))
    # The engine sorted by (d, user_id), i.e. by (cutoff, user_id).
    return pd.DataFrame({c: out[c] for c in LABEL_COLUMNS})


def labels_on(run: Runner, cutoffs: list[datetime], cfg: Config, events: str = "events") -> pd.DataFrame:
    """Labels at each cutoff on any engine runner (one pass over the log for all cutoffs)."""
    H = cfg.windows.horizon_days
    days = sorted({split_instant(c)[0] for c in cutoffs})
    tdays = sorted({*days, *(d + H for d in days)})
    facts = build_facts(run, events, [*cutoffs, *(c + timedelta(days=H) for c in cutoffs)], tier_bounds(tdays, cfg))
    tiers = f"{facts.prefix}_tiers"
    try:
        run.table(tiers, tier_sql(facts, tdays, cfg))
        cols = run.arrays(label_sql(facts, tiers, days, cfg))
    finally:
        run.drop([*facts.names(), tiers])
    return tidy_labels(cols, facts.offset)


def label_table(con, cutoff: datetime, cfg: Config, events: str = "events") -> pd.DataFrame:
    """Labels of every user with an event at or before `cutoff`.

    Args:
        con: DuckDB connection holding the canonical events table.
        cutoff: the instant T (naive brand-local wall time).
        cfg: config (period, horizon, churn mode, tier thresholds).
        events: name of the events table.

    Returns:
        DataFrame with LABEL_COLUMNS: tier at T and T+H, population flags (bool), and the
        churn / promotion / koc labels (Int8 0/1 inside the population, NA outside).
    """
    return labels_on(Runner(con), [cutoff], cfg, events)
