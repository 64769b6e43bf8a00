"""The Spark engine: the same tier, label and feature SQL, transpiled from DuckDB's dialect.

Every query is written once (DuckDB dialect) and run here through
`sqlglot.transpile(read="duckdb", write="spark")`. Timestamps are TIMESTAMP_NTZ
in a UTC session; days are integers computed after a cast to DATE on both
engines, so the arithmetic agrees.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features.facts import Runner
from siyu.config import Config, load_config
from siyu.contract import CANONICAL_COLUMNS

_SPARK_TYPES = {
    "VARCHAR": "STRING",
    "TIMESTAMP": "TIMESTAMP_NTZ",
    "DOUBLE": "DOUBLE",
    "INTEGER": "INT",
    "BOOLEAN": "BOOLEAN",
}
_TIER = "_tier_"  # prefix of the tier columns joined to the feature rows in scoring_frame


def session(master: str | None = None, app: str = "siyu", partitions: int | None = None, cfg: Config | None = None):
    """A SparkSession set up for siyu (UTC, TIMESTAMP_NTZ, this interpreter for Python workers).

    Args:
        master: Spark master URL; default `runtime.spark_master` (SIYU_SPARK_MASTER).
        app: application name.
        partitions: shuffle partitions; default `runtime.spark_partitions` (SIYU_SPARK_PARTITIONS).
        cfg: configuration for the defaults; None loads it (defaults, SIYU_CONFIG, environment).
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    # pyspark 4.3 warns on every pandas conversion under pandas 3; the paths we use are tested
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    rt = (cfg or load_config()).runtime
    master = master or rt.spark_master
    spark = (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.timestampType", "TIMESTAMP_NTZ")
        .config("spark.sql.shuffle.partitions", str(partitions or rt.spark_partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def transpile(sql: str) -> str:
    """DuckDB SQL -> Spark SQL."""
    import sqlglot

    return sqlglot.transpile(sql, read="duckdb", write="spark")[0]


class SparkRunner(Runner):
    """Runs the DuckDB-dialect SQL on Spark; 'tables' are cached temporary views."""

    def __init__(self, spark) -> None:
        self.spark = spark
        self._cached: dict[str, object] = {}

    def table(self, name: str, sql: str) -> None:
        df = self.spark.sql(transpile(sql)).cache()
        df.createOrReplaceTempView(name)
        replaced = self._cached.pop(name, None)
        if replaced is not None:  # its plan is already part of any view made from it
            replaced.unpersist()
        self._cached[name] = df

    def df(self, sql: str) -> pd.DataFrame:
        return self.spark.sql(transpile(sql)).toPandas()

    def arrays(self, sql: str) -> dict[str, np.ndarray]:
        df = self.df(sql)
        return {c: df[c].to_numpy() for c in df.columns}

    def drop(self, names) -> None:
        for n in names:
            self.spark.catalog.dropTempView(n)
            df = self._cached.pop(n, None)
            if df is not None:
                df.unpersist()

    def columns(self, name: str) -> list[str]:
        return self.spark.table(name).columns


def load_events(spark, source: pd.DataFrame | str | Path, name: str = "events") -> None:
    """Register canonical events (a DataFrame or a Parquet path) as the temp view `name`."""
    if isinstance(source, pd.DataFrame):
        df = spark.createDataFrame(
            source[list(CANONICAL_COLUMNS)].astype(object).where(source.notna(), None),
            schema=", ".join(f"{c} {_SPARK_TYPES[t]}" for c, t in CANONICAL_COLUMNS.items()),
        )
    else:
        df = spark.read.parquet(str(source))
    casts = [f"CAST({c} AS {_SPARK_TYPES[t]}) AS {c}" for c, t in CANONICAL_COLUMNS.items()]
    df.selectExpr(*casts).createOrReplaceTempView(name)
    from events.store import MARKER

    spark.catalog.dropTempView(name + MARKER)  # a store registered under this name before: its facts no longer apply


def load_store(spark, store: str | Path, name: str = "events") -> None:
    """Register an event store's rows as the temp view `name`, marked so the facts come from its day facts.

    Spark reads the store's own Parquet files (those its manifest lists); features.store_facts
    then builds the fact tables on Spark from the day facts and month blocks.
    """
    from events.store import MARKER, event_files

    files = event_files(store)
    casts = [f"CAST({c} AS {_SPARK_TYPES[t]}) AS {c}" for c, t in CANONICAL_COLUMNS.items()]
    spark.read.parquet(*files).selectExpr(*casts).createOrReplaceTempView(name)
    spark.createDataFrame([(str(Path(store).resolve()),)], "store STRING").createOrReplaceTempView(name + MARKER)


def tier_table(spark, asof: datetime, cfg: Config, events: str = "events") -> pd.DataFrame:
    """features.tiers.tier_table on Spark."""
    from features.tiers import tiers_on

    return tiers_on(SparkRunner(spark), asof, cfg, events)


def label_table(spark, cutoff: datetime, cfg: Config, events: str = "events") -> pd.DataFrame:
    """features.labels.label_table on Spark."""
    from features.labels import labels_on

    return labels_on(SparkRunner(spark), [cutoff], cfg, events)


def feature_table(
    spark, asof: datetime, cfg: Config, events: str = "events", families: Collection[str] | None = None
) -> pd.DataFrame:
    """features.compute.feature_table on Spark."""
    from features.compute import features_on

    return features_on(SparkRunner(spark), [asof], cfg, events, families)


@contextmanager
def scoring_frame(spark, asof: datetime, cfg: Config, events: str = "events") -> Iterator[tuple[object, object]]:
    """Features and tiers at `asof` as one Spark DataFrame, left on Spark, and the step that tidies its rows.

    The facts, tiers and feature query are those of features.with_tiers (one build of the facts);
    the rows stay on the executors. `tidy(pdf)` turns any chunk of them (a pandas frame, e.g. one
    partition in mapInPandas) into (features, tiers) frames as feature_table / tier_table give them
    for those users.

    Args:
        spark: a SparkSession with the events (or a store) registered as `events`.
        asof: the instant T (naive brand-local wall time).
        cfg: the config.
        events: the events view.

    Returns:
        A context manager yielding (Spark DataFrame, tidy); the tables behind it live until exit.
    """
    from features.compute import feature_bounds, feature_query, tier_days
    from features.facts import build_facts, split_instant
    from features.tiers import tidy_tiers, tier_sql

    run, day = SparkRunner(spark), split_instant(asof)[0]
    facts = build_facts(run, events, [asof], feature_bounds([day], cfg))
    tiers = f"{facts.prefix}_tiers"
    try:
        run.table(tiers, tier_sql(facts, tier_days([day], cfg), cfg))
        with feature_query(run, facts, tiers, day, cfg) as (sql, tidy_features):
            tier_cols = spark.table(tiers).columns
            at = spark.table(tiers).where(f"d = {int(day)}").selectExpr(*(f"`{c}` AS `{_TIER}{c}`" for c in tier_cols))
            rows = spark.sql(transpile(sql))
            sdf = rows.join(at, rows["user_id"] == at[f"{_TIER}user_id"], "left")

            def tidy(pdf: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
                t = [c for c in pdf.columns if c.startswith(_TIER)]
                tiers_at = pdf[t].rename(columns=lambda c: c[len(_TIER) :]).reset_index(drop=True)
                feats = tidy_features({c: pdf[c].to_numpy() for c in pdf.columns if not c.startswith(_TIER)})
                return feats, tidy_tiers(tiers_at, asof)

            yield sdf, tidy
    finally:
        run.drop([*facts.names(), tiers])
