"""Day buckets and compact fact tables that tiers, labels and features share.

Every later query reads these facts instead of the raw log, so a training
table over many cutoffs scans the log once. Time is cut into *buckets*: the
bucket `b` of an event is the number of the first cutoff-aligned day
boundary at or after its timestamp, so `ts <= T` is exactly `b <= day(T)`
and `ts in (T - w days, T]` is exactly `b in (day(T) - w, day(T)]` for every
instant T with the same time of day. Day numbers are plain integers (days
since 1970-01-01) so DuckDB and Spark agree on all arithmetic.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from siyu.contract import (
    BRAND_EVENTS,
    CONNECT_EVENTS,
    DISCONNECT_EVENTS,
    EVENTS,
    MEMBERSHIP_EVENTS,
)
from siyu.errors import SiyuError

EPOCH = date(1970, 1, 1)


def sql_list(items) -> str:
    """A SQL literal list: ('a', 'b')."""
    return "(" + ", ".join(f"'{i}'" for i in items) + ")"


def sql_array(items) -> str:
    """A SQL list literal in the given order: ['a', 'b'] (for array_position lookups)."""
    return "[" + ", ".join(f"'{i}'" for i in items) + "]"


def codes_list(events) -> str:
    """A SQL list of the event codes (`ev`, index in contract.EVENTS) of these event names: (3, 7)."""
    return "(" + ", ".join(str(EVENTS.index(e)) for e in sorted(events)) + ")"


def day_sql(expr: str) -> str:
    """SQL for the integer day number of a TIMESTAMP expression (cast to DATE first: engines agree)."""
    return f"date_diff('day', DATE '1970-01-01', CAST({expr} AS DATE))"


def split_instant(t: datetime) -> tuple[int, int]:
    """An instant as (day number of its day boundary, seconds after midnight)."""
    if not isinstance(t, datetime):
        t = datetime(t.year, t.month, t.day)
    midnight = datetime(t.year, t.month, t.day)
    return (midnight.date() - EPOCH).days, int((t - midnight).total_seconds())


def instant_of(day: int, offset: int) -> datetime:
    """Inverse of split_instant."""
    return datetime(1970, 1, 1) + timedelta(days=day, seconds=offset)


def instants_of(days: np.ndarray, offset: int) -> np.ndarray:
    """instant_of for an array of day numbers, as datetime64[us] (the engines' `d` column -> cutoff)."""
    return (np.asarray(days, dtype="int64") * 86400 + offset).astype("datetime64[s]").astype("datetime64[us]")


def floats(col, order: np.ndarray | None = None) -> np.ndarray:
    """An engine column (masked or object where NULL) as float64 with NaN for NULL, in a new array.

    Args:
        col: the column.
        order: row positions to take, in order (default: all, as they are).
    """
    if np.ma.isMaskedArray(col):
        out = np.asarray(col.data, dtype="float64")
        out = out.take(order) if order is not None else out.copy()
        mask = np.ma.getmaskarray(col)
        out[mask if order is None else mask.take(order)] = np.nan
        return out
    if col.dtype == object:
        col = pd.array(col, dtype="Float64").to_numpy("float64", na_value=np.nan)
    col = np.asarray(col, dtype="float64")
    return col.take(order) if order is not None else col.copy()


class Runner:
    """Runs SQL written in DuckDB's dialect on an engine; this one is DuckDB."""

    def __init__(self, con) -> None:
        self.con = con

    def table(self, name: str, sql: str) -> None:
        """Materialise `sql` as a temporary table `name`."""
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")

    def df(self, sql: str) -> pd.DataFrame:
        """Run a query and return a pandas DataFrame."""
        return self.con.execute(sql).df()

    def arrays(self, sql: str) -> dict[str, np.ndarray]:
        """Run a query and return its columns as arrays (masked where NULL); no DataFrame in between."""
        return self.con.execute(sql).fetchnumpy()

    def drop(self, names) -> None:
        """Drop temporary tables."""
        for n in names:
            self.con.execute(f"DROP TABLE IF EXISTS {n}")

    def columns(self, name: str) -> list[str]:
        """Column names of a table or view."""
        return [r[0] for r in self.con.execute(f"SELECT * FROM {name} LIMIT 0").description]


KEY_BASE = 1 << (len(EVENTS) - 1).bit_length()
"""A power of two above every event code: the facts group by one key, interval * KEY_BASE + code."""

MASK_DAYS = 62
"""Longest interval whose distinct days are tracked exactly (one bit per day in a signed BIGINT)."""


@dataclass
class Facts:
    """Names of the fact tables built for one set of interval boundaries."""

    prefix: str
    offset: int
    iv: str  # user_id, e, ev (EVENTS index), n, amt, n_coupon, rating_sum, rating_n, min_b, max_b, mask
    states: str  # user_id, chan, b, b_next, is_open  (chan 'member' = membership)
    orders: str  # user_id, cday, b, amount, coupon, cancel_b
    users: str  # user_id, first_b, first_user_b
    bounds: tuple[int, ...] = ()

    def names(self) -> list[str]:
        return [self.iv, self.states, self.orders, self.users]


def event_code(col: str) -> str:
    """SQL: the event's index in contract.EVENTS (families are contiguous ranges of it)."""
    # A list lookup costs a third of a 24-branch CASE per row (both engines count positions from 1).
    return f"CAST(array_position({sql_array(EVENTS)}, {col}) - 1 AS INTEGER)"


def _case(mapping: dict[str, str], col: str = "event") -> str:
    whens = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in mapping.items())
    return f"CASE {col} {whens} END"


def bucket_sql(offset: int) -> str:
    """SQL for an event's bucket `b`: the first day boundary (midnight + `offset` seconds) at or after `ts`."""
    s = f"(ts - INTERVAL '{offset}' SECOND)" if offset else "ts"
    return f"({day_sql(s)} + CASE WHEN {s} = CAST(CAST({s} AS DATE) AS TIMESTAMP) THEN 0 ELSE 1 END)"


def interval_sql(bounds: list[int]) -> str:
    """SQL for a bucket's interval label `e`: the first of the sorted `bounds` at or after `b`."""
    return "CASE " + " ".join(f"WHEN b <= {x} THEN {x}" for x in bounds) + " END"


def orders_sql(purchases: str, refunds: str) -> str:
    """SQL of the orders fact table from purchase rows (user_id, order_id, ts, cday, b, amount, coupon) and
    refund rows (user_id, order_id, b, amount): an order is cancelled from the bucket where its refunds
    add up to its amount. Shared by the raw-log build and the event store's (features/store_facts.py)."""
    return f"""
        WITH pur AS ({purchases}),
             ref AS (SELECT user_id, order_id, b,
                            sum(sum(amount)) OVER (PARTITION BY user_id, order_id ORDER BY b
                                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cum
                     FROM {refunds}
                     GROUP BY user_id, order_id, b)
        SELECT pur.user_id, pur.cday, pur.b, pur.amount, pur.coupon, min(ref.b) AS cancel_b
        FROM pur LEFT JOIN ref ON ref.user_id = pur.user_id AND ref.order_id = pur.order_id
                               AND ref.cum >= pur.amount
        GROUP BY pur.user_id, pur.order_id, pur.ts, pur.cday, pur.b, pur.amount, pur.coupon"""


def users_sql(iv: str) -> str:
    """SQL of the users fact table (first bucket, first user-side bucket) from the interval facts `iv`."""
    return f"""
        SELECT user_id, min(min_b) AS first_b,
               min(CASE WHEN ev NOT IN {codes_list(BRAND_EVENTS)} THEN min_b END) AS first_user_b
        FROM {iv} GROUP BY user_id"""


def build_facts(run: Runner, events: str, instants: list[datetime], bounds: set[int]) -> Facts:
    """Aggregate the log once into the fact tables the given interval boundaries need.

    Events are grouped per (user, event, interval) where intervals are cut at
    `bounds` (day numbers, each interval labelled `e` by its upper bound): any
    window (d - hi, d - lo] whose ends are boundaries is then a sum of intervals.

    Args:
        run: the engine runner.
        events: name of the canonical events table.
        instants: every instant asked about; all share one time of day (fixes the buckets).
        bounds: every window end any query will use, as day numbers.

    Returns:
        The Facts naming the temporary tables (drop them with run.drop(facts.names())).
    """
    split = {split_instant(t) for t in instants}
    offsets = {o for _, o in split}
    if len(offsets) != 1:
        raise SiyuError("cutoffs in one call must share the same time of day")
    from features.store_facts import facts_from_store  # it builds on this module

    stored = facts_from_store(run, events, instants, bounds)  # `events` is an event store's view
    if stored is not None:
        return stored
    offset = offsets.pop()
    bs = sorted(set(bounds) | {d for d, _ in split})
    last = bs[-1]
    p = f"_siyu_{uuid.uuid4().hex[:10]}"
    bucket = bucket_sql(offset)

    def ev(where: str = "1 = 1") -> str:
        # Rows are filtered before their bucket is computed (a bucket per row of the log costs).
        return (
            f"(SELECT * FROM (SELECT user_id, ts, event, amount, coupon, rating, order_id, "
            f"CAST({bucket} AS INTEGER) AS b FROM {events} WHERE {where}) z WHERE b <= {last})"
        )

    f = Facts(p, offset, f"{p}_iv", f"{p}_states", f"{p}_orders", f"{p}_users", tuple(bs))
    interval = interval_sql(bs)
    bit = f"CASE WHEN e - b < {MASK_DAYS} THEN CAST(1 AS BIGINT) << CAST(e - b AS INTEGER) END"
    # One key for (interval, event) instead of two hashes and compares faster (1M users, 21.6M
    # groups: 46-55 s of CPU against 48-56 s in three A/B pairs); it counts from the first bound,
    # so it is never negative and // and % split it the same way on every engine.
    run.table(
        f.iv,
        f"""
        SELECT user_id, k // {KEY_BASE} + {bs[0]} AS e, k % {KEY_BASE} AS ev,
               CAST(count(*) AS DOUBLE) AS n, sum(amount) AS amt,
               CAST(count(CASE WHEN coupon THEN 1 END) AS DOUBLE) AS n_coupon,
               sum(CAST(rating AS DOUBLE)) AS rating_sum, CAST(count(rating) AS DOUBLE) AS rating_n,
               min(b) AS min_b, max(b) AS max_b, bit_or({bit}) AS mask
        FROM (SELECT *, (e - {bs[0]}) * {KEY_BASE} + ev AS k
              FROM (SELECT user_id, {event_code("event")} AS ev, amount, coupon, rating, b, {interval} AS e
                    FROM {ev()} y) x) z
        GROUP BY user_id, k""",
    )  # an integer event code groups faster and smaller than the name;
    # INTEGER days and DOUBLE measures keep each group's state small (DuckDB sums integers into HUGEINT)
    chan = {**CONNECT_EVENTS, **DISCONNECT_EVENTS, **{e: "member" for e in MEMBERSHIP_EVENTS}}
    opening = sql_list([*CONNECT_EVENTS, *(e for e, v in MEMBERSHIP_EVENTS.items() if v)])
    # The last state change of each bucket decides; at the same timestamp a close wins. A list
    # lookup finds the channel events 4x faster than `event IN (...)`, which DuckDB tests one by one.
    run.table(
        f.states,
        f"""
        SELECT user_id, chan, b, lead(b) OVER (PARTITION BY user_id, chan ORDER BY b) AS b_next, is_open
        FROM (SELECT user_id, chan, b, is_open, row_number() OVER (
                  PARTITION BY user_id, chan, b ORDER BY ts DESC, is_open ASC) AS rn
              FROM (SELECT user_id, b, ts, {_case(chan)} AS chan,
                           CASE WHEN event IN {opening} THEN 1 ELSE 0 END AS is_open
                    FROM {ev(f"array_position({sql_array(chan)}, event) IS NOT NULL")} w) x) y
        WHERE rn = 1""",
    )
    # An order is cancelled from the bucket where refunds with its order_id add up to its amount.
    bought = ev("event = 'purchase'")
    pur = (
        f"SELECT user_id, order_id, ts, {day_sql('ts')} AS cday, b, amount, "
        f"CASE WHEN coupon THEN 1 ELSE 0 END AS coupon FROM {bought}"
    )
    run.table(f.orders, orders_sql(pur, ev("event = 'refund' AND order_id IS NOT NULL")))
    run.table(f.users, users_sql(f.iv))
    return f


def pairs_table(bounds, days, hi: int | None = None, lo: int = 0) -> str:
    """An inline table `(e, d)` of interval labels e with d - hi < e <= d - lo, for a hash join.

    Joining facts on equality with this small table is much faster than a range join.
    """
    rows = [(e, d) for d in sorted(set(days)) for e in bounds if e <= d - lo and (hi is None or e > d - hi)]
    if not rows:
        return "(SELECT CAST(NULL AS INTEGER) AS e, CAST(NULL AS INTEGER) AS d)"
    return "(" + " UNION ALL ".join(f"SELECT {e} AS e, {d} AS d" for e, d in rows) + ")"


def instants_table(days: list[int]) -> str:
    """An inline one-column table `(d)` of day numbers."""
    return "(" + " UNION ALL ".join(f"SELECT {int(d)} AS d" for d in sorted(set(days))) + ")"
