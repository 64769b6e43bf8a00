"""Reading event logs (CSV, Parquet file, folder of Parquet parts, DataFrame) into DuckDB."""

from __future__ import annotations

import gzip
import os
import re
import tempfile
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from siyu.config import Config, EventsConfig, load_config
from siyu.contract import CANONICAL_COLUMNS, REQUIRED_COLUMNS
from siyu.errors import SiyuError


def memory_limit(cfg: Config | None = None) -> str:
    """DuckDB's memory cap: `runtime.duckdb_memory_limit` (e.g. "8GB"), else half the machine's memory.

    DuckDB's own default (80%) leaves too little for the pandas and LightGBM side of the same
    process: a 1M-user training run held 24 GiB of 24 before the models started.

    Args:
        cfg: configuration; None loads it (defaults, SIYU_CONFIG, environment overrides).
    """
    limit = (cfg or load_config()).runtime.duckdb_memory_limit
    if limit:
        return limit
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{max(1, total // 2 // 2**20)}MB"


def connect(threads: int | None = None, cfg: Config | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection set up the way every siyu step expects (UTC session time zone, memory cap).

    Args:
        threads: worker threads; None keeps DuckDB's default (all cores).
        cfg: configuration (the memory cap); None loads it.

    Raises:
        SiyuError: runtime.duckdb_memory_limit (SIYU_DUCKDB_MEMORY_LIMIT) is not a size DuckDB understands.
    """
    con = duckdb.connect()
    limit = memory_limit(cfg)
    try:
        con.execute(f"SET memory_limit = '{limit}'")
    except duckdb.Error as exc:
        raise SiyuError(
            f"runtime.duckdb_memory_limit (SIYU_DUCKDB_MEMORY_LIMIT) {limit!r} is not a memory size (e.g. 8GB): {exc}"
        ) from None
    # The session zone is UTC whatever the machine's is: ts_sql relies on it to read naive text as written.
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # its bar on stdout is noise; steps show Rich progress
    # Spill to the system temp dir, not `.tmp/` under whatever folder the command runs in.
    spill = Path(tempfile.gettempdir()) / "siyu-duckdb"
    con.execute(f"SET temp_directory = '{spill}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A new session on the database of a `connect` connection: its own temp tables, the same settings.

    One per request lets threads share one database (its memory cap, no connect per request);
    the session time zone is per session, so it is set again.

    Args:
        con: a connection from `connect`.
    """
    cur = con.cursor()
    cur.execute("SET TimeZone = 'UTC'")
    return cur


def _source_sql(source: str | Path) -> str:
    path = Path(source)
    if not path.exists():
        raise SiyuError(f"event log not found: {path}")
    quoted = str(path).replace("'", "''")
    if path.is_dir():
        parts = sorted(path.rglob("*.parquet"))
        if not parts:
            raise SiyuError(f"folder {path} holds no .parquet files")
        return f"read_parquet('{quoted}/**/*.parquet', union_by_name = true)"
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return f"read_parquet('{quoted}')"
    if suffix in {".csv", ".tsv", ".txt", ".gz"}:
        # Everything as text: leading zeros in ids survive and bad values reach validation intact.
        # The dialect is fixed (RFC 4180), not sniffed: a sniffed quote of ' merged two rows holding
        # a stray ' each into one, silently losing a row (found by tests/reliability/test_fuzz_events.py).
        # A line with the wrong number of fields is set aside in DuckDB's `reject_errors` table (and
        # quarantined by validation) instead of failing the whole file.
        delim = "\\t" if ".tsv" in path.suffixes[-2:] else ","
        return (
            f"read_csv('{quoted}', all_varchar = true, header = true, delim = '{delim}', quote = '\"', "
            f"escape = '\"', comment = '', skip = 0, store_rejects = true)"
        )
    raise SiyuError(f"unsupported event file type '{suffix}' for {path} (use .csv, .parquet or a folder of parts)")


_BARE_CR = re.compile(rb"\r(?!\n)")


def _bare_carriage_return(path: Path) -> bool:
    """Whether a text file holds a carriage return not followed by a line feed."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as f:
        prev = b""
        while chunk := f.read(1 << 24):
            data = prev + chunk
            # A CR at the very end may pair with an LF in the next chunk: keep it for the next round.
            if _BARE_CR.search(data[:-1] if data.endswith(b"\r") else data):
                return True
            prev = b"\r" if data.endswith(b"\r") else b""
        return prev == b"\r"


def refuse_bare_carriage_return(path: Path) -> None:
    """Refuse a text log holding a carriage return inside an unquoted value.

    DuckDB ends a record at such a CR, so the record before it would be read with its value
    cut short (and the rest would be a malformed record): the file is refused instead.

    Raises:
        SiyuError: naming the file and what to fix.
    """
    if _bare_carriage_return(path):
        raise SiyuError(
            f"cannot read event log {path}: a carriage return (\\r) inside an unquoted value "
            "splits a record; quote that value or remove the carriage return"
        )


def _q(text: str) -> str:
    """A SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


def event_sql(events: EventsConfig, col: str) -> str:
    """SQL: the canonical event of a (trimmed) brand value, through `events.mapping`, case-insensitively.

    This is the one place a brand's event or status values become canonical; unmapped values
    pass through lower-cased, so an unknown one is quarantined as `unknown event`.
    """
    v = f"lower(trim({col}))"
    if not events.mapping:
        return v
    whens = " ".join(f"WHEN {_q(k.strip().lower())} THEN {_q(t)}" for k, t in events.mapping.items())
    return f"(CASE {v} {whens} ELSE {v} END)"


# A time of day followed by a zone designator: Z, UTC/GMT, or a numeric offset (+08, +0800, +08:00).
_AWARE_RE = r"[0-9]:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?\s*(z|utc|gmt|[+-][0-9]{1,2}(:?[0-9]{2})?)$"


# Money as exports write it: a currency sign or code, thousands separated by commas (1,234.50), 元 after.
# A comma decimal (1.234,50) is not read: ambiguous with the thousands form, it stays "not a number".
_MONEY_RE = r"^(-\s*)?(¥|￥|\$|€|£|RMB|CNY|USD|EUR|GBP)?\s*(-\s*)?([0-9]{1,3}(,[0-9]{3})+|[0-9]+)(\.[0-9]+)?\s*(元)?$"


def amount_sql(col: str, kind: str) -> str:
    """SQL reading an amount: a number, or money text (`¥1,234.50`, `$12`, `88元`) as its number (NULL if neither).

    Args:
        col: the (trimmed) column.
        kind: DuckDB type of the source column (typed numbers are read as they are).
    """
    if kind != "VARCHAR":
        return f"try_cast({col} AS DOUBLE)"
    digits = f"regexp_replace({col}, '[^0-9.]', '', 'g')"
    sign = f"(CASE WHEN contains({col}, '-') THEN -1 ELSE 1 END)"
    money = f"CASE WHEN regexp_full_match({col}, '{_MONEY_RE}') THEN {sign} * try_cast({digits} AS DOUBLE) END"
    return f"coalesce(try_cast({col} AS DOUBLE), {money})"


def ts_is_text(kind: str) -> bool:
    """Whether ts_sql parses a `ts` column of this DuckDB type as text (else from its type: a time or a number)."""
    numeric = {"BIGINT", "INTEGER", "DOUBLE", "FLOAT", "HUGEINT", "UBIGINT", "DECIMAL"}
    return not (kind.startswith("TIMESTAMP") or kind == "DATE" or kind in numeric or kind.startswith("DECIMAL"))


def ts_sql(col: str, kind: str, zone: str = "UTC", formats: tuple[str, ...] | list[str] = ()) -> str:
    """SQL parsing a timestamp column to the canonical naive TIMESTAMP: brand-local wall time (NULL if unparseable).

    Naive values (text without offset, Parquet TIMESTAMP) are brand-local already and kept as
    written; values that name an instant (an offset, TIMESTAMPTZ, epoch seconds/ms) are converted
    to the wall time of `zone`. Every later day computation is then in the brand's zone.

    Args:
        col: the column (text columns arrive trimmed); `ts_num` must hold its numeric value for text.
        kind: DuckDB type of the source column.
        zone: the brand's IANA zone (`events.time_zone`).
        formats: strptime formats tried first on text and numbers (`events.ts_formats`), read brand-local.
    """
    z = _q(zone)
    if formats and not (kind.startswith("TIMESTAMP") or kind == "DATE"):
        # The brand's formats first: '15032024' under %d%m%Y is a day, not a number of seconds.
        listed = "[" + ", ".join(_q(f) for f in formats) + "]"
        return f"coalesce(try_strptime(CAST({col} AS VARCHAR), {listed}), {ts_sql(col, kind, zone)})"

    def epoch(x: str) -> str:
        # A whole number of 8 or 14 digits from 1900 to 2100 is a compact date (20240315) or date-time
        # (20240315143000), brand-local as written: as epoch seconds / milliseconds it would be 1970 or
        # past 2500, no brand's log. One that is no calendar day (20241345) is NULL: quarantined.
        digits = f"CAST(CAST({x} AS BIGINT) AS VARCHAR)"
        compact = (
            f"WHEN {x} = floor({x}) AND {x} BETWEEN 19000101 AND 21001231 THEN try_strptime({digits}, '%Y%m%d') "
            f"WHEN {x} = floor({x}) AND {x} BETWEEN 19000101000000 AND 21001231235959 "
            f"THEN try_strptime({digits}, '%Y%m%d%H%M%S') "
        )
        # Any other number is epoch seconds, or milliseconds when too large to be seconds (1e11 s is the
        # year 5138); beyond 1e14 or not finite: NULL, quarantined as unparseable, not a failed log.
        return (
            f"(CASE WHEN NOT isfinite({x}) THEN NULL {compact}WHEN abs({x}) < 1e14 THEN (to_timestamp("
            f"CASE WHEN abs({x}) >= 1e11 THEN {x} / 1000 ELSE {x} END) AT TIME ZONE {z}) END)"
        )

    if kind.startswith("TIMESTAMP WITH TIME ZONE"):
        return f"({col} AT TIME ZONE {z})"
    if kind == "TIMESTAMP" or kind.startswith("TIMESTAMP_") or kind == "DATE":
        return f"CAST({col} AS TIMESTAMP)"
    if not ts_is_text(kind):
        return epoch(f"CAST({col} AS DOUBLE)")
    # The session zone is UTC (connect), so a naive text cast to TIMESTAMPTZ and back at UTC is the
    # wall time as written; text with an offset is an instant, shown in the brand's zone.
    tz = f"try_cast({col} AS TIMESTAMPTZ)"
    text = (
        f"({tz} AT TIME ZONE 'UTC')"
        if zone == "UTC"
        else f"(CASE WHEN regexp_matches({col}, '{_AWARE_RE}', 'i') THEN ({tz} AT TIME ZONE {z}) "
        f"ELSE ({tz} AT TIME ZONE 'UTC') END)"
    )
    return f"CASE WHEN ts_num IS NOT NULL THEN {epoch('ts_num')} ELSE {text} END"


def _adapt(cols: dict[str, tuple[str, str]], events: EventsConfig, source) -> dict[str, tuple[str, str]]:
    """Canonical column -> (source column, type) through `events.columns`.

    Raises:
        SiyuError: a mapped source column is missing, or a canonical name has two sources.
    """
    used = {v.strip().lower() for v in events.columns.values()}
    out: dict[str, tuple[str, str]] = {}
    for canon in CANONICAL_COLUMNS:
        src = events.columns.get(canon)
        if src is not None:
            key = src.strip().lower()
            if key not in cols:
                raise SiyuError(
                    f"events.columns.{canon}: column '{src}' is not in event log {source}; it has {sorted(cols)}"
                )
            if canon in cols and canon != key and canon not in used:
                raise SiyuError(
                    f"events.columns.{canon}: two sources for '{canon}', column '{src}' and the log's own "
                    f"'{cols[canon][0]}'; drop or rename one"
                )
            out[canon] = cols[key]
        elif canon in cols and canon not in used:
            out[canon] = cols[canon]
    return out


_NUMERIC = tuple(
    "TINYINT SMALLINT INTEGER BIGINT HUGEINT UTINYINT USMALLINT UINTEGER UBIGINT FLOAT DOUBLE DECIMAL".split()
)
# Columns a typed source keeps in its own type in `_raw` (a number -> text -> number round trip per row
# was a third of a big Parquet log's validation), by type-name prefix; any other type is read as text.
_TYPED = {"amount": _NUMERIC, "rating": _NUMERIC, "coupon": ("BOOLEAN",)}


def stage_raw(
    con: duckdb.DuckDBPyConnection, source: str | Path | pd.DataFrame | pa.Table, events: EventsConfig | None = None
) -> tuple[str, str]:
    """Expose the log as view `_raw` with every contract column (missing optional ones NULL) and `_row`.

    The schema adapter is applied here: the brand's columns are renamed to the canonical ones
    (`events.columns`) and a log without an event column gets `events.default_event`. Values stay
    as they came (quarantine shows them so); event values are mapped by event_sql, timestamps
    parsed by ts_sql, in validation.

    Args:
        con: DuckDB connection.
        source: a path, a DataFrame or an Arrow table (in-memory rows: the API's).
        events: the `events:` config (default: canonical names, no default event).

    Returns:
        (view name, DuckDB type of the `ts` column).

    Raises:
        SiyuError: unreadable file, a required column missing, or a bad column mapping.
    """
    events = events or EventsConfig()
    if isinstance(source, (pd.DataFrame, pa.Table)):
        con.register("_raw_src", source)
        from_sql = "_raw_src"
        source = "<posted rows>"  # errors name it, not a printout of every row
    else:
        from_sql = _source_sql(source)
    try:
        cols = {r[0].lower(): (r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {from_sql}").fetchall()}
    except duckdb.Error as e:
        if "read_csv" in from_sql and Path(source).is_file():
            refuse_bare_carriage_return(Path(source))
        raise SiyuError(f"cannot read event log {source}: {str(e).splitlines()[0]}") from e
    src = _adapt(cols, events, source)
    missing = [c for c in REQUIRED_COLUMNS if c not in src and not (c == "event" and events.default_event)]
    if missing:
        hint = " (map them in events.columns" + (", or set events.default_event" if "event" in missing else "") + ")"
        raise SiyuError(f"event log {source} lacks required column(s) {missing}; it has {sorted(cols)}{hint}")
    ts_kind = src["ts"][1]
    select = []
    for c in CANONICAL_COLUMNS:
        if c == "event" and c not in src:
            select.append(f"{_q(events.default_event)} AS event")
        elif c not in src:
            select.append(f"CAST(NULL AS VARCHAR) AS {c}")
        elif c == "ts" or src[c][1].startswith(_TYPED.get(c, ())):
            select.append(f'"{src[c][0]}" AS {c}')  # typed values parse from their type (validate._classify)
        else:
            select.append(f'CAST("{src[c][0]}" AS VARCHAR) AS {c}')
    row = "row_number() OVER ()"
    if from_sql.startswith("read_parquet(") and Path(source).is_file():
        # One file: its own row numbers, read in parallel (row_number() OVER () orders the whole scan).
        from_sql, row = from_sql[:-1] + ", file_row_number = true)", "file_row_number + 1"
    con.execute(f"CREATE OR REPLACE TEMP VIEW _raw AS SELECT {row} AS _row, {', '.join(select)} FROM {from_sql}")
    return "_raw", ts_kind
