"""Training tables: features and labels at several rolling cutoffs, stacked (DESIGN §4).

The log is aggregated once into day-level facts for all cutoffs together;
tiers are computed once for every day any cutoff needs (its lookbacks and
its horizon), so adding cutoffs does not rescan the raw log.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd

from siyu.config import Config
from siyu.errors import SiyuError
from siyu.features.contract import TIERS
from siyu.features.facts import Runner, build_facts, instant_of, split_instant
from siyu.features.features import (
    family_first_days, feature_bounds, feature_sql, registry_for, tidy_features, tier_days,
)
from siyu.features.labels import label_sql, tidy_labels
from siyu.features.tiers import tier_bounds, tier_sql


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
        sql, names = feature_sql(facts, tiers, days, cfg)
        feats = run.df(sql)
        first = family_first_days(run, facts)
        labels = run.df(label_sql(facts, tiers, days, cfg))
    finally:
        run.drop([*facts.names(), tiers])
    feats = tidy_features(feats, names, facts.offset, registry_for(cfg), first)
    labels = tidy_labels(labels, facts.offset).drop(columns=["tier"])
    out = feats.rename(columns={"asof": "cutoff"}).merge(labels, on=["user_id", "cutoff"], how="inner",
                                                          validate="one_to_one")
    out.insert(2, "tier_name", [TIERS[int(r)] for r in out["tier"]])
    return out.sort_values(["cutoff", "user_id"]).reset_index(drop=True)


def training_table(con, cutoffs: list[datetime], cfg: Config, events: str = "events") -> pd.DataFrame:
    """Features and labels for every (user, cutoff), users known at each cutoff.

    Args:
        con: DuckDB connection holding the canonical events table.
        cutoffs: the cutoffs (naive UTC, one time of day), e.g. training_cutoffs(con, cfg).
        cfg: config.
        events: name of the events table.

    Returns:
        DataFrame user_id, cutoff, tier_name, registry.feature_names(cfg)..., tier_next,
        in_churn_pop, in_promotion_pop, in_koc_pop, churn, promotion, koc (Int8, NA outside population).
    """
    return training_on(Runner(con), cutoffs, cfg, events)


__all__ = ["validation_cutoff", "training_cutoffs", "training_table", "instant_of"]
