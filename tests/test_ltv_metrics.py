"""LTV metrics (normalized Gini with ties and the paired bootstrap) and the Gamma-Gamma baseline."""

from __future__ import annotations

import numpy as np
import pytest

from training import ltv_metrics as lm
from training.bootstrap import interval
from training.ltv_baselines import fit_gamma_gamma, gg_expected_value


def _kaggle_gini(a, p):
    o = np.argsort(-p, kind="stable")
    s = a[o]
    n = len(s)
    return np.cumsum(s).sum() / s.sum() / n - (n + 1) / (2 * n)


def test_gini_matches_the_textbook_form_and_its_ends():
    rng = np.random.default_rng(0)
    y = rng.gamma(0.3, 100, 500)
    p = y + rng.normal(0, 40, 500)
    assert lm.gini(y, p) == pytest.approx(_kaggle_gini(y, p) / _kaggle_gini(y, y))
    assert lm.gini(y, y) == pytest.approx(1.0)
    assert lm.gini(y, -y) == pytest.approx(-1.0)
    assert lm.gini(y, np.zeros_like(y)) == pytest.approx(0.0)  # all tied: no credit for the row order


def test_ties_get_their_mean_position():
    y = np.array([10.0, 0.0, 0.0, 0.0])
    lucky, unlucky = np.array([1.0, 0, 0, 0]), np.array([0.0, 0, 0, 1.0])
    tied = np.zeros(4)
    assert lm.gini(y, lucky) == pytest.approx(1.0) and lm.gini(y, unlucky) < 0
    # the order of the rows inside a tie does not matter
    assert lm.gini(y, tied) == pytest.approx(lm.gini(y[::-1], tied[::-1]))


def test_paired_bootstrap_of_a_scorer_against_itself_is_exactly_zero():
    rng = np.random.default_rng(1)
    y = rng.gamma(0.5, 50, 300)
    p = y * rng.lognormal(0, 1, 300)
    res = lm.gini_resamples(y, {"a": p, "b": p.copy(), "c": rng.random(300)}, 40, 7)
    assert np.all(res["a"] - res["b"] == 0)
    lo, hi = interval(res["a"] - res["c"], 0.95)
    assert lo > 0  # a real ranking beats noise on every resample's CI


def test_a_capped_gini_bootstrap_gives_the_full_rows_interval():
    rng = np.random.default_rng(2)
    y = rng.gamma(0.4, 60, 30_000)
    p = y * rng.lognormal(0, 1, 30_000)
    full = lm.gini_resamples(y, {"p": p}, 200, 3)["p"]
    capped = lm.gini_resamples(y, {"p": p}, 200, 3, max_rows=4_000)["p"]
    (lo_f, hi_f), (lo_c, hi_c) = interval(full, 0.95), interval(capped, 0.95)
    assert hi_c - lo_c == pytest.approx(hi_f - lo_f, rel=0.3)
    assert abs(np.median(capped) - lm.gini(y, p)) < (hi_f - lo_f) / 4


def test_value_metrics_top_share_mae_and_total():
    y = np.array([100.0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    p = np.array([50.0, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    m = lm.value_metrics(y, p)
    assert m["top10_share"] == pytest.approx(1.0)  # the top 10% (one row) holds all the value
    assert m["mae"] == pytest.approx((50 + 9) / 10)
    assert m["total_ratio"] == pytest.approx(59 / 100)
    mp, my = lm.deciles(y, p)
    assert len(mp) == 10 and my.max() == pytest.approx(100.0)


def test_gamma_gamma_recovers_its_parameters():
    rng = np.random.default_rng(3)
    p, q, g = 6.0, 4.0, 15.0
    n = 6000
    nu = rng.gamma(q, 1 / g, n)  # per-customer rate of the order-value gamma
    x = rng.integers(1, 8, n).astype(float)
    m = np.array([rng.gamma(p, 1 / v, int(k)).mean() for v, k in zip(nu, x)])
    est = fit_gamma_gamma(x, m)
    assert est[1] == pytest.approx(q, rel=0.15)  # (p, gamma) trade off; their population mean does not
    assert est[0] * est[2] / (est[1] - 1) == pytest.approx(p * g / (q - 1), rel=0.05)
    # shrinkage: a one-order customer's expected value lies between their order and the population mean
    ev = gg_expected_value(est, np.array([1.0]), np.array([200.0]))[0]
    assert p * g / (q - 1) < ev < 200.0
