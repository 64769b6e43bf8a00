"""Day facts of the event store, and the fact tables of features/facts.py built from them (docs/design.md §8).

At ingest every changed date gets its *day facts* (one file per kind, Hive partition date=):
`iv` per (user, event code, bucket) with the counts and sums of facts.build_facts; `states` the
last channel / membership change per (user, channel, bucket) with its ts; `orders` the purchase
rows and `refunds` the refund rows with an order_id (rare: kept as rows so the cancel rule sees
exactly the rows it sees on the log). A finished month of buckets also gets a `months` block
per (user, event code): the same sums, min / max bucket and a day mask (bit j = a fact on the
block's last bucket - j).

Buckets here are cut at midnight (offset 0); facts.build_facts on a store uses these files for
bare-date cutoffs and falls back to the stored rows for a cutoff at another time of day.
An interval of the facts is a union of whole buckets, so its sums, min, max and day mask are
those of its buckets: the fact tables come out the same as from the rows (sums of doubles up to
rounding order). A block stands in for the buckets of its month when they all fall in one
interval (every month wholly at or before the first bound, and a month a later interval holds
whole); its mask shifted by (that interval's end - block end) gives exactly the bits the rows would.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from events.store import MARKER, fact_files, parquet_list, read_manifest
from features.facts import (
    EPOCH,
    KEY_BASE,
    MASK_DAYS,
    Facts,
    Runner,
    bucket_sql,
    day_sql,
    event_code,
    interval_sql,
    orders_sql,
    split_instant,
    sql_array,
    sql_list,
    users_sql,
)
from siyu.contract import CONNECT_EVENTS, DISCONNECT_EVENTS, MEMBERSHIP_EVENTS

KINDS = ("iv", "states", "orders", "refunds")
SCHEMAS = {
    "iv": "user_id VARCHAR, ev INTEGER, b INTEGER, n DOUBLE, amt DOUBLE, n_coupon DOUBLE, rating_sum DOUBLE, "
    "rating_n DOUBLE",
    "states": "user_id VARCHAR, chan VARCHAR, b INTEGER, ts TIMESTAMP, is_open INTEGER",
    "orders": "user_id VARCHAR, order_id VARCHAR, ts TIMESTAMP, cday INTEGER, b INTEGER, amount DOUBLE, coupon INTEGER",
    "refunds": "user_id VARCHAR, order_id VARCHAR, b INTEGER, amount DOUBLE",
    "months": "user_id VARCHAR, ev INTEGER, n DOUBLE, amt DOUBLE, n_coupon DOUBLE, rating_sum DOUBLE, "
    "rating_n DOUBLE, min_b INTEGER, max_b INTEGER, dmask BIGINT, block_end INTEGER",
}
_CHAN = {**CONNECT_EVENTS, **DISCONNECT_EVENTS, **{e: "member" for e in MEMBERSHIP_EVENTS}}
_OPENING = sql_list([*CONNECT_EVENTS, *(e for e, v in MEMBERSHIP_EVENTS.items() if v)])


def day_number(d: date) -> int:
    """Days since 1970-01-01."""
    return (d - EPOCH).days


def month_range(month: str) -> tuple[int, int]:
    """(first, last) bucket day numbers of a month 'YYYY-MM'."""
    y, m = map(int, month.split("-"))
    first = date(y, m, 1)
    nxt = date(y + (m == 12), m % 12 + 1, 1)
    return day_number(first), day_number(nxt - timedelta(days=1))


def month_of(day: int) -> str:
    """'YYYY-MM' of a day number."""
    return (EPOCH + timedelta(days=int(day))).strftime("%Y-%m")


def day_facts_sql(events: str) -> dict[str, str]:
    """SQL of each kind of day facts over canonical events (each with a `date` column, the event's date)."""
    b = f"CAST({bucket_sql(0)} AS INTEGER)"
    chan = "CASE event " + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in _CHAN.items()) + " END"
    return {
        "iv": f"""SELECT date, user_id, ev, b, CAST(count(*) AS DOUBLE) AS n, sum(amount) AS amt,
                         CAST(count(CASE WHEN coupon THEN 1 END) AS DOUBLE) AS n_coupon,
                         sum(CAST(rating AS DOUBLE)) AS rating_sum, CAST(count(rating) AS DOUBLE) AS rating_n
                  FROM (SELECT CAST(ts AS DATE) AS date, user_id, {event_code("event")} AS ev, {b} AS b,
                               amount, coupon, rating FROM {events}) x
                  GROUP BY date, user_id, ev, b""",
        "states": f"""SELECT date, user_id, chan, b, ts, is_open FROM (
                        SELECT *, row_number() OVER (PARTITION BY date, user_id, chan, b
                                                     ORDER BY ts DESC, is_open ASC) AS rn
                        FROM (SELECT CAST(ts AS DATE) AS date, user_id, {b} AS b, ts, {chan} AS chan,
                                     CASE WHEN event IN {_OPENING} THEN 1 ELSE 0 END AS is_open
                              FROM {events} WHERE array_position({sql_array(_CHAN)}, event) IS NOT NULL) x) y
                      WHERE rn = 1""",
        "orders": f"""SELECT CAST(ts AS DATE) AS date, user_id, order_id, ts, CAST({day_sql("ts")} AS INTEGER) AS cday,
                             {b} AS b, amount, CASE WHEN coupon THEN 1 ELSE 0 END AS coupon
                      FROM {events} WHERE event = 'purchase'""",
        "refunds": f"""SELECT CAST(ts AS DATE) AS date, user_id, order_id, {b} AS b, amount
                       FROM {events} WHERE event = 'refund' AND order_id IS NOT NULL""",
    }


def months_sql(iv: str, months: list[str]) -> str:
    """SQL of the month blocks (column `month`) of these months over day `iv` facts."""
    ranges = " UNION ALL ".join(
        f"SELECT '{m}' AS month, {lo} AS lo, {hi} AS hi" for m, (lo, hi) in ((m, month_range(m)) for m in months)
    )
    return f"""SELECT r.month, a.user_id, a.ev, sum(a.n) AS n, sum(a.amt) AS amt, sum(a.n_coupon) AS n_coupon,
                      sum(a.rating_sum) AS rating_sum, sum(a.rating_n) AS rating_n, min(a.b) AS min_b,
                      max(a.b) AS max_b, bit_or(CAST(1 AS BIGINT) << CAST(r.hi - a.b AS INTEGER)) AS dmask,
                      CAST(r.hi AS INTEGER) AS block_end
               FROM {iv} a JOIN ({ranges}) r ON a.b BETWEEN r.lo AND r.hi
               GROUP BY r.month, r.hi, a.user_id, a.ev"""


def _source(run: Runner, name: str, files: list[str], kind: str) -> str:
    """Register the files of one kind as view `name` on the runner's engine (typed and empty when none)."""
    cols = [c.split()[0] for c in SCHEMAS[kind].split(", ")]
    if not files:
        nulls = ", ".join(f"CAST(NULL AS {c.split(' ', 1)[1]}) AS {c.split()[0]}" for c in SCHEMAS[kind].split(", "))
        sql = f"SELECT {nulls} FROM (SELECT 1 AS x) z WHERE x = 0"
    if hasattr(run, "spark"):  # features.spark.SparkRunner: the same files through Spark's reader
        if files:
            run.spark.read.parquet(*files).selectExpr(*cols).createOrReplaceTempView(name)
        else:
            run.table(name, sql)
    else:
        sql = f"SELECT {', '.join(cols)} FROM {parquet_list(files)}" if files else sql
        run.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")
    return name


def _drop_source(run: Runner, name: str) -> None:
    if hasattr(run, "spark"):
        run.drop([name])
    else:
        run.con.execute(f"DROP VIEW IF EXISTS {name}")


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def _interval_of(span: tuple[int, int], bounds: list[int]) -> int | None:
    """The interval label `e` (facts.interval_sql) shared by every bucket of `span`, or None when none is."""
    lo, hi = span
    e = next((x for x in bounds if x >= hi), None)
    if e is None:
        return None
    below = [x for x in bounds if x < e]
    return e if not below or below[-1] < lo else None


def facts_from_store(run: Runner, events: str, instants, bounds: set[int]) -> Facts | None:
    """facts.build_facts from the day facts of the store behind `events`; None when it is no store view.

    Also None for cutoffs at a time of day other than midnight (the day facts are cut at midnight):
    build_facts then reads the stored rows through the view.
    """
    try:
        store = str(run.df(f"SELECT store FROM {events}{MARKER}")["store"].iloc[0])
    except Exception:  # noqa: BLE001 - no marker table: a plain events table
        return None
    split = {split_instant(t) for t in instants}
    if {o for _, o in split} != {0}:
        return None
    m = read_manifest(store)
    bs = sorted(set(bounds) | {d for d, _ in split})
    first, last = bs[0], bs[-1]
    p = f"_siyu_{uuid.uuid4().hex[:10]}"
    # A month's block stands in for its buckets when they all fall in one interval: those at or
    # before the first bound (lifetime values and old masks) and any month a later interval holds whole.
    home = {k: _interval_of(month_range(k), bs) for k in m["facts"]["months"]}
    blocks = sorted(k for k, e in home.items() if e is not None)
    covered = _merged([month_range(k) for k in blocks])

    # A date's facts sit in buckets date and date + 1: skip its file only when both are in blocks.
    def inside(x: int) -> bool:
        return any(lo <= x <= hi for lo, hi in covered)

    dates = [d for d in m["facts"]["iv"] if not all(inside(day_number(date.fromisoformat(d)) + j) for j in (0, 1))]
    src = {k: _source(run, f"{p}_src_{k}", fact_files(store, m, k), k) for k in ("states", "orders", "refunds")}
    src["iv"] = _source(run, f"{p}_src_iv", fact_files(store, m, "iv", dates), "iv")
    src["months"] = _source(run, f"{p}_src_months", fact_files(store, m, "months", blocks), "months")
    not_in_blocks = " ".join(f"AND NOT (b BETWEEN {lo} AND {hi})" for lo, hi in covered)
    block_e = (
        "CASE block_end " + " ".join(f"WHEN {month_range(k)[1]} THEN {home[k]}" for k in blocks) + " END"
        if blocks
        else str(first)
    )
    shift = f"({block_e} - block_end)"
    block_bits = (
        f"CASE WHEN {shift} < {MASK_DAYS} THEN nullif((dmask & ((CAST(1 AS BIGINT) << CAST({MASK_DAYS} - {shift} "
        f"AS INTEGER)) - 1)) << CAST({shift} AS INTEGER), 0) END"
    )
    f = Facts(p, 0, f"{p}_iv", f"{p}_states", f"{p}_orders", f"{p}_users", tuple(bs))
    try:
        run.table(
            f.iv,
            f"""
            SELECT user_id, k // {KEY_BASE} + {first} AS e, k % {KEY_BASE} AS ev, sum(n) AS n, sum(amt) AS amt,
                   sum(n_coupon) AS n_coupon, sum(rating_sum) AS rating_sum, sum(rating_n) AS rating_n,
                   min(min_b) AS min_b, max(max_b) AS max_b, bit_or(bits) AS mask
            FROM (SELECT *, (e - {first}) * {KEY_BASE} + ev AS k FROM (
                    SELECT user_id, ev, n, amt, n_coupon, rating_sum, rating_n, b AS min_b, b AS max_b, e,
                           CASE WHEN e - b < {MASK_DAYS} THEN CAST(1 AS BIGINT) << CAST(e - b AS INTEGER) END AS bits
                    FROM (SELECT *, {interval_sql(bs)} AS e FROM {src["iv"]} WHERE b <= {last} {not_in_blocks}) x
                    UNION ALL
                    SELECT user_id, ev, n, amt, n_coupon, rating_sum, rating_n, min_b, max_b, {block_e} AS e,
                           {block_bits} AS bits
                    FROM {src["months"]}) y) z
            GROUP BY user_id, k""",
        )
        run.table(
            f.states,
            f"""
            SELECT user_id, chan, b, lead(b) OVER (PARTITION BY user_id, chan ORDER BY b) AS b_next, is_open
            FROM (SELECT user_id, chan, b, is_open, row_number() OVER (
                      PARTITION BY user_id, chan, b ORDER BY ts DESC, is_open ASC) AS rn
                  FROM {src["states"]} WHERE b <= {last}) y
            WHERE rn = 1""",
        )
        run.table(
            f.orders,
            orders_sql(f"SELECT * FROM {src['orders']} WHERE b <= {last}", f"{src['refunds']} WHERE b <= {last}"),
        )
        run.table(f.users, users_sql(f.iv))
    finally:
        for name in src.values():
            _drop_source(run, name)
    return f
