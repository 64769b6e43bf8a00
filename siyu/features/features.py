"""The feature SQL (DESIGN §5): compiles the registry into queries over the fact tables.

Windowed signals join the daily facts with the cutoffs whose window holds
them; lifetime signals (recency, tenure, totals) are summed per slot between
consecutive cutoffs and accumulated, so many cutoffs cost one pass.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime

import pandas as pd

from siyu.config import Config
from siyu.features.contract import BRAND_EVENTS, EVENTS, FAMILIES
from siyu.features.facts import (
    MASK_DAYS, Facts, Runner, build_facts, instant_of, pairs_table, split_instant, sql_list,
)
from siyu.features.registry import Feature, features_for
from siyu.features.tiers import tier_bounds, tier_sql

_PH = re.compile(r"\{(\w+)(?::([^}]*))?\}")
_WINDOWED = {"n": "a.n", "amt": "a.amt", "coupon": "a.n_coupon"}
_DAYS = ("@user", "purchase")
_LIFETIME = {"ln": "n", "lamt": "amt", "lcoupon": "n_coupon", "lrsum": "rating_sum", "lrn": "rating_n",
             "last": "max_b", "first": "min_b"}
INT_FEATURES = ("tier", "prev_tier")


def registry_for(cfg: Config) -> list[Feature]:
    """The feature declarations for this config's windows and period."""
    return features_for(tuple(cfg.windows.feature_windows), cfg.windows.period_days)


def _event_cond(spec: str, alias: str = "a") -> str:
    """SQL condition on the integer event code `ev` (faster than comparing names)."""
    if spec == "@all":
        return "1 = 1"
    if spec == "@user":
        return " AND ".join(f"{alias}.ev <> {EVENTS.index(e)}" for e in sorted(BRAND_EVENTS))
    if spec.startswith("@"):
        if spec[1:] not in FAMILIES:
            raise ValueError(f"unknown family {spec}")
        codes = [EVENTS.index(e) for e in FAMILIES[spec[1:]]]
        return f"{alias}.ev BETWEEN {min(codes)} AND {max(codes)}"
    codes = [EVENTS.index(e) for e in spec.split("+")]
    return f"{alias}.ev IN ({', '.join(map(str, codes))})" if len(codes) > 1 else f"{alias}.ev = {codes[0]}"


class Compiled:
    """The feature expressions compiled into three aggregation levels.

    Level 0 (`measures`): per (user, interval) pivots of the interval facts.
    Level 1: measures summed per (user, cutoff, slot), where slots cut the days
    before the cutoff at every window end. Level 2 (`finals`): per (user, cutoff),
    windows are sums over slots, lifetime values over all slots.
    """

    def __init__(self, feats: list[Feature], lookbacks: list[int]) -> None:
        self.measures: dict[str, tuple[str, str]] = {}   # level-0 sql -> (alias, level-1 combine)
        self.refs: dict[tuple, str] = {}                 # (measure, combine, window) -> final alias
        self.offsets: set[int] = {0}
        self.max_days = 0
        self.lookbacks = lookbacks
        self.exprs = {f.name: _PH.sub(self._ref, f.expr) for f in feats}
        self.slots = sorted(self.bound_offsets())

    def _measure(self, sql: str, combine: str) -> str:
        return self.measures.setdefault(sql, (f"m{len(self.measures)}", combine))[0]

    def _final(self, measure: str, combine: str, window: tuple[int, int] | None) -> str:
        return self.refs.setdefault((measure, combine, window), f"w{len(self.refs)}")

    def _ref(self, m: re.Match) -> str:
        kind, arg = m.group(1), m.group(2)
        if kind == "d":
            return "k.d"
        if kind == "days_in_tier":
            cases = " ".join(f"WHEN coalesce(g{w}.tier_rank, -1) <> t.tier_rank THEN {prev}"
                             for prev, w in zip([0, *self.lookbacks], self.lookbacks))
            return f"CASE {cases} ELSE {self.lookbacks[-1]} END"
        if kind in _WINDOWED or kind == "days":
            ev, hi, *lo = arg.split(":")
            hi, lo = int(hi), int(lo[0]) if lo else 0
            self.offsets |= {hi, lo}
            if kind == "days":
                if ev not in _DAYS:
                    raise ValueError(f"distinct days are tracked for {sorted(_DAYS)} only, not {ev}")
                self.max_days = max(self.max_days, hi)
                sql = f"CAST(bit_count(bit_or(CASE WHEN {_event_cond(ev)} THEN a.mask ELSE 0 END)) AS DOUBLE)"
            else:
                sql = f"sum(CASE WHEN {_event_cond(ev)} THEN {_WINDOWED[kind]} ELSE 0 END)"
            return f"coalesce(w.{self._final(self._measure(sql, 'sum'), 'sum', (hi, lo))}, 0)"
        if kind in _LIFETIME:
            col, cond = _LIFETIME[kind], _event_cond(arg)
            if kind in ("last", "first"):
                fn = "max" if kind == "last" else "min"
                return f"w.{self._final(self._measure(f'{fn}(CASE WHEN {cond} THEN a.{col} END)', fn), fn, None)}"
            sql = f"sum(CASE WHEN {cond} THEN a.{col} ELSE 0 END)"
            return f"coalesce(w.{self._final(self._measure(sql, 'sum'), 'sum', None)}, 0)"
        raise ValueError(f"unknown placeholder {m.group(0)}")

    def bound_offsets(self) -> set[int]:
        """Days before d where intervals must be cut (distinct-day intervals stay under MASK_DAYS)."""
        step = MASK_DAYS - 2
        return self.offsets | set(range(0, self.max_days + step, step))

    def slot_pairs(self, bounds, days) -> str:
        """Inline table (e, d, j): interval e lies in slot j (days before cutoff d), recent slots only."""
        tail = self.slots[-1]
        rows = [(e, d, max(j for j, o in enumerate(self.slots) if o <= d - e))
                for d in sorted(set(days)) for e in bounds if 0 <= d - e < tail]
        return "(" + " UNION ALL ".join(f"SELECT {e} AS e, {d} AS d, {j} AS j" for e, d, j in rows) + ")"

    def tail_groups(self, days) -> tuple[str, str]:
        """The oldest slot (all history before the last window end), shared between cutoffs.

        Returns:
            (SQL CASE giving each interval e its tail group g, inline table (g, d) of the groups
            that make up cutoff d's tail). Many cutoffs then sum a few groups, not every interval.
        """
        tails = sorted({d - self.slots[-1] for d in days})
        case = "CASE " + " ".join(f"WHEN p.e <= {t} THEN {t}" for t in tails) + " END"
        rows = [(g, d) for d in sorted(set(days)) for g in tails if g <= d - self.slots[-1]]
        return case, "(" + " UNION ALL ".join(f"SELECT {g} AS g, {d} AS d" for g, d in rows) + ")"

    def final_sql(self) -> str:
        """Level-2 aggregates over the slot table."""
        out = []
        for (m, fn, win), alias in self.refs.items():
            if win is None:
                out.append(f"{fn}(s.{m}) AS {alias}")
            else:
                hi, lo = win
                js = [j for j, o in enumerate(self.slots) if lo <= o < hi]  # contiguous
                out.append(f"sum(CASE WHEN s.j BETWEEN {js[0]} AND {js[-1]} THEN s.{m} ELSE 0 END) AS {alias}")
        return ", ".join(out)


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
    WHERE k.d IN ({", ".join(str(d) for d in ds)})"""
    return sql, [f.name for f in registry_for(cfg)]


def family_first_days(run: Runner, facts: Facts) -> dict[str, int]:
    """Day number at which each event family first occurs in the facts."""
    df = run.df(f"SELECT fam, min(min_b) AS b FROM {facts.iv} GROUP BY fam")
    return {str(f): int(b) for f, b in zip(df["fam"], df["b"]) if f is not None}


def tidy_features(df: pd.DataFrame, names: list[str], offset: int, feats: list[Feature],
                  first_days: dict[str, int], families: Collection[str] | None = None) -> pd.DataFrame:
    """Engine output -> user_id, asof, features (float64; tier codes Int64).

    A feature is NaN at a cutoff when one of its source families is absent from the log up to
    that cutoff (`first_days`), or from `families` when given.
    """
    df = df.copy()
    day = df["d"].astype("int64")
    df.insert(1, "asof", pd.Series([instant_of(int(d), offset) for d in day], dtype="datetime64[us]"))
    for f in feats:
        col = df[f.name].astype("float64")
        for s in f.sources:
            seen = (pd.Series(s in families, index=df.index) if families is not None
                    else day >= first_days.get(s, 2**62))
            col = col.where(seen)
        df[f.name] = col.round().astype("Int64") if f.name in INT_FEATURES else col
    return df[["user_id", "asof", *names]].sort_values(["asof", "user_id"]).reset_index(drop=True)


def features_on(run: Runner, cutoffs: list[datetime], cfg: Config, events: str = "events",
                families: Collection[str] | None = None) -> pd.DataFrame:
    """Feature rows for every user known at each cutoff, on any engine runner."""
    days = sorted({split_instant(c)[0] for c in cutoffs})
    facts = build_facts(run, events, list(cutoffs), feature_bounds(days, cfg))
    tiers = f"{facts.prefix}_tiers"
    try:
        run.table(tiers, tier_sql(facts, tier_days(days, cfg), cfg))
        sql, names = feature_sql(facts, tiers, days, cfg)
        df = run.df(sql)
        first = family_first_days(run, facts)
    finally:
        run.drop([*facts.names(), tiers])
    return tidy_features(df, names, facts.offset, registry_for(cfg), first, families)


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
