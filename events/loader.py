"""Reading event logs (CSV, Parquet file, folder of Parquet parts, DataFrame) into DuckDB."""

from __future__ import annotations

import gzip
import os
import re
import tempfile
from pathlib import Path

import duckdb
import pandas as pd

from siyu.config import Config, load_config
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
    # Naive timestamps are UTC (docs/design.md §2), whatever the machine's zone is.
    con.execute("SET TimeZone = 'UTC'")
    # Spill to the system temp dir, not `.tmp/` under whatever folder the command runs in.
    spill = Path(tempfile.gettempdir()) / "siyu-duckdb"
    con.execute(f"SET temp_directory = '{spill}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


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


def stage_raw(con: duckdb.DuckDBPyConnection, source: str | Path | pd.DataFrame) -> tuple[str, str]:
    """Expose the log as view `_raw` with every contract column (missing optional ones NULL) and `_row`.

    Args:
        con: DuckDB connection.
        source: a path or a DataFrame.

    Returns:
        (view name, DuckDB type of the `ts` column).

    Raises:
        SiyuError: unreadable file or a required column missing.
    """
    if isinstance(source, pd.DataFrame):
        con.register("_raw_src", source)
        from_sql = "_raw_src"
    else:
        from_sql = _source_sql(source)
    try:
        cols = {r[0].lower(): (r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {from_sql}").fetchall()}
    except duckdb.Error as e:
        if "read_csv" in from_sql and Path(source).is_file():
            refuse_bare_carriage_return(Path(source))
        raise SiyuError(f"cannot read event log {source}: {str(e).splitlines()[0]}") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise SiyuError(f"event log {source} lacks required column(s) {missing}; it has {sorted(cols)}")
    ts_kind = cols["ts"][1]
    select = []
    for c in CANONICAL_COLUMNS:
        if c not in cols:
            select.append(f"CAST(NULL AS VARCHAR) AS {c}")
        elif c == "ts":
            select.append(f'"{cols[c][0]}" AS ts')
        else:
            select.append(f'CAST("{cols[c][0]}" AS VARCHAR) AS {c}')
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW _raw AS SELECT row_number() OVER () AS _row, {', '.join(select)} FROM {from_sql}"
    )
    return "_raw", ts_kind
