"""Monitoring's statistics on hand-made inputs: PSI, KS, levels, expected AUC, calibration, tiers."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from monitoring.drift import SHARE_FLOOR, ks, level, psi, psi_from_shares, worst
from monitoring.estimate import expected_auc, expected_lift
from monitoring.grade import calibration_table
from monitoring.population import GONE, NEW, population_drift
from siyu.config import Thresholds, load_config


def test_psi_of_shares_is_the_textbook_formula():
    assert psi_from_shares([0.5, 0.5], [0.5, 0.5]) == 0.0
    want = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi_from_shares([0.5, 0.5], [0.25, 0.75]) == pytest.approx(want, abs=1e-12)
    assert psi_from_shares([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.274653, abs=1e-6)


def test_psi_bins_on_old_quantiles_and_counts_missing_as_a_bin():
    old = np.arange(100.0)  # 4 bins: [0,25) [25,50) [50,75) [75,100) + missing
    assert psi(old, old.copy(), bins=4) == 0.0
    new = np.arange(0.0, 25.0, 0.25)  # everything in the first bin
    f = SHARE_FLOOR
    want = (1 - 0.25) * math.log(1 / 0.25) + 3 * (f - 0.25) * math.log(f / 0.25)
    assert psi(old, new, bins=4) == pytest.approx(want, rel=1e-12)
    half_missing = np.where(np.arange(100) % 2 == 0, old, np.nan)  # same values, half gone missing
    shares_new = [0.13, 0.12, 0.13, 0.12, 0.5]  # evens: 0..24 is 13 values, 26..48 is 12, ...
    assert psi(old, half_missing, bins=4) == pytest.approx(psi_from_shares([0.25] * 4 + [0.0], shares_new))


def test_psi_of_a_discrete_feature_merges_tied_bins():
    old = np.array([0.0] * 80 + [1.0] * 10 + [2.0] * 10)
    new = np.array([0.0] * 50 + [1.0] * 25 + [2.0] * 25)
    # edges are the unique deciles {0, 1}: bins (<0), [0,1), [1,inf), missing
    assert psi(old, new) == pytest.approx(psi_from_shares([0, 0.8, 0.2, 0], [0, 0.5, 0.5, 0]))


def test_ks_matches_scipy_and_known_values():
    from scipy.stats import ks_2samp

    assert ks([1, 2, 3], [4, 5, 6]) == 1.0
    assert ks([1, 2, 3, 4], [1, 2, 3, 4]) == 0.0
    assert ks([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 3000), rng.normal(0.2, 1.2, 2000)
    b[:300] = np.round(b[:300])  # ties
    assert ks(a, b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)
    assert ks(np.append(a, np.nan), b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)  # NaN ignored
    c, d = rng.poisson(2, 4000).astype(float), rng.poisson(2.3, 3000).astype(float)  # few distinct values
    assert ks(c, d) == pytest.approx(ks_2samp(c, d).statistic, abs=1e-12)


def test_levels_and_worst():
    t = Thresholds(watch=0.1, alert=0.25)
    assert [level(v, t) for v in (0.0, 0.0999, 0.1, 0.2, 0.25, 3.0, float("nan"))] == [
        "ok",
        "ok",
        "watch",
        "watch",
        "alert",
        "alert",
        "ok",
    ]
    assert worst(["ok", "alert", "watch"]) == "alert" and worst([]) == "ok"
    with pytest.raises(ValueError):
        Thresholds(watch=0.3, alert=0.1)


def _pairwise_expected_auc(p):
    num = den = 0.0
    for i in range(len(p)):
        for j in range(len(p)):
            if i != j:
                w = p[i] * (1 - p[j])
                num += w * (1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0)
                den += w
    return num / den


def test_expected_auc_equals_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(1)
    p = np.round(rng.beta(1, 4, 60), 2)  # rounding makes ties
    assert expected_auc(p) == pytest.approx(_pairwise_expected_auc(p), abs=1e-12)
    assert math.isnan(expected_auc(np.array([0.3])))


def test_expected_auc_is_what_calibrated_outcomes_realise():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    p = rng.beta(1, 6, 4000)
    draws = [roc_auc_score(rng.random(p.size) < p, p) for _ in range(40)]
    assert expected_auc(p) == pytest.approx(np.mean(draws), abs=0.01)
    assert 0.6 < expected_auc(p) < 0.95  # an informative score, not a coin
    assert expected_lift(np.array([0.1, 0.1, 0.4, 0.4]), [0.5])["lift_top50"] == pytest.approx(0.4 / 0.25)


def test_calibration_table_by_quantile_bin():
    p = np.array([0.1] * 5 + [0.9] * 5)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
    rows = calibration_table(y, p, bins=2)
    assert [(r["n"], r["mean_predicted"], r["observed"]) for r in rows] == [(5, 0.1, 0.2), (5, 0.9, 0.8)]


def test_population_drift_transitions_and_new_gone(tmp_path):
    old, new = tmp_path / "old.parquet", tmp_path / "new.parquet"
    pq.write_table(pa.table({"user_id": ["a", "b", "c", "d"], "tier": ["buyer", "buyer", "engaged", "koc"]}), old)
    pq.write_table(pa.table({"user_id": ["a", "b", "c", "e"], "tier": ["repeat", "buyer", "lost", "engaged"]}), new)
    d = population_drift(old, new, load_config().monitoring)
    u, t = d["users"], d["tiers"]
    assert (u["old"], u["new"], u["both"], u["new_share"], u["gone_share"]) == (4, 4, 3, 0.25, 0.25)
    assert u["gone_share_status"] == "alert" and u["new_share_status"] == "watch"
    assert t["transitions"]["buyer"] == {"buyer": 0.5, "repeat": 0.5}
    assert t["transitions"]["koc"] == {GONE: 1.0} and t["transitions"][NEW] == {"engaged": 1.0}
    assert t["mix"]["buyer"] == {"old": 0.5, "new": 0.25} and t["mix"]["lost"] == {"old": 0.0, "new": 0.25}
    assert list(t["mix"]) == ["lost", "engaged", "buyer", "repeat", "koc"]
