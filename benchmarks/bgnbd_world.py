"""A textbook BG/NBD order log with Gamma-Gamma spend: a second world that shares nothing with the built-in one.

Fader, Hardie & Lee (2005) and Fader, Hardie & Lee (2005, "RFM and CLV"): each customer makes
a first purchase on arrival, then buys at Poisson rate lambda ~ Gamma(r, alpha) while alive and,
after every repeat purchase, leaves for good with probability p ~ Beta(a, b); every order's
amount is Gamma(shape q_spend, rate nu) with nu ~ Gamma(q, gamma). The defaults are CDNOW's
published estimates (weeks turned into days; spend scaled to yuan).

The robustness suite uses it as a shop's order export that siyu was never tuned on. Its oracle is
the best any reader of the log can do: the BG/NBD + Gamma-Gamma posterior of each customer's
history under the true population parameters (closed forms; P must equal H). It does not read
the customer's latent rate or state: a scorer that knew who had left would reach a churn AUC no
log carries (about 0.94 against 0.72 on the default world of this file).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from real_logs import purchases

from training import btyd

# CDNOW (FHL 2005): r, alpha in weeks -> days; a, b; Gamma-Gamma p, q, gamma (spend x 5)
PARAMS = {"r": 0.243, "alpha": 4.414 * 7, "a": 0.793, "b": 2.426, "p": 6.25, "q": 3.74, "gamma": 15.44 * 5}
START = datetime(2025, 1, 1)


def simulate(users: int, days: int, seed: int, out_dir: Path | str, horizon_days: int, period_days: int,
             ltv_horizon_days: int, params: dict | None = None) -> Path:  # fmt: skip
    """Write events.parquet, oracle.parquet and oracle_ltv.parquet of a BG/NBD world into `out_dir`.

    Args:
        users: customers (each arrives with a first purchase, uniformly over the log).
        days: length of the log in days (from 2025-01-01).
        seed: random seed; the same seed gives the same log.
        out_dir: output folder (created).
        horizon_days: H of the churn / promotion oracle (its cutoff: the validation cutoff, days - H).
        period_days: P, the tier period (promotion compares tiers at T and T + H).
        ltv_horizon_days: L of the LTV oracle (its cutoff: days - L).
        params: BG/NBD + Gamma-Gamma parameters (default PARAMS).

    Returns:
        The events path.
    """
    k = {**PARAMS, **(params or {})}
    rng = np.random.default_rng(seed)
    lam = rng.gamma(k["r"], 1.0 / k["alpha"], users).clip(1e-6)
    p = rng.beta(k["a"], k["b"], users)
    nu = rng.gamma(k["q"], 1.0 / k["gamma"], users)
    born = rng.uniform(0, days, users)
    user, t = _lives(lam, p, born, days, rng)
    amount = rng.gamma(k["p"], 1.0 / nu[user])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = np.argsort(t, kind="stable")
    user, t, amount = user[order], t[order], amount[order]
    ts = pd.Timestamp(START) + pd.to_timedelta(np.round(t * 86400), unit="s")
    purchases(np.char.add("u", user.astype(str)), ts, amount).to_parquet(out / "events.parquet", index=False)
    _label_oracle(days - horizon_days, horizon_days, period_days, k, born, user, t).to_parquet(
        out / "oracle.parquet", index=False
    )
    _ltv_oracle(days - ltv_horizon_days, ltv_horizon_days, k, born, user, t, amount).to_parquet(
        out / "oracle_ltv.parquet", index=False
    )
    return out / "events.parquet"


def _lives(lam, p, born, days: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Every purchase inside the log: (user index, time in days), first purchases at arrival."""
    users, times = [np.arange(len(lam))], [born.copy()]
    t, active = born.copy(), np.arange(len(lam))
    while active.size:
        t[active] += rng.exponential(1.0 / lam[active])
        active = active[t[active] < days]  # the next purchase falls after the log
        users.append(active)
        times.append(t[active].copy())
        active = active[rng.random(active.size) >= p[active]]  # BG/NBD: may leave after each repeat purchase
    return np.concatenate(users), np.concatenate(times)


def _history(T: float, born, user, t) -> tuple[np.ndarray, ...]:
    """Known customers at T and their BG/NBD summary: (index, repeat purchases x, t_x, age T, orders)."""
    known = np.flatnonzero(born <= T)
    seen = t <= T
    n = np.bincount(user[seen], minlength=len(born))[known]
    last = np.full(len(born), -np.inf)
    np.maximum.at(last, user[seen], t[seen])
    age = T - born[known]
    return known, (n - 1).astype(float), last[known] - born[known], np.maximum(age, 1e-9), n


def _label_oracle(T: int, H: int, P: int, params: dict, born, user, t) -> pd.DataFrame:
    """P(churn) and P(promotion) at cutoff T for every customer known by then (P == H: closed forms)."""
    if P != H:
        raise ValueError(f"the BG/NBD world's promotion oracle needs P == H (got P={P}, H={H})")
    known, x, tx, age, _ = _history(float(T), born, user, t)
    k = tuple(params[name] for name in btyd.PARAMS)
    one_or_more, two_or_more = (btyd.p_at_least(k, x, tx, age, float(H), n) for n in (1, 2))
    # Purchase days in the period at T: none (a lapsed buyer), one (buyer) or two and more (repeat).
    days = pd.DataFrame({"u": user, "d": np.floor(t).astype(int)})
    days = days[(days["d"] >= T - P) & (days["d"] < T)].drop_duplicates()
    now = days.groupby("u").size().reindex(known, fill_value=0).clip(upper=2).to_numpy()
    up = np.select([now == 0, now == 1], [one_or_more, two_or_more], 0.0)
    rows = {"cutoff": pd.Timestamp(START + timedelta(days=T)), "user_id": np.char.add("u", known.astype(str))}
    return pd.concat(
        [
            pd.DataFrame({**rows, "label": "churn", "p_oracle": 1.0 - one_or_more, "n_replicas": 0}),
            pd.DataFrame({**rows, "label": "promotion", "p_oracle": up, "n_replicas": 0}),
        ],
        ignore_index=True,
    )


def _ltv_oracle(T: int, L: int, params: dict, born, user, t, amount) -> pd.DataFrame:
    """Expected own spend in (T, T + L] per customer known at T: E[purchases] x E[order value], both posteriors."""
    known, x, tx, age, n = _history(float(T), born, user, t)
    purchases = btyd.expected_purchases(tuple(params[name] for name in btyd.PARAMS), x, tx, age, float(L))
    seen = t <= T
    spent = np.bincount(user[seen], weights=amount[seen], minlength=len(born))[known]
    p, q, g = params["p"], params["q"], params["gamma"]
    value = p * (g + spent) / (p * n + q - 1)  # Gamma-Gamma: E[order value | n orders worth `spent`]
    own = purchases * value
    return pd.DataFrame(
        {
            "cutoff": pd.Timestamp(START + timedelta(days=T)),
            "user_id": np.char.add("u", known.astype(str)),
            "ltv_own": own,
            "ltv_referral": 0.0,
            "ltv": own,
            "n_replicas": 0,
        }
    )
