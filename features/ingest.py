"""`siyu ingest FILE --store DIR`: validate one batch and append it to the event store (docs/design.md §8).

The batch is validated by the same rules as `siyu validate` (quarantine under
quarantine/batch=<sha12>/), then compared with the store: a row already stored (an exact
duplicate, as the validator's DISTINCT sees it) is dropped, so the store holds the accepted
set the concatenated log would give. The dates the new rows fall on get their day facts rebuilt
from all their stored rows (late events included), and each finished month they touch its block.
Files are written first, then the manifest is replaced (the commit); superseded files go at the next ingest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path

from events.store import (
    StoreLock,
    check_time_zone,
    empty_manifest,
    event_files,
    fact_files,
    is_store,
    parquet_list,
    read_manifest,
    remove_unlisted,
    write_manifest,
)
from features.store_facts import day_facts_sql, day_number, month_of, month_range, months_sql
from siyu.config import Config
from siyu.contract import CANONICAL_COLUMNS, HOLDOUT_END, HOLDOUT_START
from siyu.errors import SiyuError

_COLS = ", ".join(CANONICAL_COLUMNS)
_MARKERS = f"event IN ('{HOLDOUT_START}', '{HOLDOUT_END}')"
SORT_ROWS = 5_000_000  # batches up to this many new rows are written sorted by user (a day at 1M users: 0.3M)


@dataclass
class IngestSummary:
    """What one ingest did."""

    store: str
    batch: str  # sha256 of the file's content
    already: bool  # the same content was ingested before: nothing changed
    rows_read: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates_in_batch: int = 0
    duplicates_in_store: int = 0
    new_rows: int = 0
    dates: list[str] = field(default_factory=list)
    late_dates: list[str] = field(default_factory=list)  # dates that already had rows in the store
    months_rebuilt: list[str] = field(default_factory=list)
    seconds: float = 0.0


def content_hash(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names and bytes, in name order)."""
    path, h = Path(path), hashlib.sha256()
    if not path.exists():
        raise SiyuError(f"no such file or folder: {path}")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _copy_partitioned(con, sql: str, out: Path, by: str, pattern: str) -> dict[str, list[Path]]:
    """COPY a query to Hive partitions under `out` (by column `by`); partition value -> files written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"COPY ({sql}) TO '{out}' (FORMAT parquet, PARTITION_BY ({by}), FILENAME_PATTERN '{pattern}', "
        f"OVERWRITE_OR_IGNORE true)"
    )
    found: dict[str, list[Path]] = {}
    for p in sorted(out.glob(f"{by}=*/*.parquet")) if out.is_dir() else []:
        found.setdefault(p.parent.name.split("=", 1)[1], []).append(p)
    return found


def ingest_file(path: str | Path, store: str | Path, cfg: Config, progress=None) -> IngestSummary:
    """Validate one batch of events and append its new rows and their day facts to the store.

    Args:
        path: CSV, Parquet or folder of Parquet parts (a day's export, or any batch).
        store: the store folder (created on the first ingest).
        cfg: configuration (schema adapter, time zone, quarantine threshold, memory).
        progress: optional callable(str) told each step.

    Returns:
        The IngestSummary (already=True when this content was ingested before).

    Raises:
        SiyuError: unreadable input, over the quarantine threshold (nothing appended), another
            ingest running, or a store written for another time zone.
    """
    import time

    t0, say = time.perf_counter(), progress or (lambda _msg: None)
    store = Path(store)
    digest = content_hash(path)
    store.mkdir(parents=True, exist_ok=True)
    with StoreLock(store):
        m = read_manifest(store) if is_store(store) else empty_manifest(cfg.events.time_zone)
        check_time_zone(m, cfg.events.time_zone, store)
        if digest in m["batches"]:
            return IngestSummary(str(store), digest, True, seconds=round(time.perf_counter() - t0, 2))
        remove_unlisted(store, m)  # what a failed ingest left, and what the last one replaced
        for old in store.glob(".staging-*"):
            shutil.rmtree(old, ignore_errors=True)
        staging = store / f".staging-{uuid.uuid4().hex[:12]}"
        try:
            s = _ingest(path, store, staging, m, digest, cfg, say)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    s.seconds = round(time.perf_counter() - t0, 2)
    return s


def _paths(store: Path, rels: list[str], moves: list[tuple[Path, Path]]) -> list[str]:
    """Absolute paths of store files, the ones not yet moved in read from where they are staged."""
    staged = {str(dst): str(src) for src, dst in moves}
    return [staged.get(str(store / r), str(store / r)) for r in rels]


def _ingest(path, store: Path, staging: Path, m: dict, digest: str, cfg: Config, say) -> IngestSummary:
    from events.loader import connect
    from events.validate import run_validation

    con = connect(cfg=cfg)
    # Control-group markers already stored: the batch's markers continue their sequence. They are
    # the store's marker facts (a few rows a user); a store written before those has them read
    # once from its rows, and written as facts by this ingest.
    legacy = "markers" not in m["facts"]
    prior = event_files(store, m) if legacy else fact_files(store, m, "markers")
    if prior:
        con.execute(
            f"CREATE TEMP TABLE _prior_markers AS SELECT user_id, ts, event FROM {parquet_list(prior)} WHERE {_MARKERS}"
        )
    say("validating the batch")
    report = run_validation(con, path, cfg)
    _write_quarantine(con, report, staging / "quarantine" / f"batch={digest[:12]}")
    s = IngestSummary(
        str(store), digest, False, report.rows_read, report.accepted, report.quarantined, report.duplicates
    )
    if report.over_threshold:  # the batch is refused whole; its quarantine still lands for a look
        _move_tree(staging / "quarantine", store / "quarantine")
        report.outputs["quarantine"] = str(store / "quarantine" / f"batch={digest[:12]}" / "quarantine.parquet")
        report.raise_if_over_threshold()
    s.dates = [
        r[0].isoformat() for r in con.execute("SELECT DISTINCT CAST(ts AS DATE) FROM events ORDER BY 1").fetchall()
    ]
    stored = event_files(store, m, s.dates)
    s.late_dates = [d for d in s.dates if d in m["events"]]
    say("comparing with the store")
    if stored:  # rows already stored are duplicates across batches (NULLs equal, as in DISTINCT)
        con.execute(f"CREATE TEMP TABLE _new AS SELECT * FROM events EXCEPT SELECT {_COLS} FROM {parquet_list(stored)}")
        con.execute("DROP TABLE events")
    else:
        con.execute("ALTER TABLE events RENAME TO _new")
    fp, n_new, lo, hi, evs = con.execute(
        f"SELECT bit_xor(hash({_COLS})), count(*), min(ts), max(ts), list(DISTINCT event) FROM _new"
    ).fetchone()
    s.new_rows, s.duplicates_in_store = int(n_new), int(report.accepted - n_new)
    m = json.loads(json.dumps(m))  # a copy: the caller's manifest stays what is on disk until the commit
    moves: list[tuple[Path, Path]] = []
    m["facts"].setdefault("markers", {})
    sources = [("_new", digest[:12])] + ([("_prior_markers", f"{digest[:12]}-before")] if legacy and prior else [])
    for table, key in sources:
        moves += _write_markers(con, table, key, store, staging, m)
    if n_new:
        s.dates = [
            r[0].isoformat() for r in con.execute("SELECT DISTINCT CAST(ts AS DATE) FROM _new ORDER BY 1").fetchall()
        ]
        s.late_dates = [d for d in s.dates if d in m["events"]]
        say(f"writing {n_new:,} new rows over {len(s.dates)} dates")
        # Sorted by user, a file's row groups carry narrow user_id ranges: a history lookup skips the
        # rest. Sorting a backfill of a whole log costs more than its lookups gain, so big batches are not.
        order = " ORDER BY user_id, ts" if n_new <= SORT_ROWS else ""
        written = _copy_partitioned(
            con,
            f"SELECT *, CAST(ts AS DATE) AS date FROM _new{order}",
            staging / "events",
            "date",
            f"part-{digest[:12]}-{{i}}",
        )
        for d, files in written.items():
            for f in files:
                rel = Path("events") / f"date={d}" / f.name
                moves.append((f, store / rel))
                m["events"].setdefault(d, []).append(str(rel))
        say("rebuilding the day facts of those dates")
        moves += _rebuild_facts(con, store, staging, m, s, moves)
        _totals(m, int(fp or 0), int(n_new), lo, hi, evs)
    m["batches"][digest] = {
        "source": str(path),
        "ingested_at": datetime.now().isoformat(timespec="seconds"),
        **{k: v for k, v in asdict(s).items() if k not in ("store", "batch", "already", "seconds", "months_rebuilt")},
    }
    quarantine = staging / "quarantine"
    for f in quarantine.rglob("*") if quarantine.is_dir() else []:
        if f.is_file():
            moves.append((f, store / f.relative_to(staging)))
    for src, dst in moves:  # new names only: nothing a reader sees changes until the manifest does
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.replace(dst)
    write_manifest(store, m)
    # The facts the new ones replace stay until the next ingest: a reader that read the old manifest
    # a moment ago still finds them.
    return s


def _rebuild_facts(
    con, store: Path, staging: Path, m: dict, s: IngestSummary, pending: list[tuple[Path, Path]]
) -> list[tuple[Path, Path]]:
    """Day facts of the changed dates from all their stored rows; blocks of the finished months they touch."""
    gen, moves = uuid.uuid4().hex[:12], []
    # The new rows are in memory; only dates that had rows before are read back from the store.
    new = {str(dst.relative_to(store)) for _, dst in pending}
    before = [str(store / f) for d in s.late_dates for f in m["events"][d] if f not in new]
    old = f" UNION ALL SELECT {_COLS} FROM {parquet_list(before)}" if before else ""
    con.execute(f"CREATE OR REPLACE TEMP VIEW _day_events AS SELECT {_COLS} FROM _new{old}")
    for kind, sql in day_facts_sql("_day_events").items():
        written = _copy_partitioned(con, sql, staging / "facts" / kind, "date", f"part-{gen}-{{i}}")
        for d in s.dates:  # a date without facts of this kind (no purchase that day) has none listed
            m["facts"][kind].pop(d, None)
        for d, files in written.items():
            m["facts"][kind][d] = []
            for f in files:
                rel = Path("facts") / kind / f"date={d}" / f.name
                moves.append((f, store / rel))
                m["facts"][kind][d].append(str(rel))
    newest = max(day_number(date.fromisoformat(d)) for d in m["events"])
    touched = sorted({month_of(day_number(date.fromisoformat(d)) + j) for d in s.dates for j in (0, 1)})
    for mo in touched:
        m["facts"]["months"].pop(mo, None)
    done = [mo for mo in touched if month_range(mo)[1] <= newest]  # a month still filling gets its block later
    if done:
        spans = [month_range(mo) for mo in done]  # a month's buckets come from its dates and the day before
        days = [
            d for d in m["facts"]["iv"] if any(lo - 1 <= day_number(date.fromisoformat(d)) <= hi for lo, hi in spans)
        ]
        files = _paths(store, [f for d in sorted(days) for f in m["facts"]["iv"][d]], [*pending, *moves])
        written = _copy_partitioned(
            con, months_sql(parquet_list(files), done), staging / "facts" / "months", "month", f"part-{gen}-{{i}}"
        )
        for mo, fs in written.items():
            m["facts"]["months"][mo] = []
            for f in fs:
                rel = Path("facts") / "months" / f"month={mo}" / f.name
                moves.append((f, store / rel))
                m["facts"]["months"][mo].append(str(rel))
        s.months_rebuilt = sorted(written)
    return moves


def _write_markers(con, table: str, key: str, store: Path, staging: Path, m: dict) -> list[tuple[Path, Path]]:
    """The control-group markers of `table` as the marker facts of batch `key` (none: no file)."""
    if not con.execute(f"SELECT count(*) FROM {table} WHERE {_MARKERS}").fetchone()[0]:
        return []
    rel = Path("facts") / "markers" / f"batch={key}" / "part-0.parquet"
    (staging / rel).parent.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"COPY (SELECT user_id, ts, event FROM {table} WHERE {_MARKERS} ORDER BY user_id, ts) "
        f"TO '{staging / rel}' (FORMAT parquet)"
    )
    m["facts"]["markers"][key] = [str(rel)]
    return [(staging / rel, store / rel)]


def _num(iso: str) -> int:
    return day_number(date.fromisoformat(iso))


def _dates(con, table: str) -> list[str]:
    return [
        r[0].isoformat() for r in con.execute(f"SELECT DISTINCT CAST(ts AS DATE) FROM {table} ORDER BY 1").fetchall()
    ]


def _totals(m: dict, fp: int, n: int, lo, hi, evs) -> None:
    t = m["totals"]
    t["fingerprint"] = int(t["fingerprint"]) ^ fp  # rows are distinct across batches: XOR adds them up
    t["rows"] = int(t["rows"]) + n
    t["ts_min"] = min(x for x in (t["ts_min"], lo.isoformat()) if x)
    t["ts_max"] = max(x for x in (t["ts_max"], hi.isoformat()) if x)
    t["events"] = sorted(set(t["events"]) | set(evs))


def _write_quarantine(con, report, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY quarantine TO '{out / 'quarantine.parquet'}' (FORMAT parquet)")
    (out / "summary.json").write_text(json.dumps(asdict(report), indent=1, default=str))


def _move_tree(src: Path, dst: Path) -> None:
    for f in src.rglob("*"):
        if f.is_file():
            target = dst / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            f.replace(target)


def print_ingest(s: IngestSummary, console) -> None:
    """What `siyu ingest` prints."""
    if s.already:
        console.print(f"already ingested (content sha256 {s.batch[:12]}): the store is unchanged", highlight=False)
        return
    console.print(
        f"ingested {s.rows_read:,} rows into {s.store} in {s.seconds:.1f} s: {s.new_rows:,} new, "
        f"{s.duplicates_in_batch:,} duplicates in the batch, {s.duplicates_in_store:,} already stored, "
        f"{s.quarantined:,} quarantined",
        highlight=False,
    )
    if s.dates:
        console.print(f"  dates {s.dates[0]} .. {s.dates[-1]} ({len(s.dates)})", highlight=False)
    if s.late_dates:
        console.print(f"  late events: day facts rebuilt for {', '.join(s.late_dates[:5])}", highlight=False)
    if s.months_rebuilt:
        console.print(f"  month blocks rebuilt: {', '.join(s.months_rebuilt)}", highlight=False)
