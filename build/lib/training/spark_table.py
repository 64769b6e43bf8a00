"""The training table's cutoffs and rows on Spark: `training.table` run through `features.spark`."""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from features.spark import SparkRunner
from siyu.config import Config


def validation_cutoff(spark, cfg: Config, events: str = "events") -> datetime:
    """training.table.validation_cutoff on Spark."""
    from training.table import cutoff_from_last

    last = spark.sql(f"SELECT max(ts) AS m FROM {events}").collect()[0]["m"]
    return cutoff_from_last(last, cfg)


def training_cutoffs(spark, cfg: Config, events: str = "events") -> list[datetime]:
    """training.table.training_cutoffs on Spark."""
    from training.table import cutoffs_before

    return cutoffs_before(validation_cutoff(spark, cfg, events), cfg)


def training_table(spark, cutoffs: list[datetime], cfg: Config, events: str = "events") -> pd.DataFrame:
    """training.table.training_table on Spark."""
    from training.table import training_on

    return training_on(SparkRunner(spark), cutoffs, cfg, events)
