"""`siyu score --engine spark`: features, scores, reasons and the snapshot's parts on the Spark executors.

The events are validated by the same DuckDB validator as every other path (a store is read as
it stands), then handed to Spark; tiers and features run as the shared SQL on Spark
(features.spark.scoring_frame). The feature rows never come to the driver: each partition (a
range of user ids) is tidied, scored with the champions (probabilities, TreeSHAP reasons, LTV,
contact advice: serving.pool.score_frame, the DuckDB engine's code) and written as one part of
the snapshot by its mapInPandas task, which hands back only the scores. Percentiles, buckets and
LTV segments are measured against the whole pool, so the driver sorts those scores (six floats a
user) into the references, then streams the parts into the one snapshot file, a part at a time,
with the pool's percentiles filled in.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from siyu.config import Config
from siyu.contract import LABELS
from siyu.errors import SiyuError

_LTV = ("ltv", "ltv_own", "ltv_referral")
_SCORES = (*(f"p_{lab}" for lab in LABELS), *_LTV)  # what a task returns: the inputs of the pool's percentiles


_BUILT: dict[str, tuple] = {}  # per Python worker: one job's scorers, built by its first task there


def part_scorer(tidy, parts: str, scorer, ltv, **score_args):
    """The mapInPandas function: one partition's rows -> a snapshot part file; yields its scores.

    Args:
        tidy: features.spark.scoring_frame's tidy step.
        parts: folder the parts go to (one file per partition, named by its index).
        scorer: the serving.scoring.Scorer; its models travel to the workers, its explainers (native
            handles, not picklable) are built there once per worker process.
        ltv: the LTV champion (serving.ltv_scores.LtvScorer) or None; likewise rebuilt from its model.
        score_args: serving.pool.score_frame's other arguments (cfg, asof, families, lineage, push_effect).
    """
    token = uuid.uuid4().hex
    recipe = (scorer.models, scorer.feature_names, scorer.reasons, None if ltv is None else ltv.model)

    def run(batches):
        from pyspark import TaskContext

        import serving.spark_scoring as here
        from serving.pool import populations_from_tiers, score_frame

        chunks = list(batches)
        if not chunks:
            return
        if token not in here._BUILT:
            from serving.ltv_scores import LtvScorer
            from serving.scoring import Scorer

            models, names, reasons, ltv_model = recipe
            here._BUILT.clear()
            here._BUILT[token] = (
                Scorer(models, names, reasons),
                None if ltv_model is None else LtvScorer(ltv_model, names),
            )
        built_scorer, built_ltv = here._BUILT[token]
        feats, tiers = tidy(pd.concat(chunks, ignore_index=True))
        table = score_frame(feats, populations_from_tiers(tiers), built_scorer, ltv=built_ltv, **score_args)
        path = Path(parts) / f"part-{TaskContext.get().partitionId():05d}.parquet"
        tmp = path.with_suffix(".tmp")  # a retried task rewrites its part whole
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
        yield pd.DataFrame({c: table.column(c).to_numpy(zero_copy_only=False).astype(float) for c in _SCORES})

    return run


def _floats(t: pa.Table, c: str):
    return t.column(c).to_numpy(zero_copy_only=False).astype(float)


def assemble(parts: Path, scores: pd.DataFrame, cfg: Config, out: Path) -> None:
    """Stream the part files (in user order) into one snapshot at `out`, percentiles against the whole pool.

    Args:
        parts: the folder of part files.
        scores: every part's _SCORES columns (the pool's scores, any order).
        cfg: config (risk buckets, LTV segments).
        out: the snapshot file (written to a temp file, then renamed).
    """
    from serving.ltv_scores import LtvScored, placed
    from serving.scoring import buckets, percentiles, reference

    refs = {c: reference(scores[c].to_numpy(float)) for c in _SCORES}
    files = sorted(parts.glob("part-*.parquet"))
    if not files:
        raise SiyuError("no user to score")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    writer = None
    try:
        for f in files:
            t = pq.read_table(f)
            new: dict[str, pa.Array] = {}
            for lab in LABELS:
                pct = percentiles(_floats(t, f"p_{lab}"), refs[f"p_{lab}"])
                new[f"pct_{lab}"] = pa.array(pct, from_pandas=True)
                new[f"bucket_{lab}"] = pa.array(buckets(pct, cfg.scoring.buckets), pa.string())
            if t.column("ltv").null_count < t.num_rows:  # an LTV champion scored: its percentiles and segments
                where = placed(LtvScored(*(_floats(t, c) for c in _LTV)), {c: refs[c] for c in _LTV}, cfg)
                new.update({k: pa.array(v, from_pandas=True) for k, v in where.items() if k != "segment_ltv"})
                new["segment_ltv"] = pa.array(where["segment_ltv"], pa.string())
            for name, arr in new.items():
                t = t.set_column(t.schema.get_field_index(name), name, arr)
            if writer is None:
                writer = pq.ParquetWriter(tmp, t.schema, compression="zstd")
            writer.write_table(t.cast(writer.schema))
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        if writer is not None:
            writer.close()
        Path(tmp).unlink(missing_ok=True)
        raise


def score_pool_spark(
    events_path: str | Path, asof: datetime, cfg: Config, out: Path, show_progress: bool = True
) -> pa.Table:
    """Write the snapshot at `out` with Spark doing the features and the scoring; the driver never holds the features.

    Args:
        events_path: the event log or an event store.
        asof: cutoff (naive brand-local wall time).
        cfg: configuration.
        out: the snapshot file (same layout as the DuckDB engine's).
        show_progress: draw a progress bar.

    Returns:
        The snapshot's tier and score columns (what serving.batch.summarize counts), with its metadata.
    """
    from events.lineage import lineage
    from events.loader import connect
    from events.store import is_store
    from events.validate import load_valid_events
    from features import spark as S
    from features.catalog import feature_names
    from features.compute import present_families
    from features.windows import for_models
    from serving.advice import load_push_effect
    from serving.ltv_scores import load_ltv_scorer
    from serving.pool import load_champions, progress_bar
    from serving.rules import fit_rules
    from serving.scoring import Scorer

    models = load_champions(cfg, require=False)  # fail fast (registry away), before the SQL
    push_effect = load_push_effect(cfg)
    cfg = for_models(cfg, models)  # `auto` windows: the ones the champions were trained with
    con = connect(cfg=cfg)
    load_valid_events(con, events_path, cfg)
    families = sorted(present_families(con))
    missing = [lab for lab in LABELS if lab not in models]
    if missing:  # thin data: the operator rule, as in the DuckDB engine
        models.update(fit_rules(con, asof, cfg, missing, families))
    scorer = Scorer(models, feature_names(cfg), cfg.scoring.reasons)
    if con.execute("SELECT count(*) FROM events WHERE ts <= ?", [asof]).fetchone()[0] == 0:
        raise SiyuError(f"no events at or before {asof:%Y-%m-%d %H:%M}: nothing to score")
    origin = lineage(con, cfg, events_path)
    ltv = load_ltv_scorer(cfg, scorer.feature_names)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Beside `out`: the executors write the parts there (a shared folder on a cluster, as `out` must be).
    with (
        tempfile.TemporaryDirectory(prefix=f".{out.name}.spark-", dir=out.parent) as tmp,
        progress_bar(show_progress) as progress,
    ):
        step = progress.add_task("features and scores on Spark", total=None)
        spark = S.session(cfg=cfg)
        if is_store(events_path):  # Spark reads the store's files: its day facts, not a copy of the rows
            S.load_store(spark, events_path)
        else:
            path = Path(tmp) / "events.parquet"
            con.execute(f"COPY events TO '{path}' (FORMAT parquet)")
            S.load_events(spark, path)
        parts = Path(tmp) / "parts"
        parts.mkdir()
        args = dict(cfg=cfg, asof=asof, families=families, lineage=origin, push_effect=push_effect)
        with S.scoring_frame(spark, asof, cfg) as (sdf, tidy):
            # Range partitions: part i holds smaller user ids than part i + 1, so the parts in order are
            # the DuckDB engine's user order (each part is sorted by its tidy step).
            ranged = sdf.repartitionByRange(max(1, cfg.runtime.spark_partitions), "user_id")
            fn = part_scorer(tidy, str(parts), scorer, ltv, **args)
            scores = ranged.mapInPandas(fn, ", ".join(f"{c} DOUBLE" for c in _SCORES)).toPandas()
        progress.update(step, description="writing the snapshot")
        assemble(parts, scores, cfg, out)
        progress.remove_task(step)
    cols = ["tier", *(f"p_{lab}" for lab in LABELS), "ltv", "contact"]
    return pq.read_table(out, columns=cols)
