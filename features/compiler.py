"""Compiles the registry's feature expressions (their `{...}` placeholders) into SQL pieces.

Every placeholder becomes one aggregate over the interval facts of a user,
computed per cutoff straight from the facts: a window is a condition on the
interval label `e` (intervals are cut at every window end), so one pass over
the facts groups by user alone. Grouping by user alone (one group per user,
like the bare `GROUP BY user_id` floor) is what makes this fast: pivoting per
(user, interval) first costs a hash table ten times larger. Facts older than
every window feed only the lifetime aggregates (a second, narrow pass), so
they are not run through some eighty window sums that are all zero for them.
"""

from __future__ import annotations

import re

from features.catalog import Feature
from features.facts import MASK_DAYS
from siyu.contract import BRAND_EVENTS, EVENTS, FAMILIES

_PH = re.compile(r"\{(\w+)(?::([^}]*))?\}")
_WINDOWED = {"n": "a.n", "amt": "a.amt", "coupon": "a.n_coupon"}
_DAYS = ("@user", "purchase")
_LIFETIME = {
    "ln": "n",
    "lamt": "amt",
    "lcoupon": "n_coupon",
    "lrsum": "rating_sum",
    "lrn": "rating_n",
    "last": "max_b",
    "first": "min_b",
}
_D = "__D__"  # the cutoff day, filled in per cutoff


def event_cond(spec: str, alias: str = "a") -> str:
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
    """The feature expressions compiled into per-user aggregates over the interval facts.

    `aggregates` maps each aggregate's SQL (the cutoff day as a placeholder) to its alias
    `wN`; `exprs` maps each feature to its SQL over `t` (the tiers at the cutoff, with every `wN`
    beside them) and the lookback tiers.
    """

    def __init__(self, feats: list[Feature], lookbacks: list[int]) -> None:
        self.aggregates: dict[str, str] = {}
        self.lifetime: dict[str, str] = {}  # alias -> how two partial values combine (sum, min, max)
        self.user_days: set[str] = set()  # aliases computed over the user-days facts
        self.offsets: set[int] = {0}
        self.max_days = 0
        self.lookbacks = lookbacks
        self.rhythm = False  # some feature reads the purchase-rhythm CTE (compute.rhythm_sql)
        self.exprs = {f.name: _PH.sub(self._ref, f.expr) for f in feats}

    def _agg(self, sql: str, lifetime: str | None = None, user_days: bool = False) -> str:
        alias = self.aggregates.setdefault(sql, f"w{len(self.aggregates)}")
        if lifetime:
            self.lifetime[alias] = lifetime
        if user_days:
            self.user_days.add(alias)
        return alias

    def _ref(self, m: re.Match) -> str:
        kind, arg = m.group(1), m.group(2)
        if kind == "d":
            return "t.d"
        if kind == "gap":
            if arg not in ("mean", "sd", "n", "first"):
                raise ValueError(f"unknown rhythm statistic {m.group(0)}")
            self.rhythm = True
            return f"t.gap_{arg}"
        if kind == "days_in_tier":
            cases = " ".join(
                f"WHEN coalesce(g{w}.tier_rank, -1) <> t.tier_rank THEN {prev}"
                for prev, w in zip([0, *self.lookbacks], self.lookbacks)
            )
            return f"CASE {cases} ELSE {self.lookbacks[-1]} END"
        if kind in _WINDOWED or kind == "days":
            ev, hi, *lo = arg.split(":")
            hi, lo = int(hi), int(lo[0]) if lo else 0
            self.offsets |= {hi, lo}
            window = f"a.e > {_D} - {hi} AND a.e <= {_D} - {lo}"
            if kind == "days":
                if ev not in _DAYS:
                    raise ValueError(f"distinct days are tracked for {sorted(_DAYS)} only, not {ev}")
                self.max_days = max(self.max_days, hi)
                # Intervals are disjoint and each is under MASK_DAYS long: distinct days add up.
                # Any user-side event counts, so its masks come OR-ed per interval (user-days facts).
                cond = window if ev == "@user" else f"{event_cond(ev)} AND {window}"
                sql = f"sum(CASE WHEN {cond} THEN CAST(bit_count(a.mask) AS DOUBLE) END)"
                return f"coalesce(t.{self._agg(sql, user_days=ev == '@user')}, 0)"
            sql = f"sum(CASE WHEN {event_cond(ev)} AND {window} THEN {_WINDOWED[kind]} END)"
            return f"coalesce(t.{self._agg(sql)}, 0)"
        if kind in _LIFETIME:
            col, cond = _LIFETIME[kind], event_cond(arg)
            if kind in ("last", "first"):
                fn = "max" if kind == "last" else "min"
                return f"t.{self._agg(f'{fn}(CASE WHEN {cond} THEN a.{col} END)', fn)}"
            return f"coalesce(t.{self._agg(f'sum(CASE WHEN {cond} THEN a.{col} END)', 'sum')}, 0)"
        raise ValueError(f"unknown placeholder {m.group(0)}")

    def bound_offsets(self) -> set[int]:
        """Days before d where intervals must be cut (distinct-day intervals stay under MASK_DAYS)."""
        step = MASK_DAYS - 2
        return self.offsets | set(range(0, self.max_days + step, step))

    @property
    def span(self) -> int:
        """Days before the cutoff that any window reaches back; older facts feed lifetime values only."""
        return max(self.offsets)

    def aggregates_sql(self, day: int, part: str) -> str:
        """The SELECT list of one part's aggregates at cutoff day `day`.

        Args:
            day: the cutoff's day number.
            part: "recent" (interval facts within `span`: every aggregate but the user-days ones),
                "old" (older interval facts: lifetime aggregates) or "user_days" (user-days facts).
        """
        keep = {
            "recent": lambda a: a not in self.user_days,
            "old": lambda a: a in self.lifetime,
            "user_days": lambda a: a in self.user_days,
        }[part]
        return ", ".join(f"{sql.replace(_D, str(int(day)))} AS {a}" for sql, a in self.aggregates.items() if keep(a))

    def _merge(self, a: str, x: str, y: str) -> str:
        # DuckDB's and Spark's least/greatest skip NULLs: a side without such facts leaves the other.
        way = {"sum": "coalesce({x}, 0) + coalesce({y}, 0)", "min": "least({x}, {y})", "max": "greatest({x}, {y})"}
        return way[self.lifetime[a]].format(x=f"{x}.{a}", y=f"{y}.{a}") + f" AS {a}"

    def accumulated_sql(self, before: str, block: str) -> str:
        """The SELECT list adding one block's lifetime aggregates to those of the blocks before it."""
        return ", ".join(self._merge(a, before, block) for a in self.aggregates.values() if a in self.lifetime)

    def combined_sql(self, recent: str, old: str, user_days: str) -> str:
        """The SELECT list putting the three parts' aggregates together (lifetime = recent + old)."""
        out = []
        for a in self.aggregates.values():
            if a in self.user_days:
                out.append(f"{user_days}.{a} AS {a}")
            elif a in self.lifetime:
                out.append(self._merge(a, recent, old))
            else:
                out.append(f"{recent}.{a} AS {a}")
        return ", ".join(out)
