"""The BG/NBD order log: a valid log, and an oracle whose means match what the log then shows."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bgnbd_world import START, simulate  # noqa: E402

DAYS, H, P, L = 365, 90, 90, 180


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("bgnbd")
    events = pd.read_parquet(simulate(20000, DAYS, 3, out, H, P, L))
    return events, pd.read_parquet(out / "oracle.parquet"), pd.read_parquet(out / "oracle_ltv.parquet")


def _day(events: pd.DataFrame) -> pd.Series:
    return (events["ts"] - pd.Timestamp(START)).dt.days


def test_the_log_validates_without_quarantine(world, tmp_path):
    from events.loader import connect
    from events.validate import load_valid_events
    from siyu.config import load_config

    events, _, _ = world
    path = tmp_path / "events.parquet"
    events.to_parquet(path)
    con = connect(cfg=load_config())
    report = load_valid_events(con, path, load_config())
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == len(events)
    assert report.quarantined == 0


def test_churn_and_promotion_oracles_match_the_realised_rates(world):
    events, oracle, _ = world
    T, day = DAYS - H, _day(events)
    per = events.assign(d=day).drop_duplicates(["user_id", "d"])
    recent = set(per.loc[(per.d >= T - P) & (per.d < T), "user_id"])
    later = per[(per.d >= T) & (per.d < T + H)].groupby("user_id").size()
    churn = oracle[(oracle.label == "churn") & oracle.user_id.isin(recent)].set_index("user_id")["p_oracle"]
    realised = (~churn.index.isin(later.index)).astype(float)
    se = np.sqrt(realised.mean() * (1 - realised.mean()) / len(realised))
    assert abs(churn.mean() - realised.mean()) < 4 * se, (churn.mean(), realised.mean())

    known = oracle[oracle.label == "promotion"].set_index("user_id")["p_oracle"]
    now = per[(per.d >= T - P) & (per.d < T)].groupby("user_id").size().reindex(known.index, fill_value=0).clip(upper=2)
    then = later.reindex(known.index, fill_value=0).clip(upper=2)  # P == H: the period at T + H is the horizon
    up = (then > now).astype(float)
    se = np.sqrt(up.mean() * (1 - up.mean()) / len(up))
    assert abs(known.mean() - up.mean()) < 4 * se, (known.mean(), up.mean())
    assert roc_auc_score(up, known) > 0.65  # it ranks, not only averages
    assert roc_auc_score(realised, churn) > 0.65


def test_ltv_oracle_matches_the_realised_spend(world):
    events, _, ltv = world
    T, day = DAYS - L, _day(events)
    spend = events[(day >= T) & (day < T + L)].groupby("user_id")["amount"].sum()
    realised = spend.reindex(ltv["user_id"], fill_value=0.0).to_numpy()
    assert ltv["ltv_own"].sum() == pytest.approx(realised.sum(), rel=0.15)
    assert np.corrcoef(ltv["ltv_own"], realised)[0, 1] > 0.3
    assert (ltv["ltv_referral"] == 0).all()
