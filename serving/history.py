"""The stored event history of the snapshot's users, for `/predict_events` on known users.

`siyu score` writes, beside the snapshot `scores.parquet`, the accepted canonical events at or
before its asof as `scores.history.arrow`: an uncompressed Arrow IPC file sorted by
(user_id, ts), plus `scores.history.index.parquet` (user_id, start, n). The API memory-maps the
file, so a user's rows are a zero-copy slice found through an in-memory dict: the lookup costs
no read of other users' rows, and the file's pages come from the OS page cache.

Scored from an event store (`siyu score --store`), nothing is copied: `scores.history.store.json`
names the store's event files at scoring time and the asof, and a lookup reads those users' rows
from them (each file sorted by user, so Parquet statistics skip most row groups).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from siyu.contract import CANONICAL_COLUMNS
from siyu.errors import SiyuError


def history_paths(scores: str | Path) -> tuple[Path, Path, Path]:
    """(events file, index file, store pointer) beside a snapshot."""
    scores = Path(scores)
    stem = scores.with_suffix("")
    return Path(f"{stem}.history.arrow"), Path(f"{stem}.history.index.parquet"), Path(f"{stem}.history.store.json")


def has_history(scores: str | Path) -> bool:
    """True when a history (copied, or pointing into an event store) sits beside the snapshot."""
    data, _, pointer = history_paths(scores)
    return data.is_file() or pointer.is_file()


def _atomic(out: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_history(con, asof, scores: str | Path, events: str = "events") -> Path:
    """Write the history beside a snapshot (before the snapshot itself, which names it).

    Args:
        con: DuckDB connection holding the accepted canonical events.
        asof: the snapshot's cutoff: only events at or before it are stored.
        scores: the snapshot path.
        events: the events table.

    Returns:
        The events file written.
    """
    from events.store import attached_store

    data, index, pointer = history_paths(scores)
    data.parent.mkdir(parents=True, exist_ok=True)
    store = attached_store(con, events)
    if store is not None:  # the rows are in the store already: point at them
        _store_pointer(store, asof, pointer)
        data.unlink(missing_ok=True)
        index.unlink(missing_ok=True)
        return pointer
    pointer.unlink(missing_ok=True)
    cols = ", ".join(CANONICAL_COLUMNS)
    q = f"SELECT {cols} FROM {events} WHERE ts <= ? ORDER BY user_id, ts, event"
    con.execute("SELECT 1").fetchall()  # finish any open execute() result: relations refuse to start beside one
    idx = con.sql(
        f"""SELECT user_id, CAST(sum(n) OVER (ORDER BY user_id) - n AS BIGINT) AS start, CAST(n AS BIGINT) AS n
            FROM (SELECT user_id, count(*) AS n FROM {events} WHERE ts <= ? GROUP BY user_id) ORDER BY user_id""",
        params=[asof],
    ).to_arrow_table()

    def write_data(tmp: str) -> None:
        # Streamed in batches: the whole log never sits in memory as Arrow at once.
        reader = con.sql(q, params=[asof]).to_arrow_reader(1 << 17)
        with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, reader.schema) as w:
            for batch in reader:
                w.write_batch(batch)

    _atomic(data, write_data)
    _atomic(index, lambda tmp: pq.write_table(idx, tmp))
    return data


def _store_pointer(store: str, asof, pointer: Path) -> None:
    import json

    from events.store import event_files

    body = {"store": store, "asof": asof.isoformat(), "files": event_files(store)}
    _atomic(pointer, lambda tmp: Path(tmp).write_text(json.dumps(body)))


class StoreHistory:
    """`rows(user_ids)` from the event files a store held when the snapshot was scored, up to its asof."""

    def __init__(self, pointer: Path) -> None:
        import json
        from datetime import datetime

        import duckdb

        from events.store import parquet_list

        try:
            body = json.loads(pointer.read_text())
        except (OSError, ValueError) as e:
            raise SiyuError(f"cannot read the history pointer {pointer}: {e}") from e
        missing = [f for f in body["files"] if not Path(f).is_file()]
        if missing:
            raise SiyuError(f"the event store {body['store']} lost {missing[0]} (named by {pointer})")
        self.path, self.asof = pointer, datetime.fromisoformat(body["asof"])
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET enable_progress_bar = false")
        self.con.execute("SET parquet_metadata_cache = true")  # footers read once, not per lookup
        cols = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in CANONICAL_COLUMNS.items())
        self.con.execute(f"CREATE VIEW h AS SELECT {cols} FROM {parquet_list(body['files'])}")
        self.n = None

    def rows(self, user_ids) -> pa.Table:
        ids = list(dict.fromkeys(str(u) for u in user_ids))
        with self.con.cursor() as cur:  # a cursor per lookup: requests may come from several threads
            return cur.sql(
                "SELECT * FROM h WHERE user_id IN (SELECT unnest(?)) AND ts <= ? ORDER BY user_id, ts, event",
                params=[ids, self.asof],
            ).to_arrow_table()

    def __len__(self) -> int:
        if self.n is None:
            self.n = self.con.execute("SELECT count(DISTINCT user_id) FROM h WHERE ts <= ?", [self.asof]).fetchone()[0]
        return int(self.n)


class History:
    """A memory-mapped history: `rows(user_ids)` gives those users' stored canonical events.

    Args:
        scores: the snapshot path (the history files sit beside it).

    Raises:
        SiyuError: the history files are missing or unreadable.
    """

    def __new__(cls, scores: str | Path):
        data, _, pointer = history_paths(scores)
        if pointer.is_file() and not data.is_file():  # scored from an event store
            return StoreHistory(pointer)
        return super().__new__(cls)

    def __init__(self, scores: str | Path):
        data, index, _ = history_paths(scores)
        if not data.is_file() or not index.is_file():
            raise SiyuError(f"no stored history beside {scores} (written by `siyu score`)")
        try:
            self.table = pa.ipc.open_file(pa.memory_map(str(data), "r")).read_all()
            idx = pq.read_table(index)
        except (OSError, pa.ArrowInvalid) as e:
            raise SiyuError(f"cannot read the stored history {data}: {e}") from e
        ids = idx.column("user_id").to_numpy(zero_copy_only=False)
        start = idx.column("start").to_numpy()
        n = idx.column("n").to_numpy()
        self.index = {u: (int(s), int(k)) for u, s, k in zip(ids, start, n)}
        self.path = data

    def rows(self, user_ids) -> pa.Table:
        """The stored events of these users (unknown ids: none), canonical columns and types (zero-copy)."""
        parts = [self.table.slice(*self.index[u]) for u in dict.fromkeys(user_ids) if u in self.index]
        if not parts:
            return self.table.slice(0, 0)
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    def __len__(self) -> int:
        return len(self.index)


__all__ = ["History", "StoreHistory", "has_history", "history_paths", "write_history"]
