"""The stored event history of the snapshot's users, for `/predict_events` on known users.

`siyu score` writes, beside the snapshot `scores.parquet`, the accepted canonical events at or
before its asof as `scores.history.arrow`: an uncompressed Arrow IPC file sorted by
(user_id, ts), plus `scores.history.index.parquet` (user_id, start, n). The API memory-maps the
file, so a user's rows are a zero-copy slice found through an in-memory dict: the lookup costs
no read of other users' rows, and the file's pages come from the OS page cache.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from siyu.contract import CANONICAL_COLUMNS
from siyu.errors import SiyuError


def history_paths(scores: str | Path) -> tuple[Path, Path]:
    """(events file, index file) beside a snapshot."""
    scores = Path(scores)
    stem = scores.with_suffix("")
    return Path(f"{stem}.history.arrow"), Path(f"{stem}.history.index.parquet")


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
    data, index = history_paths(scores)
    data.parent.mkdir(parents=True, exist_ok=True)
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


class History:
    """A memory-mapped history: `rows(user_ids)` gives those users' stored canonical events.

    Args:
        scores: the snapshot path (the history files sit beside it).

    Raises:
        SiyuError: the history files are missing or unreadable.
    """

    def __init__(self, scores: str | Path):
        data, index = history_paths(scores)
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


__all__ = ["History", "history_paths", "write_history"]
