"""Features and tiers at one asof from one build of the fact tables (what batch scoring needs).

The feature query already computes the tiers at the cutoff (the ladder features read them), over
facts cut at every boundary the tiers need; tier_table would build the facts a second time for
the same numbers (a tier at d sums whole intervals between d - P and d, however finely cut).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import pandas as pd

from features.compute import feature_bounds, feature_rows, tier_days
from features.facts import Runner, build_facts, split_instant
from features.tiers import tidy_tiers, tier_sql
from siyu.config import Config


def features_and_tiers_on(
    run: Runner, asof: datetime, cfg: Config, events: str = "events", families: Collection[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features.compute.feature_table, features.tiers.tier_table) at `asof`, facts built once.

    Args:
        run: the engine runner.
        asof: the instant T (naive brand-local wall time).
        cfg: the config.
        events: the events table (or an event store's view).
        families: see features.compute.feature_table.

    Returns:
        The two frames, equal to what the two functions return one by one.
    """
    day = split_instant(asof)[0]
    facts = build_facts(run, events, [asof], feature_bounds([day], cfg))
    tiers = f"{facts.prefix}_tiers"
    try:
        run.table(tiers, tier_sql(facts, tier_days([day], cfg), cfg))
        at = run.df(f"SELECT * FROM {tiers} WHERE d = {int(day)} ORDER BY user_id")
        feats = feature_rows(run, facts, tiers, [day], cfg, families)
    finally:
        run.drop([*facts.names(), tiers])
    return feats, tidy_tiers(at, asof)


def features_and_tiers(con, asof: datetime, cfg: Config, events: str = "events") -> tuple[pd.DataFrame, pd.DataFrame]:
    """features_and_tiers_on on a DuckDB connection."""
    return features_and_tiers_on(Runner(con), asof, cfg, events)
