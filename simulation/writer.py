"""Events of the built-in world: a per-day collector and a chunked Parquet writer.

`DayEvents.add` both does the tier bookkeeping every user-side event implies
(last user-side day, actions in the period) and, when emitting, keeps the
event's columns as NumPy arrays; `EventWriter` turns batches of them into
canonical Arrow tables (docs/design.md §2) and writes them as Parquet row groups.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from simulation.state import State
from siyu.contract import ACTIONS, BRAND_EVENTS, CANONICAL_COLUMNS, CHANNELS, EVENTS

E = {name: i for i, name in enumerate(EVENTS)}
CHANNEL_NAMES: tuple[str, ...] = CHANNELS + ("mini_program", "live")
MINI, LIVE = 3, 4
_ACTION_CODES = frozenset(E[a] for a in ACTIONS)
_BRAND_CODES = frozenset(E[b] for b in BRAND_EVENTS)
ORDER_CODES = frozenset((E["purchase"], E["refund"]))  # what an orders-only export keeps
# Within a user's day, events keep a plausible order (join, push, open, ..., buy, leave)
# and distinct timestamps: each event kind has its own 300-second slot.
_SLOT_ORDER = (
    "follow add_contact join_group member_join holdout_end holdout_start message_sent message_open click message_reply "
    "visit like group_message live_watch coupon_claim purchase review share referral_purchase "
    "refund mute complaint unfollow delete_contact leave_group member_leave"
).split()
SLOT = np.zeros(len(EVENTS), dtype="i4")
SLOT[[E[e] for e in _SLOT_ORDER]] = np.arange(len(_SLOT_ORDER)) * 300
_COLS = ("user", "event", "sec", "ch", "amount", "ref", "rating", "coupon", "content", "order")
SCHEMA = pa.schema(
    [
        (
            name,
            {
                "VARCHAR": pa.string(),
                "TIMESTAMP": pa.timestamp("us"),
                "DOUBLE": pa.float64(),
                "INTEGER": pa.int32(),
                "BOOLEAN": pa.bool_(),
            }[t],
        )
        for name, t in CANONICAL_COLUMNS.items()
    ]
)


def day_seconds(idx: np.ndarray, day: int) -> np.ndarray:
    """A user's deterministic start second of the day (spread over 0..16h, no RNG draw)."""
    h = (idx.astype(np.uint64) * np.uint64(2654435761) + np.uint64(day * 40503 + 17)) % np.uint64(57600)
    return h.astype("i4") + 1


class DayEvents:
    """One simulated day's events: bookkeeping always, columns only when `emit`."""

    def __init__(self, st: State, day: int, emit: bool, next_order: int = 0):
        self.st, self.day, self.emit, self.next_order = st, day, emit, next_order
        self.slot = day % st.P
        self.parts: list[dict[str, np.ndarray]] = []

    def new_orders(self, k: int) -> np.ndarray:
        """k fresh order numbers."""
        out = np.arange(self.next_order, self.next_order + k, dtype="i8")
        self.next_order += k
        return out

    def add(
        self,
        code: int,
        idx: np.ndarray,
        ch: int | np.ndarray = -1,
        amount=None,
        ref=None,
        rating=None,
        coupon=None,
        content=None,
        order=None,
        sec=None,
    ) -> None:
        """Record event `code` for users `idx` (unique within one call); optional per-event columns."""
        if idx.size == 0:
            return
        st = self.st
        if code not in _BRAND_CODES:
            st.last_user_day[idx] = self.day
        if code in ORDER_CODES:
            st.last_order_day[idx] = self.day
        if code in _ACTION_CODES:
            st.buf_a[self.slot, idx] += 1
            st.cnt_a[idx] += 1
        if not self.emit:
            return
        k = idx.size
        full = lambda v, fill, dt: np.full(k, fill, dt) if v is None else np.broadcast_to(v, (k,)).astype(dt)  # noqa: E731
        ch_arr = full(ch, -1, "i1")
        if sec is None:
            sec = day_seconds(idx, self.day) + SLOT[code] + np.maximum(ch_arr, 0).astype("i4") * 60
        self.parts.append(
            {
                "user": idx.astype("i8"),
                "event": np.full(k, code, "i1"),
                "sec": full(sec, 0, "i4"),
                "ch": ch_arr,
                "amount": full(amount, np.nan, "f8"),
                "ref": full(ref, -1, "i8"),
                "rating": full(rating, 0, "i1"),
                "coupon": full(coupon, -1, "i1"),
                "content": full(content, -1, "i8"),
                "order": full(order, -1, "i8"),
            }
        )

    def columns(self) -> dict[str, np.ndarray]:
        """The day's events as one set of columns, with the day's absolute second."""
        if not self.parts:
            return {}
        out = {c: np.concatenate([p[c] for p in self.parts]) for c in _COLS}
        out["sec"] = out["sec"].astype("i8") + self.day * 86400
        return out


class IdStrings:
    """'<prefix><number>' strings, built once per number and gathered with `take` (fast for big logs)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.cache = pa.array([], pa.string())

    def get(self, num: np.ndarray) -> pa.Array:
        """Strings for `num`, null where num < 0."""
        top = int(num.max(initial=-1)) + 1
        if top > len(self.cache):
            size = max(top, 2 * len(self.cache), 1024)
            more = pc.cast(pa.array(np.arange(len(self.cache), size)), pa.string())
            self.cache = pa.concat_arrays([self.cache, pc.binary_join_element_wise(self.prefix, more, "")])
        return self.cache.take(pa.array(num, mask=num < 0))


def to_table(cols: dict[str, np.ndarray], start: datetime, ids: dict[str, IdStrings] | None = None) -> pa.Table:
    """Canonical Arrow table (CANONICAL_COLUMNS order and types) from collected columns."""
    ids = ids or {k: IdStrings(k) for k in "uco"}
    epoch_s = int((start - datetime(1970, 1, 1)).total_seconds())
    ch = cols["ch"]
    data = {
        "user_id": ids["u"].get(cols["user"]),
        "ts": pa.array((cols["sec"] + epoch_s) * 1_000_000, type=pa.timestamp("us")),
        "event": pa.array(EVENTS).take(pa.array(cols["event"].astype("i4"))),
        "amount": pa.array(cols["amount"], mask=np.isnan(cols["amount"])),
        "channel": pa.array(CHANNEL_NAMES).take(pa.array(ch.astype("i4"), mask=ch < 0)),
        "ref_user_id": ids["u"].get(cols["ref"]),
        "rating": pa.array(cols["rating"].astype("i4"), mask=cols["rating"] == 0),
        "coupon": pa.array(cols["coupon"] == 1, mask=cols["coupon"] < 0),
        "content_id": ids["c"].get(cols["content"]),
        "order_id": ids["o"].get(cols["order"]),
    }
    return pa.Table.from_pydict(data, schema=SCHEMA)


class EventWriter:
    """Buffers days of events and writes them to one Parquet file in row groups (atomic on close).

    Building and writing a row group runs on one background thread (Arrow and
    Parquet release the GIL), overlapping with the simulation of the next days;
    at most one row group is in flight, which bounds memory.
    """

    def __init__(self, path: Path, start: datetime, chunk_rows: int, keep: frozenset[int] | None = None):
        self.path, self.start, self.chunk_rows = Path(path), start, chunk_rows
        self.keep = None if keep is None else np.array(sorted(keep), dtype="i1")  # event codes written; None: all
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.writer = pq.ParquetWriter(self.tmp, SCHEMA, compression="zstd")
        self.ids = {k: IdStrings(k) for k in "uco"}
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending: Future | None = None
        self.buf: list[dict[str, np.ndarray]] = []
        self.rows = self.total = 0
        self.counts = np.zeros(len(EVENTS), dtype="i8")

    def add(self, cols: dict[str, np.ndarray]) -> None:
        """Queue one day's columns; write a row group when enough rows are queued."""
        if cols and self.keep is not None:
            m = np.isin(cols["event"], self.keep)
            cols = {c: v[m] for c, v in cols.items()} if m.any() else {}
        if not cols:
            return
        self.buf.append(cols)
        self.rows += cols["user"].size
        self.counts += np.bincount(cols["event"].astype("i4"), minlength=len(EVENTS))
        if self.rows >= self.chunk_rows:
            self.flush()

    def _write(self, buf: list[dict[str, np.ndarray]], rows: int) -> None:
        cols = {c: np.concatenate([b[c] for b in buf]) for c in _COLS}
        self.writer.write_table(to_table(cols, self.start, self.ids), row_group_size=rows)

    def flush(self) -> None:
        if not self.buf:
            return
        if self.pending is not None:
            self.pending.result()
        self.pending = self.pool.submit(self._write, self.buf, self.rows)
        self.total += self.rows
        self.buf, self.rows = [], 0

    def close(self) -> int:
        """Write what is left, move the file into place; returns the number of events."""
        self.flush()
        if self.pending is not None:
            self.pending.result()
        self.pool.shutdown()
        self.writer.close()
        os.replace(self.tmp, self.path)
        return self.total

    def abort(self) -> None:
        self.pool.shutdown(cancel_futures=True)
        self.writer.close()
        self.tmp.unlink(missing_ok=True)
