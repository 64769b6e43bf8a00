"""Compiles the registry's feature expressions (their `{...}` placeholders) into SQL pieces.

Three aggregation levels keep many cutoffs cheap: per (user, interval) pivots
of the interval facts; per (user, cutoff, slot) sums, where slots cut the days
before a cutoff at every window end; per (user, cutoff) window sums over slots.
History older than every window is grouped once and shared between cutoffs.
"""

from __future__ import annotations

import re

from siyu.features.contract import BRAND_EVENTS, EVENTS, FAMILIES
from siyu.features.facts import MASK_DAYS
from siyu.features.registry import Feature

_PH = re.compile(r"\{(\w+)(?::([^}]*))?\}")
_WINDOWED = {"n": "a.n", "amt": "a.amt", "coupon": "a.n_coupon"}
_DAYS = ("@user", "purchase")
_LIFETIME = {"ln": "n", "lamt": "amt", "lcoupon": "n_coupon", "lrsum": "rating_sum", "lrn": "rating_n",
             "last": "max_b", "first": "min_b"}


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
