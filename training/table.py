"""Training tables: features and labels at several rolling cutoffs, stacked (docs/design.md §4).

The log is aggregated once into day-level facts for all cutoffs together;
tiers are computed once for every day any cutoff needs (its lookbacks and
its horizon), so adding cutoffs does not rescan the raw log.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from features.compute import feature_bounds, feature_rows, tier_days
from features.facts import Runner, build_facts, instant_of, split_instant
from features.labels import label_sql, tidy_labels
from features.tiers import tier_bounds, tier_sql
from siyu.config import Config
from siyu.contract import TIERS
from siyu.errors import SiyuError


def validation_cutoff(con, cfg: Config, events: str = "events") -> datetime:
    """The latest cutoff whose labels are complete: (date(max ts) + 1 day) - H days, at midnight.

    Raises:
        SiyuError: the events table is empty.
    """
    last = con.execute(f"SELECT max(ts) FROM {events}").fetchone()[0]
    return cutoff_from_last(last, cfg)


def cutoff_from_last(last, cfg: Config) -> datetime:
    """validation_cutoff from the log's latest timestamp."""
    if last is None:
        raise SiyuError("the event log is empty: no cutoff to compute")
    day = datetime(last.year, last.month, last.day)
    return day + timedelta(days=1) - timedelta(days=cfg.windows.horizon_days)


def training_cutoffs(con, cfg: Config, events: str = "events") -> list[datetime]:
    """The rolling cutoffs, oldest first; the last one is the validation cutoff."""
    return cutoffs_before(validation_cutoff(con, cfg, events), cfg)


def cutoffs_before(t_val: datetime, cfg: Config) -> list[datetime]:
    """T_val - k * spacing for k = n_cutoffs-1 .. 0."""
    w = cfg.windows
    return [t_val - timedelta(days=k * w.cutoff_spacing_days) for k in range(w.n_cutoffs - 1, -1, -1)]


def training_on(run: Runner, cutoffs: list[datetime], cfg: Config, events: str = "events") -> pd.DataFrame:
    """training_table on any engine runner."""
    if not cutoffs:
        raise SiyuError("no cutoffs given for the training table")
    H = cfg.windows.horizon_days
    days = sorted({split_instant(c)[0] for c in cutoffs})
    tdays = sorted({*tier_days(days, cfg), *(d + H for d in days)})
    bounds = feature_bounds(days, cfg) | tier_bounds(tdays, cfg)
    facts = build_facts(run, events, [*cutoffs, *(c + timedelta(days=H) for c in cutoffs)], bounds)
    tiers = f"{facts.prefix}_tiers"
    try:
        run.table(tiers, tier_sql(facts, tdays, cfg))
        labels = tidy_labels(run.arrays(label_sql(facts, tiers, days, cfg)), facts.offset).drop(columns=["tier"])
        out = feature_rows(run, facts, tiers, days, cfg).rename(columns={"asof": "cutoff"})
    finally:
        run.drop([*facts.names(), tiers])
    # Both frames come sorted by (cutoff, user_id) over the same users (the tiers at each cutoff):
    # adding the label columns in place saves a merge's copy of every feature (GBs at 1M users).
    if not (
        len(out) == len(labels)
        and np.array_equal(out["user_id"].to_numpy(), labels["user_id"].to_numpy())
        and np.array_equal(out["cutoff"].to_numpy(), labels["cutoff"].to_numpy())
    ):
        raise SiyuError("feature and label rows do not line up (engine returned them unsorted?)")
    with warnings.catch_warnings():  # one block per column is the point (no copy); pandas warns past 100
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        for c in labels.columns.drop(["user_id", "cutoff"]):
            out[c] = labels[c].to_numpy() if labels[c].dtype != "Int8" else labels[c].array
        out.insert(2, "tier_name", np.asarray(TIERS, dtype=object)[out["tier"].to_numpy(dtype="int64")])
    return out


def training_table(con, cutoffs: list[datetime], cfg: Config, events: str = "events") -> pd.DataFrame:
    """Features and labels for every (user, cutoff), users known at each cutoff.

    Args:
        con: DuckDB connection holding the canonical events table.
        cutoffs: the cutoffs (naive brand-local, one time of day), e.g. training_cutoffs(con, cfg).
        cfg: config.
        events: name of the events table.

    Returns:
        DataFrame user_id, cutoff, tier_name, catalog.feature_names(cfg)..., tier_next,
        in_churn_pop, in_promotion_pop, in_koc_pop, churn, promotion, koc (Int8, NA outside population).
    """
    return training_on(Runner(con), cutoffs, cfg, events)


__all__ = ["validation_cutoff", "training_cutoffs", "training_table", "instant_of"]
