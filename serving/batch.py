"""Nightly batch scoring: events -> features at asof -> scores -> the snapshot Parquet the API serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from serving.pool import load_champions, parse_asof, populations_from_tiers, progress_bar, score_frame
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
    scorers: dict[str, str | None] = field(default_factory=dict)
    scored: dict[str, int] = field(default_factory=dict)
    tiers: dict[str, int] = field(default_factory=dict)
    engine: str = "duckdb"
    seconds: float = 0.0
    contact: dict[str, int] = field(default_factory=dict)  # the advice: push / hold counts (empty: no model)
    families: list[str] | None = None  # event families of the scored log


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
        events_path: CSV, Parquet or folder of Parquet parts (docs/design.md §2).
        asof: cutoff (a bare date means 00:00 in the brand's zone, `events.time_zone`).
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
    asof, out = parse_asof(asof, cfg.events.time_zone), Path(out)
    try:  # the history is written beside the snapshot: a failure anywhere removes both
        table = _snapshot_table(events_path, asof, out, cfg, engine, show_progress)
        if engine != "spark":  # the Spark engine's executors wrote it (serving/spark_scoring.py)
            write_table_atomic(table, out)
    except BaseException:  # no history left beside a snapshot that was never written
        from serving.history import history_paths

        for p in history_paths(out):
            p.unlink(missing_ok=True)
        raise
    if record:
        record_latest(cfg, out, asof)
    return summarize(table, out, asof, engine, time.perf_counter() - t0)


def _snapshot_table(events_path, asof: datetime, out: Path, cfg: Config, engine: str, show_progress: bool) -> pa.Table:
    """The snapshot table on the chosen engine (the DuckDB path also stores the history beside `out`).

    The Spark engine writes `out` itself and returns its tier and score columns only.
    """
    if engine == "spark":
        from serving.spark_scoring import score_pool_spark

        return score_pool_spark(events_path, asof, cfg, out, show_progress)
    elif engine == "duckdb":
        from events.lineage import lineage
        from events.loader import connect
        from events.store import is_store
        from events.validate import load_valid_events
        from features.catalog import feature_names
        from features.compute import present_families
        from features.windows import for_models
        from features.with_tiers import features_and_tiers
        from serving.advice import load_push_effect
        from serving.rules import fit_rules

        models = load_champions(cfg, require=False)  # fail fast (registry away), before the SQL
        push_effect = load_push_effect(cfg)
        cfg = for_models(cfg, models)  # `auto` windows: the ones the champions were trained with
        con = connect(cfg=cfg)
        with progress_bar(show_progress) as progress:
            step = progress.add_task(
                f"{'reading the event store' if is_store(events_path) else 'validating and loading events'}", total=None
            )
            load_valid_events(con, events_path, cfg)
            families = sorted(present_families(con))
            missing = [lab for lab in LABELS if lab not in models]
            if missing:  # thin data: those labels get the operator rule, marked `rule` (serving/rules.py)
                progress.update(step, description=f"measuring the operator rule for {', '.join(missing)}")
                models.update(fit_rules(con, asof, cfg, missing, families))
            scorer = Scorer(models, feature_names(cfg), cfg.scoring.reasons)
            from serving.ltv_scores import load_ltv_scorer

            ltv = load_ltv_scorer(cfg, scorer.feature_names)  # None: no LTV champion, columns stay null
            progress.update(step, description="computing features and tiers")
            origin = lineage(con, cfg, events_path)
            feats, tiers = features_and_tiers(con, asof, cfg)  # one build of the facts for both
            pop = populations_from_tiers(tiers)
            if cfg.scoring.store_history:  # for /predict_events on known users (serving/history.py)
                from serving.history import write_history

                progress.update(step, description="storing the history beside the snapshot")
                write_history(con, asof, out)
            progress.remove_task(step)
            return score_frame(
                feats, pop, scorer, cfg, asof, progress, families, lineage=origin, ltv=ltv, push_effect=push_effect
            )
    raise SiyuError(f"--engine must be duckdb or spark, not {engine!r}")


def summarize(table: pa.Table, out: Path, asof: datetime, engine: str, seconds: float) -> ScoreSummary:
    """Counts of a written snapshot table: users, scored per label, users per tier."""
    import json

    from serving.snapshot import META_KEY

    meta = json.loads(table.schema.metadata[META_KEY])
    versions = meta["versions"]
    if meta.get("ltv"):  # lifetime value: every user known at asof
        versions = {**versions, "ltv": meta["ltv"]["version"]}
    tiers = table.column("tier").value_counts().to_pylist()
    return ScoreSummary(
        out=out,
        asof=asof,
        users=table.num_rows,
        versions=versions,
        scorers=meta.get("scorers") or {},
        engine=engine,
        seconds=round(seconds, 2),
        scored={
            lab: table.num_rows - table.column(col).null_count
            for lab, col in [*((lab, f"p_{lab}") for lab in LABELS), ("ltv", "ltv")]
            if col in table.column_names
        },
        tiers={d["values"]: d["counts"] for d in tiers},
        families=meta.get("families"),
        contact={
            d["values"]: d["counts"]
            for d in (table.column("contact").value_counts().to_pylist() if "contact" in table.column_names else [])
            if d["values"] is not None
        },
    )


def print_summary(s: ScoreSummary, console) -> None:
    """What `siyu score` prints: where, how many, which models, how long."""
    console.print(
        f"scored {s.users:,} users at {s.asof:%Y-%m-%d %H:%M} ({s.engine}) in {s.seconds:.1f} s -> {s.out}",
        highlight=False,
    )
    from siyu.contract import NEEDS_FAMILY, unseen_labels

    unseen = unseen_labels(s.families) if s.families is not None else {}

    def model(k: str, v: int | None) -> str:
        if v:
            return f"{k} v{v}"
        if s.scorers.get(k) == "operator_rule":
            return f"{k} RULE (no champion: operator rule)"
        if k in unseen:
            return f"{k} - (no {NEEDS_FAMILY[k][0]} events in the log: not predicted)"
        return f"{k} -"

    console.print("  models: " + ", ".join(model(k, v) for k, v in s.versions.items()), highlight=False)
    console.print("  in population: " + ", ".join(f"{k} {v:,}" for k, v in s.scored.items()), highlight=False)
    console.print("  tiers: " + ", ".join(f"{k} {v:,}" for k, v in sorted(s.tiers.items())), highlight=False)
    if s.contact:
        console.print(
            "  contact advice: " + ", ".join(f"{k} {v:,}" for k, v in sorted(s.contact.items())), highlight=False
        )
