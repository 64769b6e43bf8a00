"""Nightly batch scoring: events -> features at asof -> scores -> the snapshot Parquet the API serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from siyu.config import Config
from siyu.errors import SiyuError
from siyu.features.contract import LABELS
from siyu.serving.scoring import N_REASONS, Scorer, buckets, percentiles, reference
from siyu.serving.snapshot import FEATURE_PREFIX, record_latest, with_meta, write_table_atomic

CHUNK_ROWS = 100_000


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


def parse_asof(asof: str | datetime) -> datetime:
    """A cutoff from a date or ISO instant (a bare date means 00:00 UTC; result naive UTC)."""
    from siyu.features.export import parse_instant

    if isinstance(asof, datetime):
        return asof if asof.tzinfo is None else asof.astimezone(timezone.utc).replace(tzinfo=None)
    return parse_instant(str(asof), "--asof")


def load_champions(cfg: Config, alias: str = "champion") -> dict:
    """label -> ScoringModel for every label whose alias exists in the registry.

    Raises:
        SiyuError: no label has a model under that alias.
    """
    from siyu.training.registry import RegistryUnreachable, load_model

    models, why = {}, []
    for lab in LABELS:
        try:
            models[lab] = load_model(cfg, lab, alias=alias)
        except RegistryUnreachable:
            raise
        except SiyuError as e:
            why.append(str(e))
    if not models:
        raise SiyuError(f"no '{alias}' model in the registry at {cfg.tracking_uri()}: run `siyu train` first"
                        + (f" ({why[0]})" if why else ""))
    return models


def _reasons_column(idx: np.ndarray, contrib: np.ndarray, X: np.ndarray, mask: np.ndarray,
                    names: list[str]) -> pa.Array:
    """list<struct<feature, value, contribution>> per row; null outside the population."""
    rows = np.flatnonzero(mask)
    flat = idx[rows].reshape(-1)
    vals = X[np.repeat(rows, N_REASONS), flat]
    structs = pa.StructArray.from_arrays(
        [pa.DictionaryArray.from_arrays(pa.array(flat.astype(np.int32)), pa.array(names)),
         pa.array(vals, from_pandas=True), pa.array(contrib[rows].reshape(-1))],
        names=["feature", "value", "contribution"],
    )
    offsets = np.zeros(len(mask) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(mask.astype(np.int32) * N_REASONS)
    return pa.ListArray.from_arrays(pa.array(offsets), structs, mask=pa.array(~mask))


def score_frame(feats: pd.DataFrame, pop: pd.DataFrame, scorer: Scorer, cfg: Config, asof: datetime,
                progress: Progress | None = None, families: list[str] | None = None,
                proba: dict[str, np.ndarray] | None = None) -> pa.Table:
    """Score a feature table and build the snapshot table (scores, percentiles, buckets, reasons, features).

    Args:
        feats: `user_id` + scorer.feature_names columns.
        pop: `user_id`, `tier`, `in_<label>_pop` for the same users.
        scorer: the models.
        cfg: config (risk buckets).
        asof: the cutoff.
        progress: a rich Progress to report chunks to (optional).
        families: event families present in the scored log (recorded so the API builds
            one user's features the way the batch did).
        proba: label -> probabilities computed elsewhere (the Spark engine's spark_udf) to
            store instead of the scorer's; reasons still come from the scorer.

    Returns:
        The snapshot table with its metadata.
    """
    pop = feats[["user_id"]].merge(pop, on="user_id", how="left", validate="one_to_one")
    n, names = len(feats), scorer.feature_names
    X = feats[names].to_numpy(dtype=np.float64, na_value=np.nan)
    pops = {lab: pop[f"in_{lab}_pop"].fillna(False).to_numpy(dtype=bool) for lab in LABELS}
    given, proba = proba, {lab: np.full(n, np.nan) for lab in LABELS}
    idx = {lab: np.full((n, N_REASONS), -1) for lab in LABELS}
    con = {lab: np.zeros((n, N_REASONS)) for lab in LABELS}
    task = progress.add_task("scoring", total=n) if progress else None
    for lo in range(0, n, CHUNK_ROWS):
        sl = slice(lo, min(lo + CHUNK_ROWS, n))
        s = scorer.score(X[sl], {lab: m[sl] for lab, m in pops.items()})
        for lab in s.proba:
            proba[lab][sl], idx[lab][sl], con[lab][sl] = s.proba[lab], s.reason_idx[lab], s.reason_contrib[lab]
        if progress:
            progress.update(task, completed=sl.stop)
    for lab, p in (given or {}).items():
        proba[lab] = np.where(pops[lab], np.asarray(p, dtype=float), np.nan)
    versions = scorer.versions
    cols: dict[str, pa.Array] = {
        "user_id": pa.array(feats["user_id"].astype(str).to_numpy(), pa.string()),
        "asof": pa.array(np.full(n, np.datetime64(asof, "us"))),
        "tier": pa.array(pop["tier"].astype(object).to_numpy(), pa.string()),
    }
    for lab in LABELS:
        cols[f"in_{lab}_pop"] = pa.array(pops[lab])
    for lab in LABELS:
        pct = percentiles(proba[lab], reference(proba[lab]))
        cols[f"p_{lab}"] = pa.array(proba[lab], from_pandas=True)
        cols[f"pct_{lab}"] = pa.array(pct, from_pandas=True)
        cols[f"bucket_{lab}"] = pa.array(buckets(pct, cfg.scoring.buckets), pa.string())
        cols[f"reasons_{lab}"] = _reasons_column(idx[lab], con[lab], X, pops[lab] & ~np.isnan(proba[lab]), names)
        cols[f"version_{lab}"] = pa.array(np.full(n, versions[lab] if versions[lab] is not None else 0),
                                          pa.int32(), mask=np.full(n, versions[lab] is None))
    for j, f in enumerate(names):
        cols[FEATURE_PREFIX + f] = pa.array(X[:, j], from_pandas=True)
    return with_meta(pa.table(cols), asof, versions, names, families)


def population_frame(con, asof: datetime, cfg: Config, events: str = "events") -> pd.DataFrame:
    """`user_id`, `tier`, `in_<label>_pop` at asof: the model populations of DESIGN §4."""
    from siyu.features.tiers import tier_table

    return populations_from_tiers(tier_table(con, asof, cfg, events))


def populations_from_tiers(t: pd.DataFrame) -> pd.DataFrame:
    """Population flags from a tier table (any engine).

    Same rules as siyu.features.labels.label_sql (a test checks they agree), computed
    from the tiers alone because scoring has no future to label.
    """
    from siyu.features.contract import TIER_RANK

    up = t["connected"].astype(bool) & (t["tier_rank"] < TIER_RANK["koc"])
    return pd.DataFrame({"user_id": t["user_id"].astype(str), "tier": t["tier"],
                         "in_churn_pop": t["connected"].astype(bool) & (t["n_user_events"] >= 1),
                         "in_promotion_pop": up, "in_koc_pop": up})


def score_pool(events_path: str | Path, asof: str | datetime, out: str | Path, cfg: Config,
               engine: str = "duckdb", record: bool = True, show_progress: bool = True) -> ScoreSummary:
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
        from siyu.serving.spark_scoring import score_pool_spark

        table = score_pool_spark(events_path, asof, cfg, show_progress)
    elif engine == "duckdb":
        from siyu.features.features import feature_table, present_families
        from siyu.features.loader import connect
        from siyu.features.registry import feature_names
        from siyu.features.validate import load_valid_events

        scorer = Scorer(load_champions(cfg), feature_names(cfg), cfg.scoring.reasons)  # fail fast, before the SQL
        con = connect()
        with _progress(show_progress) as progress:
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
    from siyu.serving.snapshot import META_KEY
    import json

    versions = json.loads(table.schema.metadata[META_KEY])["versions"]
    tiers = table.column("tier").value_counts().to_pylist()
    return ScoreSummary(
        out=out, asof=asof, users=table.num_rows, versions=versions, engine=engine, seconds=round(seconds, 2),
        scored={lab: table.num_rows - table.column(f"p_{lab}").null_count for lab in LABELS},
        tiers={d["values"]: d["counts"] for d in tiers},
    )


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not enabled, transient=False)


def print_summary(s: ScoreSummary, console) -> None:
    """What `siyu score` prints: where, how many, which models, how long."""
    console.print(f"scored {s.users:,} users at {s.asof:%Y-%m-%d %H:%M} ({s.engine}) in {s.seconds:.1f} s "
                  f"-> {s.out}", highlight=False)
    console.print("  models: " + ", ".join(f"{k} v{v}" if v else f"{k} (no champion)" for k, v in s.versions.items()),
                  highlight=False)
    console.print("  in population: " + ", ".join(f"{k} {v:,}" for k, v in s.scored.items()), highlight=False)
    console.print("  tiers: " + ", ".join(f"{k} {v:,}" for k, v in sorted(s.tiers.items())), highlight=False)
