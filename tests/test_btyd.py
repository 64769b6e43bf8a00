"""BG/NBD (training.btyd): the published CDNOW fit is recovered from simulated data; the candidate round-trips."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training import btyd

CDNOW = (0.243, 4.414, 0.793, 2.426)  # Fader, Hardie & Lee (2005), weeks


def simulate(params, n: int, seed: int = 0):
    """(x, t_x, T) of n customers drawn from the BG/NBD process with these parameters."""
    r, alpha, a, b = params
    rng = np.random.default_rng(seed)
    lam, p = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    T = rng.uniform(27, 39, n)
    x, tx, t = np.zeros(n), np.zeros(n), np.zeros(n)
    alive = np.ones(n, dtype=bool)
    while alive.any():
        t = np.where(alive, t + rng.exponential(1 / lam), t)
        arrived = alive & (t <= T)
        x[arrived] += 1
        tx[arrived] = t[arrived]
        alive = arrived & (rng.random(n) >= p)
    return x, tx, T


def test_recovers_the_cdnow_parameters_from_simulated_data():
    fit = btyd.fit_params(*simulate(CDNOW, 20_000))
    for got, want in zip(fit, CDNOW):
        assert abs(got - want) / want < 0.2, (fit, CDNOW)
    # a fit near the truth has a higher likelihood than one far from it
    x, tx, T = simulate(CDNOW, 5_000, seed=1)
    assert btyd.log_likelihood(fit, x, tx, T).sum() > btyd.log_likelihood((1.0, 1.0, 1.0, 1.0), x, tx, T).sum()


def test_published_conditional_expectation_and_p_alive():
    # Fader, Hardie & Lee: x = 2, t_x = 30.43, T = 38.86 weeks -> 1.226 purchases expected in the next 39 weeks
    e = btyd.expected_purchases(CDNOW, np.array([2.0]), np.array([30.43]), np.array([38.86]), 39.0)
    assert abs(e[0] - 1.226) < 0.002
    x, tx, T = np.array([0.0, 3.0, 3.0]), np.array([0.0, 35.0, 5.0]), np.array([38.0, 38.0, 38.0])
    pa = btyd.p_alive(CDNOW, x, tx, T)
    assert pa[0] == 1.0 and pa[1] > pa[2]  # long silence after the last purchase: likely gone
    quiet = btyd.p_no_purchase(CDNOW, x, tx, T, 10.0)
    assert np.all((quiet > 0) & (quiet < 1)) and quiet[2] > quiet[1]


def test_candidate_on_a_feature_frame_and_json_round_trip():
    x, tx, T = simulate((0.8, 20.0, 0.8, 2.5), 4_000, seed=2)
    frame = pd.DataFrame(
        {
            "repeat_purchase_days": x,
            "days_since_first_purchase": T,
            "purchase_gap_mean": np.where(x > 0, tx / np.maximum(x, 1), np.nan),
            "tenure_days": T,
        }
    )
    for label in ("churn", "promotion"):
        m = btyd.BTYDCandidate(label, 30).fit(frame, None)
        p = m.predict_proba(frame)
        assert p.shape == (len(frame),) and np.all((p >= 0) & (p <= 1))
        back = btyd.BTYDCandidate.from_json(m.to_json())
        np.testing.assert_allclose(back.predict_proba(frame), p)
    churn = btyd.BTYDCandidate("churn", 30).fit(frame).predict_proba(frame)
    promo = btyd.BTYDCandidate("promotion", 30).fit(frame).predict_proba(frame)
    assert np.corrcoef(churn, promo)[0, 1] < -0.5  # likely buyers are unlikely churners


def test_at_least_one_and_two_purchases_match_the_process():
    r, alpha, a, b = CDNOW
    rng = np.random.default_rng(3)
    n, T, t = 40_000, 39.0, 26.0
    lam, p = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    x, tx, later = np.zeros(n), np.zeros(n), np.zeros(n)
    clock, alive = np.zeros(n), np.ones(n, dtype=bool)
    while alive.any():  # the process past T: purchases in (T, T + t] are what the closed forms predict
        clock = np.where(alive, clock + rng.exponential(1 / lam), clock)
        alive &= clock <= T + t
        before = alive & (clock <= T)
        x[before] += 1
        tx[before] = clock[before]
        later[alive & (clock > T)] += 1
        alive &= rng.random(n) >= p
    Ts = np.full(n, T)
    for k in (1, 2):
        want = (later >= k).mean()
        got = btyd.p_at_least(CDNOW, x, tx, Ts, t, k).mean()
        assert abs(got - want) < 4 * np.sqrt(want * (1 - want) / n), (k, got, want)
    assert np.all(btyd.p_at_least(CDNOW, x, tx, Ts, t, 2) <= btyd.p_at_least(CDNOW, x, tx, Ts, t, 1))


def test_promotion_reads_the_tier_a_purchase_would_lift():
    from siyu.contract import TIER_RANK
    from training.scorers import scorer_from_json

    names = [*btyd.INPUTS, "tier"]
    s = btyd.BTYDScorer("promotion", names, 90, (0.5, 20.0, 0.8, 2.5))
    one = [1.0, 200.0, 60.0, 200.0]  # the same purchase history, three tiers
    X = np.array([[*one, TIER_RANK["engaged"]], [*one, TIER_RANK["buyer"]], [*one, TIER_RANK["repeat"]]])
    p = s.predict_proba(X)
    assert p[0] > p[1] > p[2] and p[2] < 1e-6  # engaged needs one purchase, a buyer two, repeat buyers a referral
    np.testing.assert_allclose(scorer_from_json(s.to_json()).predict_proba(X), p)  # what a served model scores
