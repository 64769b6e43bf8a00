"""Validation of an event log against the contract (docs/design.md §2), in DuckDB.

Every row read ends up in exactly one place: accepted, quarantined (with the
first rule it breaks), or counted as an exact duplicate of an accepted row.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from events.loader import amount_sql, connect, event_sql, refuse_bare_carriage_return, stage_raw, ts_is_text, ts_sql
from events.report import ValidationReport, print_report, write_outputs
from siyu.config import Config
from siyu.contract import AMOUNT_REQUIRED, CANONICAL_COLUMNS, EVENTS, HOLDOUT_END, HOLDOUT_START, REQUIRED_COLUMNS
from siyu.errors import SiyuError

# (reason, SQL condition on the parsed columns), checked in this order; a row's
# reason is the first that holds, so the counts by reason add up to the total.
_AMOUNT_EVENTS = ", ".join(f"'{e}'" for e in sorted(AMOUNT_REQUIRED))
_RULES: list[tuple[str, str]] = [
    ("missing user_id", "user_id IS NULL"),
    ("missing ts", "ts_missing"),
    ("unparseable ts", "ts IS NULL"),
    ("missing event", "event_raw IS NULL"),
    ("unknown event", f"event NOT IN ({', '.join(repr(e) for e in EVENTS)})"),
    ("amount is not a number", "amount_raw IS NOT NULL AND (amount IS NULL OR NOT isfinite(amount))"),
    ("missing amount", f"event IN ({_AMOUNT_EVENTS}) AND amount IS NULL"),
    ("negative amount", "amount < 0"),
    ("rating is not an integer", "rating_raw IS NOT NULL AND (rating_num IS NULL OR rating_num != floor(rating_num))"),
    ("missing rating", "event = 'review' AND rating_raw IS NULL"),
    ("rating outside 1-5", "rating_num < 1 OR rating_num > 5"),
    ("coupon is not a boolean", "coupon_raw IS NOT NULL AND coupon IS NULL"),
    ("referral_purchase without ref_user_id", "event = 'referral_purchase' AND ref_user_id IS NULL"),
]


# The parsed columns an accepted event is made of (run_validation's `_canonical_select`).
_CANONICAL_PARSED = ", ".join("rating_num" if c == "rating" else c for c in CANONICAL_COLUMNS)

# The control-group markers: the rows _check_holdouts may quarantine after _classify.
_MARKERS = f"('{HOLDOUT_START}', '{HOLDOUT_END}')"


def _classify(con: duckdb.DuckDBPyConnection, cfg: Config, raw: str, ts_kind: str) -> None:
    """Create table `_checked`: parsed canonical columns, the raw text, and `reason` (NULL = valid)."""
    # Layered so each trim/cast is computed once per row. The source's own values ride along as
    # `o_*`: their text (quarantine's raw columns) is made only for the rows quarantine may show,
    # and a typed timestamp is never formatted as text (most of a big Parquet log's validation).
    kinds = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {raw})").fetchall())
    text_cols = [c for c in CANONICAL_COLUMNS if c != "ts"]
    trimmed = ", ".join(
        f"nullif(trim({c}), '') AS t_{c}" if kinds[c] == "VARCHAR" else f"{c} AS t_{c}" for c in text_cols
    )
    orig = ", ".join(f"{c} AS o_{c}" for c in CANONICAL_COLUMNS)
    if ts_is_text(ts_kind):
        ts_source, ts_missing = "ts_raw", "ts_raw IS NULL"
        layer1 = f"SELECT _row, nullif(trim(CAST(ts AS VARCHAR)), '') AS ts_raw, {trimmed}, {orig} FROM {raw}"
        layer2 = f"SELECT *, try_cast(ts_raw AS DOUBLE) AS ts_num FROM ({layer1})"
    else:  # typed columns parse from their type: NULL is the only "missing"
        ts_source, ts_missing = "o_ts", "o_ts IS NULL"
        layer2 = f"SELECT _row, {trimmed}, {orig} FROM {raw}"
    parsed = f"""
        SELECT _row,
            t_user_id AS user_id,
            {ts_missing} AS ts_missing,
            {ts_sql(ts_source, ts_kind, cfg.events.time_zone, cfg.events.ts_formats)} AS ts,
            t_event AS event_raw,
            {event_sql(cfg.events, "t_event")} AS event,
            t_amount AS amount_raw,
            {amount_sql("t_amount", kinds["amount"])} AS amount,
            t_channel AS channel,
            t_ref_user_id AS ref_user_id,
            t_rating AS rating_raw,
            try_cast(t_rating AS DOUBLE) AS rating_num,
            t_coupon AS coupon_raw,
            try_cast(t_coupon AS BOOLEAN) AS coupon,
            t_content_id AS content_id,
            t_order_id AS order_id,
            {", ".join(f"o_{c}" for c in CANONICAL_COLUMNS)}
        FROM ({layer2})
    """
    if cfg.events.negative_purchases == "refund":  # an export that books returns as negative orders
        neg = "event = 'purchase' AND amount < 0"
        parsed = (
            f"SELECT * REPLACE (CASE WHEN {neg} THEN 'refund' ELSE event END AS event, "
            f"CASE WHEN {neg} THEN -amount ELSE amount END AS amount) FROM ({parsed})"
        )
    reason = "CASE " + " ".join(f"WHEN {cond} THEN '{name}'" for name, cond in _RULES) + " END"
    # The raw text is kept only where quarantine may show it (bad rows; markers, checked next): a
    # copy of every column of every good row was most of the table's size.
    keep = f"(reason IS NOT NULL OR event IN {_MARKERS})"
    origs = [f"o_{c}" for c in CANONICAL_COLUMNS]
    kept = ", ".join(f"CASE WHEN {keep} THEN CAST(o_{c} AS VARCHAR) END AS raw_{c}" for c in CANONICAL_COLUMNS)
    # The parse's own columns are for the rules only; `_h` (valid rows) lets the de-duplication
    # look only at rows whose hash repeats (run_validation).
    unused = ", ".join([*origs, "ts_missing", "event_raw", "amount_raw", "rating_raw", "coupon_raw"])
    checked = (
        f"SELECT * EXCLUDE ({unused}), {kept}, CASE WHEN reason IS NULL THEN hash({_CANONICAL_PARSED}) END AS _h "
        f"FROM (SELECT *, {reason} AS reason FROM ({parsed}))"
    )
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE _checked AS {checked}")
    except duckdb.Error as e:
        raise SiyuError(f"cannot read event log: {str(e).splitlines()[0]}") from e


def _check_holdouts(con: duckdb.DuckDBPyConnection) -> None:
    """Quarantine control-group markers out of sequence: an end with no open start, a start inside a holdout.

    A user's valid markers are read in time order (at one instant an end comes before a start, so a
    holdout can end and the next begin together); exact duplicates share one verdict, as they count once.
    Markers accepted earlier (a temp table `_prior_markers` of user_id, ts, event: the event store's,
    features/ingest.py) are read as context, so a day's batch may end a holdout an earlier batch began.
    """
    has_prior = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = '_prior_markers' AND temporary"
    ).fetchone()[0]
    prior = " UNION SELECT user_id, ts, event FROM _prior_markers" if has_prior else ""
    con.execute(f"""UPDATE _checked SET reason = s.bad FROM (
        SELECT user_id, ts, event, CASE
            WHEN event = '{HOLDOUT_END}' AND prev IS DISTINCT FROM '{HOLDOUT_START}'
                THEN '{HOLDOUT_END} without {HOLDOUT_START}'
            WHEN event = '{HOLDOUT_START}' AND prev = '{HOLDOUT_START}'
                THEN '{HOLDOUT_START} inside a holdout' END AS bad
        FROM (SELECT *, lag(event) OVER (PARTITION BY user_id ORDER BY ts, event = '{HOLDOUT_START}') AS prev
              FROM (SELECT DISTINCT user_id, ts, event FROM _checked
                    WHERE reason IS NULL AND event IN {_MARKERS}{prior}))) s
        WHERE s.bad IS NOT NULL AND _checked.reason IS NULL
          AND _checked.user_id = s.user_id AND _checked.ts = s.ts AND _checked.event = s.event""")


def _set_aside_malformed(con: duckdb.DuckDBPyConnection, source) -> int:
    """Table `_malformed` of the CSV records DuckDB refused (wrong field count); renumber `_checked`.

    `reject_errors.line` counts records (a quoted line break does not start one), header
    included; `_row` of the parsed rows is shifted past the refused records so every
    source_row is the record's position in the file.

    Returns:
        How many records were refused (0 for non-CSV sources).

    Raises:
        SiyuError: the file has a carriage return inside an unquoted value (see
            loader.refuse_bare_carriage_return).
    """
    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'reject_errors'").fetchone()[0]:
        return 0
    if con.execute("SELECT count(*) FROM reject_errors").fetchone()[0]:
        refuse_bare_carriage_return(Path(source))
    con.execute("""CREATE OR REPLACE TEMP TABLE _malformed AS
        SELECT CAST(line AS BIGINT) - 1 AS source_row,
               'record ' || (CAST(line AS BIGINT) - 1) || ': ' || first(error_message ORDER BY column_idx) || ': '
                   || left(first(csv_line), 200) AS detail
        FROM reject_errors GROUP BY line""")
    n = con.execute("SELECT count(*) FROM _malformed").fetchone()[0]
    if n:
        # Parsed row k sits after refused record r_i (the i-th) when k > r_i - i.
        con.execute("""CREATE OR REPLACE TEMP TABLE _checked AS
            SELECT c.* REPLACE (c._row + coalesce(m.i, 0) AS _row)
            FROM _checked c ASOF LEFT JOIN (
                SELECT source_row - i + 1 AS g, i
                FROM (SELECT source_row, row_number() OVER (ORDER BY source_row) AS i FROM _malformed)) m
            ON c._row >= m.g""")
    return int(n)


def _canonical_select() -> str:
    cols = {c: c for c in CANONICAL_COLUMNS}
    cols["rating"] = "CAST(rating_num AS INTEGER)"
    return ", ".join(
        f"CAST({expr} AS {CANONICAL_COLUMNS[c]}) AS {c}" if c == "rating" else f"{expr} AS {c}"
        for c, expr in cols.items()
    )


def _accept_distinct(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """TEMP table `table`: the valid rows of `_checked`, each exact duplicate once.

    A DISTINCT over every column of a 100M-row log is a hash table of all of it; rows whose hash
    `_h` is unique cannot have a duplicate, so only rows sharing a hash go through DISTINCT.
    """
    con.execute("CREATE OR REPLACE TEMP TABLE _dup AS SELECT _h FROM _checked WHERE reason IS NULL "
                "GROUP BY _h HAVING count(*) > 1")  # fmt: skip
    cols = _canonical_select()
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {table} AS "
        f"SELECT {cols} FROM _checked WHERE reason IS NULL AND _h NOT IN (SELECT _h FROM _dup) UNION ALL "
        f"SELECT DISTINCT {cols} FROM _checked WHERE reason IS NULL AND _h IN (SELECT _h FROM _dup)"
    )
    con.execute("DROP TABLE _dup")


def run_validation(
    con: duckdb.DuckDBPyConnection,
    source: str | Path | pd.DataFrame,
    cfg: Config,
    table: str = "events",
    adapt_columns: bool = True,
    report: bool = True,
) -> ValidationReport | None:
    """Validate a log and leave its accepted, de-duplicated rows in TEMP table `table`.

    Args:
        con: DuckDB connection (see loader.connect) that receives the tables.
        source: CSV file, Parquet file, folder of Parquet parts, or a DataFrame.
        cfg: configuration (schema adapter, time zone, quarantine threshold).
        table: name of the table of accepted canonical events.
        adapt_columns: rename the brand's columns (`events.columns`); False for rows that already
            use the contract's names (the API's); event values and time zone still apply.
        report: count the report; False skips its queries (the API reads only `quarantine`).

    Returns:
        The report (None when not asked for); quarantined rows stay in TEMP table `quarantine`.
    """
    adapter = cfg.events if adapt_columns else cfg.events.model_copy(update={"columns": {}, "default_event": None})
    raw, ts_kind = stage_raw(con, source, adapter)
    for t in ("reject_errors", "reject_scans"):  # DuckDB keeps adding to them: count this read only
        con.execute(f"DROP TABLE IF EXISTS {t}")
    _classify(con, cfg, raw, ts_kind)
    _check_holdouts(con)
    n_malformed = _set_aside_malformed(con, source)
    _accept_distinct(con, table)
    raw_cols = ", ".join(f"raw_{c} AS {c}" for c in CANONICAL_COLUMNS)
    malformed = (
        ""
        if not n_malformed
        else " UNION ALL SELECT source_row, 'malformed CSV line' AS reason, detail, "
        + ", ".join(f"NULL AS {c}" for c in CANONICAL_COLUMNS)
        + " FROM _malformed"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE quarantine AS SELECT * FROM ("
        f"SELECT _row AS source_row, reason, CAST(NULL AS VARCHAR) AS detail, {raw_cols} "
        f"FROM _checked WHERE reason IS NOT NULL{malformed}) q ORDER BY source_row"
    )
    if not report:
        con.execute("DROP TABLE _checked")
        con.execute("DROP TABLE IF EXISTS _malformed")
        return None
    rows_read, valid_rows = con.execute("SELECT count(*), count(*) FILTER (reason IS NULL) FROM _checked").fetchone()
    rows_read += n_malformed
    con.execute("DROP TABLE _checked")
    con.execute("DROP TABLE IF EXISTS _malformed")
    return ValidationReport.collect(
        con,
        table,
        str(source) if not isinstance(source, pd.DataFrame) else "<frame>",
        rows_read,
        valid_rows,
        cfg.quarantine.max_fraction,
    )


def load_valid_events(
    con: duckdb.DuckDBPyConnection, path: str | Path, cfg: Config, out_dir: str | Path | None = None
) -> ValidationReport | None:
    """Validate a log file into TEMP table `events`; optionally write outputs; refuse over the threshold.

    An event store folder (events/store.py) is not validated again: `events` becomes a view of it
    (and None is returned).

    Args:
        con: DuckDB connection that receives table `events` (canonical columns).
        path: CSV file, Parquet file or folder of Parquet parts.
        cfg: configuration.
        out_dir: when given, the quarantine and summary are written there (and the
            accepted events, if the run passes the threshold).

    Returns:
        The report.

    Raises:
        SiyuError: unreadable input, or more bad rows than `quarantine.max_fraction`.
    """
    from events.store import attach, check_time_zone, is_store, read_manifest

    if is_store(path):  # an event store (`siyu ingest`) holds validated rows: read them as they are
        check_time_zone(read_manifest(path), cfg.events.time_zone, path)
        attach(con, path)
        return None
    report = run_validation(con, path, cfg)
    if out_dir is not None:
        write_outputs(con, report, Path(out_dir))
    report.raise_if_over_threshold()
    return report


def validate_file(path: str | Path, cfg: Config, out_dir: str | Path) -> ValidationReport:
    """`siyu validate`: check a log and write accepted events, quarantine and summary to out_dir.

    Unlike load_valid_events this does not raise over the threshold, so the
    caller can print the report first; call `report.raise_if_over_threshold()`.
    """
    con = connect(cfg=cfg)
    report = run_validation(con, path, cfg)
    write_outputs(con, report, Path(out_dir))
    return report


def validate_frame(df: pd.DataFrame, cfg: Config, adapt_columns: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate an in-memory log (e.g. events posted to the API).

    Args:
        df: rows with (a subset of) the contract's columns; missing required columns raise.
        cfg: configuration.
        adapt_columns: the rows use the brand's column names (default: the contract's, as the API's).

    Returns:
        (accepted canonical events, quarantined rows with `source_row` and `reason`).
    """
    con = connect(cfg=cfg)
    run_validation(con, df, cfg, adapt_columns=adapt_columns)
    return con.table("events").df(), con.table("quarantine").df()


__all__ = [
    "load_valid_events",
    "print_report",
    "run_validation",
    "validate_file",
    "validate_frame",
    "ValidationReport",
    "REQUIRED_COLUMNS",
    "SiyuError",
]
