"""DuckDB and Spark give identical tiers, labels and features on a simulated log (docs/design.md §7)."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from simulation.simulator import simulate_world
    from siyu.config import load_config

    cfg = load_config()
    out = tmp_path_factory.mktemp("world")
    simulate_world(cfg, users=300, days=240, out_dir=out, oracle_cutoffs=[], replicas=0)
    return cfg, out / "events.parquet"


@pytest.fixture(scope="module")
def engines(world):
    import duckdb

    from features import spark as S

    cfg, path = world
    con = duckdb.connect()
    con.execute(f"CREATE TABLE events AS SELECT * FROM read_parquet('{path}')")
    warnings.filterwarnings("ignore", category=FutureWarning)
    sp = S.session(partitions=2)
    sp.sparkContext.setLogLevel("ERROR")
    S.load_events(sp, path)
    yield cfg, con, sp
    sp.stop()


def test_training_table_parity(engines):
    from training import spark_table as ST
    from training.table import training_cutoffs, training_table

    cfg, con, sp = engines
    cutoffs = training_cutoffs(con, cfg)[-3:]
    assert ST.training_cutoffs(sp, cfg)[-3:] == cutoffs
    duck, spark = training_table(con, cutoffs, cfg), ST.training_table(sp, cutoffs, cfg)
    assert len(duck) > 300 and duck["tier_name"].nunique() >= 4 and duck["churn"].notna().sum() > 50
    pd.testing.assert_frame_equal(duck, spark, check_exact=False, rtol=1e-9, atol=1e-9)


def test_single_cutoff_parity(engines):
    from features import spark as S
    from features.compute import feature_table
    from features.labels import label_table
    from features.tiers import tier_table
    from training.spark_table import validation_cutoff

    cfg, con, sp = engines
    cutoff = validation_cutoff(sp, cfg)
    pd.testing.assert_frame_equal(tier_table(con, cutoff, cfg), S.tier_table(sp, cutoff, cfg))
    pd.testing.assert_frame_equal(label_table(con, cutoff, cfg), S.label_table(sp, cutoff, cfg))
    pd.testing.assert_frame_equal(
        feature_table(con, cutoff, cfg), S.feature_table(sp, cutoff, cfg), check_exact=False, rtol=1e-9, atol=1e-9
    )
