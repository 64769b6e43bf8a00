"""The feature SQL (DESIGN §5): the registry compiled into one query over the fact tables.

Features at T read only facts with bucket <= day(T) (point in time); the
ladder features join the tiers at T, T - P and T - each RFM window.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import numpy as np
import pandas as pd

from siyu.config import Config
from siyu.features.contract import EVENT_FAMILY, EVENTS
from siyu.features.facts import Facts, Runner, build_facts, instants_of, split_instant
from siyu.features.feature_compiler import Compiled
from siyu.features.registry import Feature, features_for
from siyu.features.tiers import tier_bounds, tier_sql

INT_FEATURES = ("tier", "prev_tier")


def registry_for(cfg: Config) -> list[Feature]:
    """The feature declarations for this config's windows and period."""
    return features_for(tuple(cfg.windows.feature_windows), cfg.windows.period_days)


def tier_days(days: list[int], cfg: Config) -> list[int]:
    """Every day the ladder features need tiers at: the cutoffs and their lookbacks."""
    back = sorted({*cfg.windows.feature_windows, cfg.windows.period_days})
    return sorted({d - b for d in days for b in [0, *back]})


def compiled_for(cfg: Config) -> Compiled:
    """The compiled registry for this config."""
    return Compiled(registry_for(cfg), sorted(cfg.windows.feature_windows))


def feature_bounds(days: list[int], cfg: Config) -> set[int]:
    """Interval boundaries the features at these cutoff days need (their tiers' included)."""
    offs = compiled_for(cfg).bound_offsets()
    return {d - o for d in days for o in offs} | tier_bounds(tier_days(days, cfg), cfg)


def feature_sql(facts: Facts, tiers: str, days: list[int], cfg: Config) -> tuple[str, list[str]]:
    """SQL for the features at each cutoff day; tiers must hold tier_sql at tier_days(days)."""
    c = compiled_for(cfg)
    lookbacks = c.lookbacks
    ds = sorted(days)
    lvl0 = ", ".join(f"{sql} AS {a}" for sql, (a, _) in c.measures.items())
    lvl1 = ", ".join(f"{fn}(p.{a}) AS {a}" for a, fn in c.measures.values())
    tail_case, tail_pairs = c.tail_groups(ds)
    grid = " ".join(f"LEFT JOIN {tiers} g{w} ON g{w}.user_id = k.user_id AND g{w}.d = k.d - {w}"
                    for w in lookbacks)
    outs = ", ".join(f"CAST({e} AS DOUBLE) AS {n}" for n, e in c.exprs.items())
    sql = f"""
    WITH pv AS (
        SELECT a.user_id, a.e, {lvl0} FROM {facts.iv} a GROUP BY a.user_id, a.e),
    tg AS (
        SELECT p.user_id, p.g, {lvl1}
        FROM (SELECT p.*, {tail_case} AS g FROM pv p) p WHERE p.g IS NOT NULL GROUP BY p.user_id, p.g),
    s AS (
        SELECT p.user_id, i.d, i.j, {lvl1}
        FROM pv p JOIN {c.slot_pairs(facts.bounds, ds)} i ON p.e = i.e
        GROUP BY p.user_id, i.d, i.j
        UNION ALL
        SELECT p.user_id, i.d, {len(c.slots) - 1} AS j, {lvl1}
        FROM tg p JOIN {tail_pairs} i ON p.g = i.g
        GROUP BY p.user_id, i.d),
    w AS (
        SELECT s.user_id, s.d, {c.final_sql()} FROM s GROUP BY s.user_id, s.d)
    SELECT k.user_id, k.d, {outs}
    FROM {tiers} k
    JOIN {tiers} t ON t.user_id = k.user_id AND t.d = k.d
    LEFT JOIN {tiers} prev ON prev.user_id = k.user_id AND prev.d = k.d - {cfg.windows.period_days}
    {grid}
    LEFT JOIN w ON w.user_id = k.user_id AND w.d = k.d
    WHERE k.d IN ({", ".join(str(d) for d in ds)})
    ORDER BY k.d, k.user_id"""
    return sql, [f.name for f in registry_for(cfg)]


def family_first_days(run: Runner, facts: Facts) -> dict[str, int]:
    """Day number at which each event family first occurs in the facts."""
    df = run.df(f"SELECT ev, min(min_b) AS b FROM {facts.iv} GROUP BY ev")
    first: dict[str, int] = {}
    for ev, b in zip(df["ev"], df["b"]):
        fam = EVENT_FAMILY[EVENTS[int(ev)]]
        first[fam] = min(first.get(fam, int(b)), int(b))
    return first


def tidy_features(df: pd.DataFrame, names: list[str], offset: int, feats: list[Feature],
                  first_days: dict[str, int], families: Collection[str] | None = None) -> pd.DataFrame:
    """Engine output -> user_id, asof, features (float64; tier codes Int64).

    A feature is NaN at a cutoff when one of its source families is absent from the log up to
    that cutoff (`first_days`), or from `families` when given.
    """
    day = df["d"].to_numpy(dtype="int64")
    asof = instants_of(day, offset)
    seen: dict[str, np.ndarray] = {}
    for fam in {s for f in feats for s in f.sources}:
        seen[fam] = (np.full(len(df), fam in families) if families is not None
                     else day >= first_days.get(fam, 2**62))
    cols: dict[str, object] = {"user_id": df["user_id"].to_numpy(), "asof": asof}
    for f in feats:  # one frame built at once: inserting 90 columns one by one fragments it
        col = df[f.name].to_numpy(dtype="float64", na_value=np.nan)
        for s in f.sources:
            col = np.where(seen[s], col, np.nan)
        cols[f.name] = pd.array(np.round(col), dtype="Int64") if f.name in INT_FEATURES else col
    del df
    # The engine sorted by (d, user_id), i.e. by (asof, user_id).
    return pd.DataFrame({c: cols[c] for c in ["user_id", "asof", *names]})


def features_on(run: Runner, cutoffs: list[datetime], cfg: Config, events: str = "events",
                families: Collection[str] | None = None) -> pd.DataFrame:
    """Feature rows for every user known at each cutoff, on any engine runner."""
    days = sorted({split_instant(c)[0] for c in cutoffs})
    facts = build_facts(run, events, list(cutoffs), feature_bounds(days, cfg))
    tiers = f"{facts.prefix}_tiers"
    try:
        run.table(tiers, tier_sql(facts, tier_days(days, cfg), cfg))
        sql, names = feature_sql(facts, tiers, days, cfg)
        first = family_first_days(run, facts)
        # Passed straight in so tidy_features holds the only reference to the engine's frame.
        return tidy_features(run.df(sql), names, facts.offset, registry_for(cfg), first, families)
    finally:
        run.drop([*facts.names(), tiers])


def feature_table(con, asof: datetime, cfg: Config, events: str = "events",
                  families: Collection[str] | None = None) -> pd.DataFrame:
    """Features of every user with an event at or before `asof` (one row each).

    Args:
        con: DuckDB connection holding the canonical events table.
        asof: the instant T (naive UTC); only events with ts <= T are read.
        cfg: config (windows, period, tier thresholds).
        events: name of the events table.
        families: event families present in the log; default: those found in `events`.
            Pass the training log's families when `events` holds one user (the API), so a
            family that user lacks gives zeros, as in the batch table, not NaN.

    Returns:
        DataFrame user_id, asof, then registry.feature_names(cfg) in order.
    """
    return features_on(Runner(con), [asof], cfg, events, families)


def present_families(con, events: str = "events") -> frozenset[str]:
    """Event families that occur in an events table (the `families` to pass for one-user tables)."""
    from siyu.features.contract import EVENT_FAMILY

    evs = [r[0] for r in con.execute(f"SELECT DISTINCT event FROM {events}").fetchall()]
    return frozenset(EVENT_FAMILY[e] for e in evs if e in EVENT_FAMILY)
