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
from siyu.features.contract import BRAND_EVENTS, FAMILIES
from siyu.features.facts import Facts, Runner, build_facts, instant_of, instants_table, split_instant, sql_list
from siyu.features.registry import Feature, features_for

_PH = re.compile(r"\{(\w+)(?::([^}]*))?\}")
_WINDOWED = {"n": "a.n", "amt": "a.amt", "coupon": "a.n_coupon", "days": None}
_LIFETIME = {"ln": "n", "lamt": "amt", "lcoupon": "n_coupon", "lrsum": "rating_sum", "lrn": "rating_n",
             "last": None, "first": None}
INT_FEATURES = ("tier", "prev_tier")


def registry_for(cfg: Config) -> list[Feature]:
    """The feature declarations for this config's windows and period."""
    return features_for(tuple(cfg.windows.feature_windows), cfg.windows.period_days)


def _event_cond(spec: str, alias: str = "a") -> str:
    if spec == "@all":
        return "1 = 1"
    if spec == "@user":
        return f"{alias}.event NOT IN {sql_list(BRAND_EVENTS)}"
    if spec.startswith("@"):
        if spec[1:] not in FAMILIES:
            raise ValueError(f"unknown family {spec}")
        return f"{alias}.fam = '{spec[1:]}'"
    return f"{alias}.event IN {sql_list(spec.split('+'))}"


class Compiled:
    """Stage-1 aggregates collected from feature expressions, and the rewritten expressions."""

    def __init__(self, feats: list[Feature], lookbacks: list[int]) -> None:
        self.windowed: dict[str, str] = {}
        self.lifetime: dict[str, str] = {}
        self.max_window = 1
        self.lookbacks = lookbacks
        self.exprs = {f.name: _PH.sub(self._ref, f.expr) for f in feats}

    def _ref(self, m: re.Match) -> str:
        kind, arg = m.group(1), m.group(2)
        if kind == "d":
            return "k.d"
        if kind == "days_in_tier":
            cases = " ".join(f"WHEN coalesce(g{w}.tier_rank, -1) <> t.tier_rank THEN {prev}"
                             for prev, w in zip([0, *self.lookbacks], self.lookbacks))
            return f"CASE {cases} ELSE {self.lookbacks[-1]} END"
        if kind in _WINDOWED:
            ev, hi, *lo = arg.split(":")
            hi, lo = int(hi), int(lo[0]) if lo else 0
            self.max_window = max(self.max_window, hi)
            cond = f"{_event_cond(ev)} AND a.b > i.d - {hi} AND a.b <= i.d - {lo}"
            sql = (f"count(DISTINCT CASE WHEN {cond} THEN a.b END)" if kind == "days"
                   else f"sum(CASE WHEN {cond} THEN {_WINDOWED[kind]} ELSE 0 END)")
            alias = self.windowed.setdefault(sql, f"w{len(self.windowed)}")
            return f"coalesce(w.{alias}, 0)"
        if kind in _LIFETIME:
            cond = _event_cond(arg)
            if kind in ("last", "first"):
                sql = f"{'max' if kind == 'last' else 'min'}(CASE WHEN {cond} THEN a.b END)"
            else:
                sql = f"sum(CASE WHEN {cond} THEN a.{_LIFETIME[kind]} ELSE 0 END)"
            alias = self.lifetime.setdefault(sql, f"l{len(self.lifetime)}")
            return f"l.{alias}" if kind in ("last", "first") else f"coalesce(l.{alias}, 0)"
        raise ValueError(f"unknown placeholder {m.group(0)}")


def tier_days(days: list[int], cfg: Config) -> list[int]:
    """Every day the ladder features need tiers at: the cutoffs and their lookbacks."""
    back = sorted({*cfg.windows.feature_windows, cfg.windows.period_days})
    return sorted({d - b for d in days for b in [0, *back]})


def feature_sql(facts: Facts, tiers: str, days: list[int], cfg: Config) -> tuple[str, list[str]]:
    """SQL for the features at each cutoff day; tiers must hold tier_sql at tier_days(days)."""
    feats = registry_for(cfg)
    lookbacks = sorted(cfg.windows.feature_windows)
    c = Compiled(feats, lookbacks)
    ds = sorted(days)
    slot = "CASE " + " ".join(f"WHEN a.b <= {d} THEN {d}" for d in ds) + " END"
    cum = lambda fn, a: f"{fn}(l1.{a}) OVER (PARTITION BY g.user_id ORDER BY g.d ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS {a}"  # noqa: E501
    life_cols = ", ".join(f"{sql} AS {a}" for sql, a in c.lifetime.items())
    life_cum = ", ".join(cum("max" if s.startswith("max") else "min" if s.startswith("min") else "sum", a)
                         for s, a in c.lifetime.items())
    win_cols = ", ".join(f"{sql} AS {a}" for sql, a in c.windowed.items())
    grid = " ".join(f"LEFT JOIN {tiers} g{w} ON g{w}.user_id = k.user_id AND g{w}.d = k.d - {w}"
                    for w in lookbacks)
    outs = ", ".join(f"CAST({e} AS DOUBLE) AS {n}" for n, e in c.exprs.items())
    sql = f"""
    WITH w AS (
        SELECT a.user_id, i.d, {win_cols}
        FROM {facts.daily} a JOIN {instants_table(ds)} i ON a.b > i.d - {c.max_window} AND a.b <= i.d
        GROUP BY a.user_id, i.d),
    l1 AS (
        SELECT a.user_id, {slot} AS d, {life_cols}
        FROM {facts.daily} a WHERE a.b <= {ds[-1]} GROUP BY a.user_id, {slot}),
    g AS (
        SELECT f.user_id, i.d FROM (SELECT user_id, min(d) AS d0 FROM l1 GROUP BY user_id) f
        JOIN {instants_table(ds)} i ON i.d >= f.d0),
    l AS (
        SELECT g.user_id, g.d, {life_cum}
        FROM g LEFT JOIN l1 ON l1.user_id = g.user_id AND l1.d = g.d)
    SELECT k.user_id, k.d, {outs}
    FROM {tiers} k
    JOIN {tiers} t ON t.user_id = k.user_id AND t.d = k.d
    LEFT JOIN {tiers} prev ON prev.user_id = k.user_id AND prev.d = k.d - {cfg.windows.period_days}
    {grid}
    LEFT JOIN w ON w.user_id = k.user_id AND w.d = k.d
    LEFT JOIN l ON l.user_id = k.user_id AND l.d = k.d
    WHERE k.d IN ({", ".join(str(d) for d in ds)})"""
    return sql, [f.name for f in feats]


def family_first_days(run: Runner, facts: Facts) -> dict[str, int]:
    """Day number at which each event family first occurs in the facts."""
    df = run.df(f"SELECT fam, min(b) AS b FROM {facts.daily} GROUP BY fam")
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
    from siyu.features.tiers import tier_sql

    facts = build_facts(run, events, list(cutoffs))
    days = sorted({split_instant(c)[0] for c in cutoffs})
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
