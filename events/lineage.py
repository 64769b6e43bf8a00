"""Lineage of a run: which log (content fingerprint, rows, date range) and which config produced it.

Recorded in MLflow params by `siyu train` and in the snapshot metadata by `siyu score`, so a
model or a score can be traced back to the data it came from.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from siyu.config import Config
from siyu.contract import CANONICAL_COLUMNS


def events_fingerprint(con: duckdb.DuckDBPyConnection, table: str = "events") -> tuple[str, int, str, str]:
    """A content fingerprint of the accepted canonical events, independent of row order and file format.

    The XOR of the rows' DuckDB hashes (rows are distinct after de-duplication, so none cancel):
    a brand export and the same log in canonical form share it; it is stable for one DuckDB version.

    Returns:
        (16 hex digits, row count, earliest ts, latest ts) - ts brand-local, ISO.
    """
    from events.store import attached_store, read_manifest, store_lineage

    store = attached_store(con, table)
    if store is not None:  # the store adds up each batch's fingerprint as it ingests
        return store_lineage(read_manifest(store))
    cols = ", ".join(CANONICAL_COLUMNS)
    h, n, lo, hi = con.execute(f"SELECT bit_xor(hash({cols})), count(*), min(ts), max(ts) FROM {table}").fetchall()[0]
    return f"{int(h or 0):016x}", int(n), lo.isoformat() if lo else "", hi.isoformat() if hi else ""


def lineage(
    con: duckdb.DuckDBPyConnection, cfg: Config, source: str | Path | pd.DataFrame, table: str = "events"
) -> dict[str, str | int]:
    """The lineage record of a validated log (flat, so it goes straight into MLflow params).

    Args:
        con: the connection holding the accepted events.
        cfg: the config the run uses.
        source: the log it was read from.
        table: the events table.

    Returns:
        events_source, events_fingerprint, events_rows, events_ts_min, events_ts_max,
        events_time_zone, config_hash.
    """
    fp, n, lo, hi = events_fingerprint(con, table)
    return {
        "events_source": str(source) if not isinstance(source, pd.DataFrame) else "<frame>",
        "events_fingerprint": fp,
        "events_rows": n,
        "events_ts_min": lo,
        "events_ts_max": hi,
        "events_time_zone": cfg.events.time_zone,
        "config_hash": cfg.fingerprint(),
    }
