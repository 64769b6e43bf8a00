"""Nightly batch scoring: events -> features at asof -> scores -> the snapshot Parquet the API serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from serving.pool import load_champions, parse_asof, population_frame, progress_bar, score_frame
from serving.scoring import Scorer
from serving.snapshot import record_latest, write_table_atomic
from siyu.config import Config
from siyu.contract import LABELS
from siyu.errors import SiyuError


@dataclass
class ScoreSummary:
    """What a batch scoring run did."""

    out: Path
    asof: datetime
    users: int
    versions: dict[str, int | None]
    scored: dict[str, int] = field(default_factory=dict)
    tiers: dict[str, int] = field(default_factory=dict)
    engine: str = "duckdb"
    seconds: float = 0.0


def score_pool(
    events_path: str | Path,
    asof: str | datetime,
    out: str | Path,
    cfg: Config,
    engine: str = "duckdb",
    record: bool = True,
    show_progress: bool = True,
) -> ScoreSummary:
    """`siyu score`: validate and load events, build features at asof, score every user, write the snapshot.

    Args:
        events_path: CSV, Parquet or folder of Parquet parts (DESIGN §2).
        asof: cutoff (a bare date means 00:00 UTC).
        out: the Parquet file to write (atomically).
        cfg: configuration.
        engine: "duckdb" or "spark" (features and model scoring on local Spark).
        record: remember the file as the latest snapshot (what `siyu serve` serves by default).
        show_progress: draw a progress bar.

    Returns:
        A ScoreSummary.
    """
    import time

    t0 = time.perf_counter()
    asof, out = parse_asof(asof), Path(out)
    if engine == "spark":
        from serving.spark_scoring import score_pool_spark

        table = score_pool_spark(events_path, asof, cfg, show_progress)
    elif engine == "duckdb":
        from events.loader import connect
        from events.validate import load_valid_events
        from features.catalog import feature_names
        from features.compute import feature_table, present_families
        from features.windows import for_models

        champions = load_champions(cfg)
        cfg = for_models(cfg, champions)  # `auto` windows: the ones the champions were trained with
        scorer = Scorer(champions, feature_names(cfg), cfg.scoring.reasons)  # fail fast, before the SQL
        con = connect()
        with progress_bar(show_progress) as progress:
            step = progress.add_task("validating and loading events", total=None)
            load_valid_events(con, events_path, cfg)
            progress.update(step, description="computing features")
            families = sorted(present_families(con))
            feats = feature_table(con, asof, cfg)
            progress.update(step, description="computing tiers and populations")
            pop = population_frame(con, asof, cfg)
            progress.remove_task(step)
            table = score_frame(feats, pop, scorer, cfg, asof, progress, families)
    else:
        raise SiyuError(f"--engine must be duckdb or spark, not {engine!r}")
    write_table_atomic(table, out)
    if record:
        record_latest(cfg, out, asof)
    return summarize(table, out, asof, engine, time.perf_counter() - t0)


def summarize(table: pa.Table, out: Path, asof: datetime, engine: str, seconds: float) -> ScoreSummary:
    """Counts of a written snapshot table: users, scored per label, users per tier."""
    import json

    from serving.snapshot import META_KEY

    versions = json.loads(table.schema.metadata[META_KEY])["versions"]
    tiers = table.column("tier").value_counts().to_pylist()
    return ScoreSummary(
        out=out,
        asof=asof,
        users=table.num_rows,
        versions=versions,
        engine=engine,
        seconds=round(seconds, 2),
        scored={lab: table.num_rows - table.column(f"p_{lab}").null_count for lab in LABELS},
        tiers={d["values"]: d["counts"] for d in tiers},
    )


def print_summary(s: ScoreSummary, console) -> None:
    """What `siyu score` prints: where, how many, which models, how long."""
    console.print(
        f"scored {s.users:,} users at {s.asof:%Y-%m-%d %H:%M} ({s.engine}) in {s.seconds:.1f} s -> {s.out}",
        highlight=False,
    )
    console.print(
        "  models: " + ", ".join(f"{k} v{v}" if v else f"{k} (no champion)" for k, v in s.versions.items()),
        highlight=False,
    )
    console.print("  in population: " + ", ".join(f"{k} {v:,}" for k, v in s.scored.items()), highlight=False)
    console.print("  tiers: " + ", ".join(f"{k} {v:,}" for k, v in sorted(s.tiers.items())), highlight=False)
