"""`siyu labels` and `siyu features`: validate a log, build one table, write it as Parquet atomically."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd

from siyu.config import Config
from siyu.errors import SiyuError


def brand_local(t: datetime, zone: str = "UTC") -> datetime:
    """An instant as the canonical naive brand-local wall time: aware -> converted to `zone`, naive -> as is.

    Args:
        t: the instant (naive = brand-local already).
        zone: the brand's zone (`events.time_zone`).
    """
    if t.tzinfo is None:
        return t
    return t.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def parse_instant(text: str, what: str, zone: str = "UTC") -> datetime:
    """An ISO date or date-time from the command line, as brand-local wall time (a bare date: 00:00 local).

    Args:
        text: the value.
        what: the option's name (for the error).
        zone: the brand's zone; an offset in `text` is converted to it.
    """
    try:
        t = datetime.fromisoformat(text)
    except ValueError as e:
        raise SiyuError(f"{what} must be an ISO date like 2025-06-01 or 2025-06-01T12:00, got {text!r}") from e
    return brand_local(t, zone)


def refuse_censored(con, cutoff: datetime, cfg: Config, events: str = "events") -> None:
    """Refuse labels whose horizon (T, T+H] runs past the end of the log (they would be silently censored).

    The log is taken to cover up to the end of the day of its latest event (brand-local).

    Raises:
        SiyuError: naming the horizon's end, the log's end and the latest complete cutoff.
    """
    last = con.execute(f"SELECT max(ts) FROM {events}").fetchone()[0]
    if last is None:
        return
    covered = datetime(last.year, last.month, last.day) + timedelta(days=1)
    H = cfg.windows.horizon_days
    end = cutoff + timedelta(days=H)
    if end > covered:
        latest = covered - timedelta(days=H)
        raise SiyuError(
            f"labels at {cutoff:%Y-%m-%d %H:%M} need the log up to {end:%Y-%m-%d %H:%M} (horizon {H} days) but it "
            f"ends {last:%Y-%m-%d %H:%M}: they would be censored; the latest complete cutoff is {latest:%Y-%m-%d}"
        )


def write_parquet(df: pd.DataFrame, out: Path) -> None:
    """Write a DataFrame as Parquet via a temp file in the same folder and os.replace."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_table(kind: str, events: Path, when: datetime, cfg: Config, engine: str = "duckdb") -> pd.DataFrame:
    """Validate `events` and compute the `kind` table ('labels' or 'features') at `when`.

    Args:
        kind: labels or features.
        events: CSV / Parquet file or folder of Parquet parts.
        when: the cutoff (labels) or as-of instant (features).
        cfg: config.
        engine: duckdb or spark.
    """
    from events.loader import connect
    from events.store import is_store
    from events.validate import load_valid_events

    if engine not in ("duckdb", "spark"):
        raise SiyuError(f"--engine must be duckdb or spark, got {engine!r}")
    con = connect(cfg=cfg)
    load_valid_events(con, events, cfg)
    if con.execute("SELECT count(*) FROM events WHERE ts <= ?", [when]).fetchone()[0] == 0:
        raise SiyuError(f"no events at or before {when:%Y-%m-%d %H:%M}: nothing to compute")
    if kind == "labels":
        refuse_censored(con, when, cfg)
    if engine == "duckdb":
        from features.compute import feature_table
        from features.labels import label_table

        return (label_table if kind == "labels" else feature_table)(con, when, cfg)
    from features import spark as S

    with tempfile.TemporaryDirectory(prefix="siyu-spark-") as tmp:
        sp = S.session(cfg=cfg)
        if is_store(events):  # Spark reads the store's files: its day facts, not a copy of the rows
            S.load_store(sp, events)
        else:
            path = Path(tmp) / "events.parquet"
            con.execute(f"COPY events TO '{path}' (FORMAT parquet)")
            S.load_events(sp, path)
        fn = S.label_table if kind == "labels" else S.feature_table
        return fn(sp, when, cfg)


def summary_lines(kind: str, df: pd.DataFrame) -> list[str]:
    """A few lines describing a labels or features table."""
    lines = [f"{len(df):,} users"]
    if kind == "labels":
        lines.append("tiers: " + ", ".join(f"{t} {n:,}" for t, n in df["tier"].value_counts().items()))
        for lbl in ("churn", "promotion", "koc"):
            y = df[lbl].dropna()
            rate = f"{y.mean():.1%}" if len(y) else "n/a"
            lines.append(f"{lbl}: population {len(y):,}, positive rate {rate}")
    else:
        feats = df.columns[2:]
        nan_cols = [c for c in feats if df[c].isna().all()]
        lines.append(f"{len(feats)} features; {len(nan_cols)} all-missing (families absent from the log)")
    return lines
