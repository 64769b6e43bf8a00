"""`siyu score --engine spark`: features on Spark, probabilities from the registered models via spark_udf.

The events are validated by the same DuckDB validator as every other path,
then handed to Spark; tiers and features run as the shared SQL on Spark
(features.spark); each champion scores as an MLflow pyfunc UDF inside the
Spark job. Reasons come from the same local explainers as the DuckDB engine.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from siyu.config import Config
from siyu.errors import SiyuError


def spark_probabilities(spark, feats, models: dict, cfg: Config) -> dict[str, np.ndarray]:
    """Score a feature frame on Spark with each model's `models:/<name>/<version>` pyfunc.

    Args:
        spark: a SparkSession.
        feats: pandas frame with `user_id` and every model's feature columns.
        models: label -> ScoringModel (name and version pick the registered model).
        cfg: config (tracking URI).

    Returns:
        label -> probabilities in the row order of `feats`.
    """
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    from training.model_registry import use_tracking

    use_tracking(cfg)
    names = sorted({f for m in models.values() for f in m.feature_names})
    pdf = feats[["user_id", *names]].copy()
    pdf.insert(0, "_row", np.arange(len(pdf), dtype=np.int64))
    pdf[names] = pdf[names].astype("float64")
    sdf = spark.createDataFrame(pdf)
    for lab, m in models.items():
        udf = mlflow.pyfunc.spark_udf(spark, f"models:/{m.name}/{m.version}", result_type="double", env_manager="local")
        sdf = sdf.withColumn(f"p_{lab}", udf(F.struct(*[F.col(f"`{f}`") for f in m.feature_names])))
    out = sdf.select("_row", *[f"p_{lab}" for lab in models]).toPandas().sort_values("_row")
    return {lab: out[f"p_{lab}"].to_numpy(dtype=float) for lab in models}


def score_pool_spark(events_path: str | Path, asof: datetime, cfg: Config, show_progress: bool = True) -> pa.Table:
    """Build the snapshot table with Spark doing the features and the model scoring.

    Args:
        events_path: the event log.
        asof: cutoff (naive brand-local wall time).
        cfg: configuration.
        show_progress: draw a progress bar.

    Returns:
        The snapshot table (same layout as the DuckDB engine's).
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
    from serving.pool import load_champions, populations_from_tiers, progress_bar, score_frame
    from serving.rules import fit_rules
    from serving.scoring import Scorer
    from siyu.contract import LABELS

    models = load_champions(cfg, require=False)  # fail fast (registry away), before the SQL
    push_effect = load_push_effect(cfg)  # scored beside Spark's probabilities, on the driver
    cfg = for_models(cfg, models)  # `auto` windows: the ones the champions were trained with
    con = connect(cfg=cfg)
    load_valid_events(con, events_path, cfg)
    registered = dict(models)
    missing = [lab for lab in LABELS if lab not in models]
    if missing:  # thin data: the operator rule, as in the DuckDB engine (it scores locally, not on Spark)
        models.update(fit_rules(con, asof, cfg, missing))
    scorer = Scorer(models, feature_names(cfg), cfg.scoring.reasons)
    if con.execute("SELECT count(*) FROM events WHERE ts <= ?", [asof]).fetchone()[0] == 0:
        raise SiyuError(f"no events at or before {asof:%Y-%m-%d %H:%M}: nothing to score")
    families = sorted(present_families(con))
    origin = lineage(con, cfg, events_path)
    with tempfile.TemporaryDirectory(prefix="siyu-spark-") as tmp, progress_bar(show_progress) as progress:
        step = progress.add_task("features on Spark", total=None)
        spark = S.session(cfg=cfg)
        if is_store(events_path):  # Spark reads the store's files: its day facts, not a copy of the rows
            S.load_store(spark, events_path)
        else:
            path = Path(tmp) / "events.parquet"
            con.execute(f"COPY events TO '{path}' (FORMAT parquet)")
            S.load_events(spark, path)
        feats = S.feature_table(spark, asof, cfg)
        pop = populations_from_tiers(S.tier_table(spark, asof, cfg))
        progress.update(step, description="models on Spark (mlflow spark_udf)")
        proba = spark_probabilities(spark, feats, registered, cfg)
        progress.remove_task(step)
        from serving.ltv_scores import load_ltv_scorer  # LTV on the driver: the same numbers as the DuckDB path

        ltv = load_ltv_scorer(cfg, scorer.feature_names)
        return score_frame(
            feats,
            pop,
            scorer,
            cfg,
            asof,
            progress,
            families,
            proba=proba,
            lineage=origin,
            ltv=ltv,
            push_effect=push_effect,
        )
