"""Build small canonical event logs for tests of tiers, labels and features."""

from __future__ import annotations

import duckdb
import pandas as pd

from siyu.contract import CANONICAL_COLUMNS


def frame(rows: list[tuple | dict]) -> pd.DataFrame:
    """Rows as (user_id, ts, event, **extras) tuples or dicts -> a canonical events DataFrame."""
    recs = []
    for r in rows:
        if isinstance(r, dict):
            rec = dict(r)
        else:
            rec = {"user_id": r[0], "ts": r[1], "event": r[2]}
            if len(r) > 3:
                rec.update(r[3])
        recs.append(rec)
    df = pd.DataFrame(recs, columns=list(CANONICAL_COLUMNS))
    df["ts"] = pd.to_datetime(df["ts"], format="ISO8601").astype("datetime64[us]")
    return df


def con_with(rows_or_df, name: str = "events") -> duckdb.DuckDBPyConnection:
    """A fresh DuckDB connection with a canonical table `name`."""
    df = rows_or_df if isinstance(rows_or_df, pd.DataFrame) else frame(rows_or_df)
    con = duckdb.connect()
    con.register("_src", df)
    casts = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in CANONICAL_COLUMNS.items())
    con.execute(f"CREATE TABLE {name} AS SELECT {casts} FROM _src")
    con.unregister("_src")
    return con
