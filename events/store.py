"""The event store: accepted events and their day facts as Hive-style Parquet partitions (docs/design.md §8).

A store is a folder holding `siyu-store.json` (the manifest) and immutable Parquet files:

    events/date=YYYY-MM-DD/part-<batch>-<i>.parquet     accepted canonical rows, each batch's new ones
    facts/iv/date=YYYY-MM-DD/part-<gen>-<i>.parquet     per (user, event code, bucket) counts and sums
    facts/states/date=.../  facts/orders/date=.../  facts/refunds/date=...
    facts/months/month=YYYY-MM/part-<gen>-<i>.parquet   per (user, event code) over a month of buckets
    facts/markers/batch=<sha12>/part-0.parquet          the batch's accepted control-group markers
    quarantine/batch=<sha12>/quarantine.parquet, summary.json

The manifest is the commit: it lists every live file, and readers read only the files it lists,
so a failed ingest (files written, manifest not replaced) changes nothing a reader sees. The
manifest is replaced atomically (temp file + rename); files it no longer lists go at the next ingest.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from siyu.errors import SiyuError

MANIFEST = "siyu-store.json"
FORMAT = "siyu-store"
VERSION = 1
MARKER = "__store"  # a one-row table `<events>__store` beside an events view says which store it reads


def is_store(path) -> bool:
    """True when `path` is a store folder (it holds the manifest)."""
    return isinstance(path, (str, Path)) and (Path(path) / MANIFEST).is_file()


def empty_manifest(time_zone: str) -> dict:
    """The manifest of a new store."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "time_zone": time_zone,
        "batches": {},
        "events": {},
        "facts": {"iv": {}, "states": {}, "orders": {}, "refunds": {}, "months": {}, "markers": {}},
        "totals": {"rows": 0, "fingerprint": 0, "ts_min": None, "ts_max": None, "events": []},
    }


def read_manifest(store: str | Path) -> dict:
    """The store's manifest.

    Raises:
        SiyuError: no store there, or the manifest is not one this version reads.
    """
    p = Path(store) / MANIFEST
    if not p.is_file():
        raise SiyuError(f"{store} is not an event store (no {MANIFEST}; create one with `siyu ingest`)")
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise SiyuError(f"cannot read the store manifest {p}: {e}") from None
    if m.get("format") != FORMAT or m.get("version") != VERSION:
        raise SiyuError(f"{p} is not a siyu store manifest of version {VERSION}")
    return m


def write_manifest(store: str | Path, manifest: dict) -> None:
    """Replace the manifest atomically (the commit of an ingest)."""
    store = Path(store)
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", suffix=".tmp", dir=store)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, store / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def live_files(manifest: dict) -> set[str]:
    """Every data file the manifest lists (paths relative to the store)."""
    out = {f for files in manifest["events"].values() for f in files}
    for kind in manifest["facts"].values():
        out |= {f for files in kind.values() for f in files}
    return out


def event_files(store: str | Path, manifest: dict | None = None, dates=None) -> list[str]:
    """Absolute paths of the event files (of `dates`, ISO strings, when given), oldest date first."""
    m = manifest or read_manifest(store)
    keep = m["events"] if dates is None else {d: m["events"][d] for d in dates if d in m["events"]}
    return [str(Path(store) / f) for d in sorted(keep) for f in keep[d]]


def fact_files(store: str | Path, manifest: dict, kind: str, keys=None) -> list[str]:
    """Absolute paths of one kind of fact files (iv, states, orders, refunds, months, markers), of `keys` when given."""
    part = manifest["facts"].get(kind, {})
    keep = sorted(part) if keys is None else sorted(k for k in keys if k in part)
    return [str(Path(store) / f) for k in keep for f in part[k]]


def parquet_list(paths: list[str]) -> str:
    """A DuckDB read_parquet() call over exactly these files."""
    if not paths:
        raise SiyuError("no files to read")
    return "read_parquet([" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "])"


def attach(con, store: str | Path, name: str = "events") -> None:
    """Make the store's accepted events the view `name` of a DuckDB connection, marked as a store.

    Every step that reads `name` then reads the store; features.store_facts builds the fact tables
    from the stored day facts instead of the rows, and the lineage comes from the manifest.

    Raises:
        SiyuError: not a store, an empty store, or one written for another time zone.
    """
    from siyu.contract import CANONICAL_COLUMNS

    m = read_manifest(store)
    files = event_files(store, m)
    if not files:
        raise SiyuError(f"the event store {store} holds no events yet: `siyu ingest` a file first")
    cols = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in CANONICAL_COLUMNS.items())
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {cols} FROM {parquet_list(files)}")
    path = str(Path(store).resolve()).replace("'", "''")
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name}{MARKER} AS SELECT '{path}' AS store")


def attached_store(run_or_con, name: str = "events") -> str | None:
    """The store a connection's (or engine runner's) events view reads, or None for a plain table."""
    try:
        if hasattr(run_or_con, "con") or hasattr(run_or_con, "spark"):  # a features.facts.Runner
            df = run_or_con.df(f"SELECT store FROM {name}{MARKER}")
            return str(df["store"].iloc[0])
        row = run_or_con.execute(f"SELECT store FROM {name}{MARKER}").fetchone()
        return str(row[0])
    except Exception:  # noqa: BLE001 - no marker table: the events are a plain table
        return None


def check_time_zone(manifest: dict, zone: str, store) -> None:
    """Refuse a config whose brand zone differs from the one the store's rows were converted to."""
    if manifest["time_zone"] != zone:
        raise SiyuError(
            f"the store {store} holds times in {manifest['time_zone']}, the config says events.time_zone {zone}"
        )


def store_lineage(manifest: dict) -> tuple[str, int, str, str]:
    """(fingerprint, rows, earliest ts, latest ts) of a store, as events.lineage.events_fingerprint gives."""
    t = manifest["totals"]
    return f"{int(t['fingerprint']):016x}", int(t["rows"]), t["ts_min"] or "", t["ts_max"] or ""


class StoreLock:
    """An exclusive lock on a store (a file created with O_EXCL): one ingest at a time."""

    def __init__(self, store: str | Path) -> None:
        self.path = Path(store) / ".lock"

    def __enter__(self) -> StoreLock:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            raise SiyuError(
                f"another ingest holds {self.path} (remove it if no ingest is running: a crashed one left it)"
            ) from None
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def remove_unlisted(store: str | Path, manifest: dict) -> int:
    """Delete data files the manifest does not list (left by a failed ingest or superseded); under the lock."""
    store, live, n = Path(store), live_files(manifest), 0
    for top in ("events", "facts"):
        for p in (store / top).rglob("*.parquet") if (store / top).is_dir() else []:
            if str(p.relative_to(store)) not in live:
                p.unlink()
                n += 1
    return n
