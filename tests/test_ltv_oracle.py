"""The simulator's LTV oracle: expected own / referral spend by re-simulation, against the realised labels."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from simulation.simulator import simulate_world
from training.ltv_metrics import gini

START = date(2025, 1, 1)


def test_ltv_oracle_is_calibrated_and_ranks(cfg, tmp_path):
    from events.loader import connect
    from events.validate import load_valid_events
    from features.ltv_label import ltv_labels

    simulate_world(cfg, 2500, 300, START, 5, tmp_path, None, replicas=1, ltv_replicas=4)
    o = pd.read_parquet(tmp_path / "oracle_ltv.parquet")
    cutoff = pd.Timestamp(START) + pd.Timedelta(days=300 - cfg.ltv.horizon_days)
    assert (o["cutoff"] == cutoff).all() and (o["n_replicas"] == 4).all()
    assert np.allclose(o["ltv"], o["ltv_own"] + o["ltv_referral"])
    con = connect(cfg=cfg)
    load_valid_events(con, tmp_path / "events.parquet", cfg)
    real = ltv_labels(con, [cutoff.to_pydatetime()], cfg).merge(o, on="user_id", suffixes=("", "_oracle"))
    assert len(real) == len(o)  # the oracle covers every user known at the cutoff
    for c in ("ltv_own", "ltv_referral"):
        assert real[f"{c}_oracle"].mean() == pytest.approx(real[c].mean(), rel=0.2), c  # same rules, same money
    assert gini(real["ltv"].to_numpy(), real["ltv_oracle"].to_numpy()) > 0.5
    assert gini(real["ltv_referral"].to_numpy(), real["ltv_referral_oracle"].to_numpy()) > 0.5
