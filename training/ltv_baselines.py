"""What the LTV model has to beat, on the same rows: BG/NBD + Gamma-Gamma, recent spend, lifetime rate.

- `bgnbd_gg`: expected purchases in (T, T+L] from BG/NBD (training/btyd.py) times the Gamma-Gamma
  expected order value (Fader, Hardie & Lee 2005, "RFM and CLV"), written here beside BG/NBD for
  the reason its docstring gives (no BTYD library fits the lock); both fitted on the training rows.
- `recent`: the net spend in the last L days (T-L, T] (what an operator would extrapolate).
- `rate`: the lifetime net spend per day since the user's first event, times L.
All three predict own spend only: no open-source CLV model knows referral value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import gammaln

from training import btyd

BASELINES = ("bgnbd_gg", "recent", "rate")
GG_INPUTS = ("n_purchase_life", "purchase_amount_life")
FIT_ROWS = 20_000  # a seeded sample fits BG/NBD's four and Gamma-Gamma's three parameters as well as all rows


def gg_log_likelihood(params, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per-user Gamma-Gamma log-likelihood of mean order value m over x orders under (p, q, gamma)."""
    p, q, g = params
    px = p * x
    return (
        gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(g) + (px - 1) * np.log(m) + px * np.log(x)
        - (px + q) * np.log(g + m * x)
    )  # fmt: skip


def fit_gamma_gamma(x: np.ndarray, m: np.ndarray) -> tuple[float, float, float]:
    """Maximum-likelihood (p, q, gamma) on users with at least one order of positive value."""
    ok = (x >= 1) & (m > 0)
    x, m = x[ok], m[ok]

    def nll(logp):
        return -gg_log_likelihood(np.exp(logp), x, m).mean()

    start = np.log([1.0, 2.0, max(float(np.mean(m)), 1.0)])
    res = minimize(nll, start, method="L-BFGS-B", bounds=[(-8, 8), (-8, 8), (-8, 15)])
    return tuple(float(v) for v in np.exp(res.x))


def gg_expected_value(params, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """E[order value | x orders of mean m]; the population mean where a user has none."""
    p, q, g = params
    pop = p * g / (q - 1) if q > 1 else float(np.nanmean(m[x >= 1])) if (x >= 1).any() else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        cond = p * (g + m * x) / (p * x + q - 1)
    return np.where((x >= 1) & (m > 0) & np.isfinite(cond), cond, pop)


def _orders(frame) -> tuple[np.ndarray, np.ndarray]:
    n = np.nan_to_num(btyd._col(frame, "n_purchase_life"), nan=0.0)
    amt = np.nan_to_num(btyd._col(frame, "purchase_amount_life"), nan=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(n > 0, amt / np.maximum(n, 1), 0.0)
    return n, m


INPUTS = (*btyd.INPUTS, *GG_INPUTS)  # the feature columns BG/NBD + Gamma-Gamma reads


class BGNBDGammaGamma:
    """Expected own spend over L days: BG/NBD expected purchases x Gamma-Gamma expected order value."""

    def __init__(self, horizon_days: int, bg: tuple | None = None, gg: tuple | None = None):
        self.horizon_days, self.bg, self.gg = int(horizon_days), bg, gg

    def fit(self, frame: pd.DataFrame) -> BGNBDGammaGamma:
        """Fit both models' parameters on a feature table (btyd.INPUTS + GG_INPUTS columns)."""
        if len(frame) > FIT_ROWS:
            frame = frame.iloc[np.sort(np.random.default_rng(0).choice(len(frame), FIT_ROWS, replace=False))]
        self.bg = btyd.fit_params(*btyd.inputs(frame))
        self.gg = fit_gamma_gamma(*_orders(frame))
        return self

    def predict(self, frame) -> np.ndarray:
        """Expected spend in the next L days per row (a DataFrame or a dict of INPUTS arrays)."""
        x, tx, T = btyd.inputs(frame)
        purchases = btyd.expected_purchases(self.bg, x, tx, T, self.horizon_days)
        return purchases * gg_expected_value(self.gg, *_orders(frame))


def baseline_predictions(
    fit: pd.DataFrame, rows: pd.DataFrame, horizon_days: int, bgnbd_gg: BGNBDGammaGamma | None = None
) -> dict[str, np.ndarray]:
    """Every baseline's predicted own spend for `rows`, BG/NBD + Gamma-Gamma fitted on `fit`.

    Args:
        fit: training rows (features + the LTV table's inputs).
        rows: the rows to predict (same columns).
        horizon_days: L.
        bgnbd_gg: BG/NBD + Gamma-Gamma already fitted on `fit` (None: fitted here).

    Returns:
        baseline name -> predicted value per row of `rows`.
    """
    L = float(horizon_days)
    out = {}
    if bgnbd_gg is not None or set(INPUTS) <= set(fit.columns):
        out["bgnbd_gg"] = (bgnbd_gg or BGNBDGammaGamma(horizon_days).fit(fit)).predict(rows)
    out["recent"] = rows["spend_last_l"].to_numpy(dtype=float)
    tenure = np.maximum(rows["tenure_days_l"].to_numpy(dtype=float), 1.0)
    out["rate"] = rows["spend_life"].to_numpy(dtype=float) / tenure * L
    return out
