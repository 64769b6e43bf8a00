"""The feature SQL (docs/design.md §5): the registry compiled into one query per cutoff over the fact tables.

Features at T read only facts with bucket <= day(T) (point in time); the
ladder features join the tiers at T, T - P and T - each RFM window. Several
cutoffs share one set of facts and tiers; each cutoff's rows are turned into
arrays before the next query runs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import datetime

import numpy as np
import pandas as pd

from features.catalog import Feature, features_of, windows_in
from features.compiler import Compiled, event_cond
from features.facts import Facts, Runner, build_facts, floats, instants_of, split_instant
from features.tiers import tier_bounds, tier_sql
from siyu.config import Config
from siyu.contract import EVENT_FAMILY, EVENTS
from siyu.errors import SiyuError

INT_FEATURES = ("tier", "prev_tier")


def tier_days(days: list[int], cfg: Config) -> list[int]:
    """Every day the ladder features need tiers at: the cutoffs and their lookbacks."""
    back = sorted({*windows_in(cfg), cfg.windows.period_days})
    return sorted({d - b for d in days for b in [0, *back]})


_COMPILED: dict[int, tuple[Config, Compiled]] = {}


def compiled_for(cfg: Config) -> Compiled:
    """The compiled registry for this config (compiled once per Config object: configs are frozen)."""
    # Keyed by identity (a Config holds dicts, so it has no hash); the entry keeps its Config alive,
    # so an id is never reused while cached. A /predict_events request would otherwise compile twice.
    hit = _COMPILED.get(id(cfg))
    if hit is None or hit[0] is not cfg:
        if len(_COMPILED) >= 16:
            _COMPILED.clear()
        hit = _COMPILED[id(cfg)] = (cfg, Compiled(features_of(cfg), sorted(windows_in(cfg))))
    return hit[1]


def feature_bounds(days: list[int], cfg: Config) -> set[int]:
    """Interval boundaries the features at these cutoff days need (their tiers' included)."""
    offs = compiled_for(cfg).bound_offsets()
    return {d - o for d in days for o in offs} | tier_bounds(tier_days(days, cfg), cfg)


def user_days_sql(facts: Facts, days: list[int], c: Compiled) -> str:
    """SQL for the distinct-days facts: per (user, interval) the OR of the day masks of user-side events.

    Only intervals inside the longest distinct-days window of some cutoff are kept.
    """
    near = " OR ".join(f"(a.e > {d - c.max_days} AND a.e <= {d})" for d in sorted(set(days)))
    return (
        f"SELECT a.user_id, a.e, bit_or(a.mask) AS mask FROM {facts.iv} a "
        f"WHERE {event_cond('@user')} AND ({near}) GROUP BY a.user_id, a.e"
    )


def _with_user(select: str) -> str:
    return f"a.user_id, {select}" if select else "a.user_id"


def old_facts_sql(facts: Facts, c: Compiled, hi: int, lo: int | None = None, before: str | None = None) -> str:
    """SQL for the lifetime aggregates per user of the facts older than every window of a cutoff.

    The facts with e <= hi (the cutoff day minus c.span) are those of `before` (a table of this
    SQL up to `lo`) plus the block lo < e <= hi, so consecutive cutoffs read each old fact once.
    """
    block = (
        f"SELECT {_with_user(c.aggregates_sql(hi, 'old'))} FROM {facts.iv} a "
        f"WHERE a.e <= {int(hi)}{'' if lo is None else f' AND a.e > {int(lo)}'} GROUP BY a.user_id"
    )
    if before is None:
        return block
    return (
        f"SELECT coalesce(p.user_id, b.user_id) AS user_id, {c.accumulated_sql('p', 'b')} "
        f"FROM {before} p FULL OUTER JOIN ({block}) b ON b.user_id = p.user_id"
    )


def rhythm_sql(facts: Facts, day: int, lookback: int) -> str:
    """The CTE `g`: per user, the gaps between distinct purchase days in (day - lookback, day].

    Columns gap_mean, gap_sd (of the gaps), gap_n (purchase days), gap_first (the first of them);
    a user without a purchase there has no row: NULLs, i.e. missing.

    Reads the orders facts (one row per purchase, far fewer than events), so it costs one small
    window sort per cutoff. A purchase's bucket `b` is at or before the cutoff exactly when its
    timestamp is (point in time); cancelled orders count, as in the purchase counts.
    """
    return f"""g AS (
        SELECT user_id, avg(gap) AS gap_mean, stddev_samp(gap) AS gap_sd,
               CAST(count(*) AS DOUBLE) AS gap_n, min(b) AS gap_first
        FROM (SELECT user_id, b, CAST(b - lag(b) OVER (PARTITION BY user_id ORDER BY b) AS DOUBLE) AS gap
              FROM (SELECT DISTINCT user_id, b FROM {facts.orders}
                    WHERE b <= {int(day)} AND b > {int(day) - int(lookback)}) x) y
        GROUP BY user_id)"""


def feature_sql(facts: Facts, tiers: str, user_days: str, old: str, day: int, cfg: Config, c: Compiled) -> str:
    """SQL for the features at one cutoff day, in no set order (columns user_id, d, then the registry's).

    Args:
        facts: the fact tables.
        tiers: table holding tier_sql at tier_days([day]) (or more days).
        user_days: table holding user_days_sql for this day (or more days).
        old: table holding old_facts_sql up to day - c.span.
        day: the cutoff's day number.
        cfg: the config.
        c: compiled_for(cfg).
    """
    d = int(day)
    # Each lookback joins only its own day's tiers (a constant filter, not a hash on (user, day)).
    back = {"prev": cfg.windows.period_days, **{f"g{w}": w for w in c.lookbacks}}
    grid = " ".join(
        f"LEFT JOIN (SELECT * FROM {tiers} WHERE d = {d - w}) {a} ON {a}.user_id = t.user_id" for a, w in back.items()
    )
    outs = ", ".join(f"CAST({e} AS DOUBLE) AS {n}" for n, e in c.exprs.items())
    sql = f"""
    WITH k AS (SELECT * FROM {tiers} WHERE d = {d}),
    r AS (
        SELECT {_with_user(c.aggregates_sql(d, "recent"))}
        FROM {facts.iv} a WHERE a.e <= {d} AND a.e > {d - c.span} GROUP BY a.user_id),
    u AS (
        SELECT {_with_user(c.aggregates_sql(d, "user_days"))}
        FROM {user_days} a WHERE a.e <= {d} AND a.e > {d - c.max_days} GROUP BY a.user_id),
    {rhythm_sql(facts, d, cfg.windows.rhythm_lookback_days) + "," if c.rhythm else ""}
    t AS (
        SELECT k.*, {c.combined_sql("r", "o", "u")}{", g.gap_mean, g.gap_sd, g.gap_n, g.gap_first" if c.rhythm else ""}
        FROM k LEFT JOIN r ON r.user_id = k.user_id LEFT JOIN {old} o ON o.user_id = k.user_id
               LEFT JOIN u ON u.user_id = k.user_id
               {"LEFT JOIN g ON g.user_id = k.user_id" if c.rhythm else ""})
    SELECT t.user_id, t.d, {outs}
    FROM t
    {grid}"""
    return sql


def family_first_days(run: Runner, facts: Facts) -> dict[str, int]:
    """Day number at which each event family first occurs in the facts."""
    df = run.df(f"SELECT ev, min(min_b) AS b FROM {facts.iv} GROUP BY ev")
    first: dict[str, int] = {}
    for ev, b in zip(df["ev"], df["b"]):
        fam = EVENT_FAMILY[EVENTS[int(ev)]]
        first[fam] = min(first.get(fam, int(b)), int(b))
    return first


def tidy_columns(
    cols: dict[str, np.ndarray],
    offset: int,
    feats: list[Feature],
    first_days: dict[str, int],
    families: Collection[str] | None = None,
) -> dict[str, np.ndarray]:
    """Engine columns of one cutoff (Runner.arrays) -> arrays user_id, asof, features (float64), by user_id.

    A feature is NaN at a cutoff when one of its source families is absent from the log up to
    that cutoff (`first_days`), or from `families` when given.
    """
    # Sorted here rather than by the engine: an ORDER BY moves all ~100 columns through the sort
    # (1.4-2.4 s per cutoff at 1M users) while this sorts the keys and reorders the copy made anyway.
    # Code-point order of str is the engines' byte order of UTF-8.
    order = np.argsort(np.asarray(cols["user_id"]).astype(str), kind="stable")
    day = np.asarray(cols["d"], dtype="int64")[order]
    seen: dict[str, np.ndarray] = {}
    for fam in {s for f in feats for s in f.sources}:
        seen[fam] = np.full(len(day), fam in families) if families is not None else day >= first_days.get(fam, 2**62)
    out: dict[str, np.ndarray] = {
        "user_id": np.asarray(cols["user_id"], dtype=object)[order],
        "asof": instants_of(day, offset),
    }
    for f in feats:
        col = floats(cols.pop(f.name), order)
        for s in f.sources:
            col[~seen[s]] = np.nan
        out[f.name] = col
    return out


class ColumnStack:
    """Per-cutoff column arrays written straight into whole-table columns (no chunks to concatenate)."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes, self.cols, self.at, self.added = sizes, {}, 0, 0
        self.total = sum(sizes)

    def add(self, chunk: dict[str, np.ndarray]) -> None:
        """Append the next cutoff's arrays (its row count must be the next of `sizes`)."""
        n = len(chunk["user_id"])
        if n != self.sizes[self.added]:
            raise SiyuError(
                f"a cutoff's feature rows ({n:,}) do not match its known users ({self.sizes[self.added]:,})"
            )
        self.added += 1
        for name, col in chunk.items():
            if name not in self.cols:
                self.cols[name] = np.empty(self.total, dtype=col.dtype)
            self.cols[name][self.at : self.at + n] = col
        self.at += n

    def frame(self, order: list[str]) -> pd.DataFrame:
        """The columns as one frame in `order` (tier codes as Int64), one block per column."""
        return frame_of(self.cols, order)


def frame_of(cols: dict[str, np.ndarray], order: list[str]) -> pd.DataFrame:
    """Column arrays -> a frame in `order`; tier codes become Int64; no consolidating copy."""
    return pd.DataFrame(
        {c: pd.array(np.round(cols[c]), dtype="Int64") if c in INT_FEATURES else cols[c] for c in order}, copy=False
    )


def feature_rows(
    run: Runner, facts: Facts, tiers: str, days: list[int], cfg: Config, families: Collection[str] | None = None
) -> pd.DataFrame:
    """Features at each cutoff day over built facts and tiers, sorted by (asof, user_id).

    One query per cutoff: each groups the facts by user alone, and its result is copied into
    the whole table's columns before the next runs, so neither the engine nor Python holds
    every cutoff's rows twice.

    Args:
        run: the engine runner.
        facts: fact tables built for these days (feature_bounds).
        tiers: table holding tier_sql at tier_days(days).
        days: cutoff day numbers.
        cfg: the config.
        families: see feature_table.

    Returns:
        DataFrame user_id, asof, then catalog.feature_names(cfg) in order.
    """
    user_days, old = f"{facts.prefix}_udays", [f"{facts.prefix}_old0", f"{facts.prefix}_old1"]
    feats, c = features_of(cfg), compiled_for(cfg)
    days, stack, one, lo = sorted(set(days)), None, None, None
    order = ["user_id", "asof", *(f.name for f in feats)]
    try:
        run.table(user_days, user_days_sql(facts, days, c))
        first = family_first_days(run, facts)
        if len(days) > 1:  # one row per user known at each cutoff: the tiers there give the sizes
            n = run.arrays(f"SELECT d, count(*) AS n FROM {tiers} WHERE d IN ({', '.join(map(str, days))}) GROUP BY d")
            sizes = dict(zip(np.asarray(n["d"]).tolist(), np.asarray(n["n"]).tolist()))
            stack = ColumnStack([int(sizes.get(d, 0)) for d in days])
        for d in days:
            # Two tables in turn: each cutoff's old aggregates are the previous ones plus one block.
            run.table(old[1], old_facts_sql(facts, c, d - c.span, lo, None if lo is None else old[0]))
            old.reverse()
            lo = d - c.span
            sql = feature_sql(facts, tiers, user_days, old[0], d, cfg, c)
            cols = tidy_columns(run.arrays(sql), facts.offset, feats, first, families)
            if stack is None:
                one = cols
            else:
                stack.add(cols)
            del cols  # a cutoff's arrays are GBs at 1M users: gone once copied
    finally:
        run.drop([user_days, *old])
    return stack.frame(order) if stack is not None else frame_of(one, order)


@contextmanager
def feature_query(
    run: Runner, facts: Facts, tiers: str, day: int, cfg: Config, families: Collection[str] | None = None
) -> Iterator[tuple[str, object]]:
    """The feature SQL of one cutoff with its helper tables alive, and the step that tidies chunks of its rows.

    For an engine that streams the rows instead of collecting them (the Spark scoring job):
    `tidy(cols)` turns the engine columns of any set of rows into the frame feature_rows gives for
    them (sorted by user_id), so chunks tidied one by one concatenate to feature_rows' table.

    Args:
        run: the engine runner.
        facts: fact tables built for this day (feature_bounds).
        tiers: table holding tier_sql at tier_days([day]).
        day: the cutoff day number.
        cfg: the config.
        families: see feature_table.

    Returns:
        A context manager yielding (sql, tidy).
    """
    user_days, old = f"{facts.prefix}_udays", f"{facts.prefix}_old0"
    feats, c = features_of(cfg), compiled_for(cfg)
    order = ["user_id", "asof", *(f.name for f in feats)]
    try:
        run.table(user_days, user_days_sql(facts, [day], c))
        first = family_first_days(run, facts)
        run.table(old, old_facts_sql(facts, c, day - c.span))

        def tidy(cols: dict[str, np.ndarray]) -> pd.DataFrame:
            return frame_of(tidy_columns(cols, facts.offset, feats, first, families), order)

        yield feature_sql(facts, tiers, user_days, old, day, cfg, c), tidy
    finally:
        run.drop([user_days, old])


def features_on(
    run: Runner, cutoffs: list[datetime], cfg: Config, events: str = "events", families: Collection[str] | None = None
) -> pd.DataFrame:
    """Feature rows for every user known at each cutoff, on any engine runner."""
    days = sorted({split_instant(c)[0] for c in cutoffs})
    facts = build_facts(run, events, list(cutoffs), feature_bounds(days, cfg))
    tiers = f"{facts.prefix}_tiers"
    try:
        run.table(tiers, tier_sql(facts, tier_days(days, cfg), cfg))
        return feature_rows(run, facts, tiers, days, cfg, families)
    finally:
        run.drop([*facts.names(), tiers])


def feature_table(
    con, asof: datetime, cfg: Config, events: str = "events", families: Collection[str] | None = None
) -> pd.DataFrame:
    """Features of every user with an event at or before `asof` (one row each).

    Args:
        con: DuckDB connection holding the canonical events table.
        asof: the instant T (naive brand-local wall time); only events with ts <= T are read.
        cfg: config (windows, period, tier thresholds).
        events: name of the events table.
        families: event families present in the log; default: those found in `events`.
            Pass the training log's families when `events` holds one user (the API), so a
            family that user lacks gives zeros, as in the batch table, not NaN.

    Returns:
        DataFrame user_id, asof, then catalog.feature_names(cfg) in order.
    """
    return features_on(Runner(con), [asof], cfg, events, families)


def present_families(con, events: str = "events") -> frozenset[str]:
    """Event families that occur in an events table (the `families` to pass for one-user tables)."""
    from events.store import attached_store, read_manifest
    from siyu.contract import EVENT_FAMILY

    store = attached_store(con, events)
    if store is not None:  # the manifest keeps every event name it stored
        evs = read_manifest(store)["totals"]["events"]
    else:
        evs = [r[0] for r in con.execute(f"SELECT DISTINCT event FROM {events}").fetchall()]
    return frozenset(EVENT_FAMILY[e] for e in evs if e in EVENT_FAMILY)
