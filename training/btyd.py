"""BG/NBD ("buy till you die", Fader, Hardie & Lee 2005): a purchase-only model as a churn / promotion candidate.

Written here (about 100 lines over scipy) because no library fits the lock: `btyd` 0.1
does not import on Python 3.11 (its pinned autograd calls inspect.getargspec),
`lifetimes` 0.11 (last release 2020, unmaintained) fits but takes seconds per
thousand users, and `pymc-marketing` brings pymc + pytensor (a compiler) for
one four-parameter MLE.

Per user, from the feature table at a cutoff: x = repeat purchase days,
T = days since the first purchase (or since the first event for a non-buyer),
t_x = x * mean gap (the last purchase day minus the first). Days are the time unit.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

from siyu.contract import TIER_RANK

PARAMS = ("r", "alpha", "a", "b")
INPUTS = ("repeat_purchase_days", "days_since_first_purchase", "purchase_gap_mean", "tenure_days")


def _col(frame, name: str) -> np.ndarray:
    v = frame[name]
    return v.to_numpy(dtype=float, na_value=np.nan) if hasattr(v, "to_numpy") else np.asarray(v, dtype=float)


def inputs(frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T) per row of a feature table (columns INPUTS; a DataFrame or a dict of arrays).

    T >= t_x >= 0, at least half a day.
    """
    x = np.nan_to_num(_col(frame, "repeat_purchase_days"), nan=0.0)
    gap = np.nan_to_num(_col(frame, "purchase_gap_mean"), nan=0.0)
    T = _col(frame, "days_since_first_purchase")
    T = np.where(np.isnan(T), _col(frame, "tenure_days"), T)
    T = np.maximum(np.nan_to_num(T, nan=0.0), 0.5)
    tx = np.minimum(np.where(x > 0, x * gap, 0.0), T)
    return x, tx, T


def log_likelihood(params, x, tx, T) -> np.ndarray:
    """Per-user BG/NBD log-likelihood of (x, t_x, T) under params (r, alpha, a, b)."""
    r, alpha, a, b = params
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-12)) - (r + x) * np.log(alpha + tx), -np.inf)
    return a1 + a2 + np.logaddexp(a3, a4)


def _odds_dead(params, x, tx, T) -> np.ndarray:
    r, alpha, a, b = params
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = (a / np.maximum(b + x - 1, 1e-12)) * np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + tx)))
    return np.where(x > 0, d, 0.0)


def p_alive(params, x, tx, T) -> np.ndarray:
    """P(alive at T | x, t_x, T); 1 for users without a repeat purchase (BG/NBD drops out only after one)."""
    return 1.0 / (1.0 + _odds_dead(params, x, tx, T))


def p_at_least(params, x, tx, T, t: float, k: int) -> np.ndarray:
    """P(at least k = 1 or 2 purchases in (T, T + t] | x, t_x, T).

    Alive, lambda ~ Gamma(r + x, alpha + T) and p ~ Beta(a, b + x), independent (the alive part of
    the likelihood factorises): one or more = alive x (1 - E[e^(-lambda t)]); two or more = alive x
    E[1 - p] x (1 - E[e^(-lambda t)] - t E[lambda e^(-lambda t)]) (a Poisson count of two, surviving
    the first purchase).
    """
    r, alpha, a, b = params
    log_ratio = np.log(alpha + T) - np.log(alpha + T + t)
    quiet = np.exp((r + x) * log_ratio)
    alive = p_alive(params, x, tx, T)
    if k == 1:
        return alive * (1.0 - quiet)
    if k == 2:
        lam_quiet = (r + x) / (alpha + T) * np.exp((r + x + 1) * log_ratio)
        return np.maximum(alive * (b + x) / (a + b + x) * (1.0 - quiet - t * lam_quiet), 0.0)
    raise ValueError(f"p_at_least has closed forms for k = 1 or 2, not {k}")


def p_no_purchase(params, x, tx, T, t: float) -> np.ndarray:
    """P(no purchase in (T, T + t]): dead, or alive with no arrival."""
    return 1.0 - p_at_least(params, x, tx, T, t, 1)


def expected_purchases(params, x, tx, T, t: float) -> np.ndarray:
    """E[purchases in (T, T + t] | x, t_x, T] (Fader, Hardie & Lee 2005, eq. 10)."""
    r, alpha, a, b = params
    z = t / (alpha + T + t)
    head = (a + b + x - 1) / (a - 1) if abs(a - 1) > 1e-6 else (a + b + x - 1) / 1e-6
    tail = 1.0 - np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t))) * hyp2f1(r + x, b + x, a + b + x - 1, z)
    return np.maximum(head * tail * p_alive(params, x, tx, T), 0.0)


def fit_params(x, tx, T, max_rows: int = 200_000, seed: int = 0) -> tuple[float, ...]:
    """Maximum-likelihood (r, alpha, a, b) (L-BFGS-B on log parameters; a row sample above `max_rows`)."""
    x, tx, T = (np.asarray(v, dtype=float) for v in (x, tx, T))
    if len(x) > max_rows:
        keep = np.random.default_rng(seed).choice(len(x), max_rows, replace=False)
        x, tx, T = x[keep], tx[keep], T[keep]

    # The likelihood depends on (x, t_x, T) alone: each distinct triple once, weighted by its count
    # (non-buyers share a handful of tenures), the same mean in a fraction of the evaluations.
    u, n = np.unique(np.column_stack([x, tx, T]), axis=0, return_counts=True)
    x, tx, T, w = u[:, 0], u[:, 1], u[:, 2], n / n.sum()

    def nll(logp):
        return -(log_likelihood(np.exp(logp), x, tx, T) * w).sum()

    start = np.log([1.0, max(float((T * w).sum()), 1.0), 1.0, 1.0])
    res = minimize(nll, start, method="L-BFGS-B", bounds=[(-10, 10), (-10, 15), (-10, 10), (-10, 10)])
    return tuple(float(v) for v in np.exp(res.x))


class BTYDCandidate:
    """BG/NBD as a model candidate: fit on a feature table, score churn or promotion at horizon H.

    churn: P(no purchase in the next H days); promotion: P(the purchases the next purchase tier needs
    happen in H), from the tier rank at T (column `tier`): one purchase up to `engaged` (to `buyer`),
    two from `buyer` (to `repeat`, on a purchases-only log with P = H exact; otherwise days still in
    the period count too, so a lower bound), none of the ladder above (KOC needs referrals: 0).
    Without the tier column, 1 - exp(-E[purchases in H]) (a rank, not a probability).
    """

    def __init__(self, label: str, horizon_days: int, params: tuple[float, ...] | None = None):
        if label not in ("churn", "promotion"):
            raise ValueError(f"BG/NBD scores churn or promotion, not {label}")
        self.label, self.horizon_days, self.params = label, int(horizon_days), params

    def fit(self, frame: pd.DataFrame, y=None) -> BTYDCandidate:
        """Fit the parameters on a feature table (y is not used: BG/NBD models purchases, not the label)."""
        self.params = fit_params(*inputs(frame))
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """The label's score per row of a feature table (columns INPUTS)."""
        if self.params is None:
            raise ValueError("BTYDCandidate.predict_proba before fit")
        x, tx, T = inputs(X)
        H = self.horizon_days
        if self.label == "churn":
            return p_no_purchase(self.params, x, tx, T, H)
        if "tier" not in X:
            return -np.expm1(-expected_purchases(self.params, x, tx, T, H))
        rank = np.nan_to_num(_col(X, "tier"), nan=TIER_RANK["engaged"])
        return np.select(
            [rank <= TIER_RANK["engaged"], rank == TIER_RANK["buyer"]],
            [p_at_least(self.params, x, tx, T, H, 1), p_at_least(self.params, x, tx, T, H, 2)],
            0.0,
        )

    def to_json(self) -> str:
        """Label, horizon and parameters as plain JSON."""
        return json.dumps({"kind": "bgnbd", "label": self.label, "horizon_days": self.horizon_days,
                           "params": dict(zip(PARAMS, self.params or ()))})  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> BTYDCandidate:
        """Inverse of to_json."""
        d = json.loads(text)
        params = tuple(float(d["params"][k]) for k in PARAMS) if d["params"] else None
        return cls(d["label"], d["horizon_days"], params)


class BTYDScorer:
    """The BG/NBD candidate on numpy rows in feature-name order (training.select's candidate interface)."""

    kind = "btyd"

    def __init__(self, label: str, names: list[str], horizon_days: int, params: tuple[float, ...] | None = None):
        self.names = list(names)
        self.model = BTYDCandidate(label, horizon_days, params)

    def _frame(self, X: np.ndarray) -> dict[str, np.ndarray]:
        # A dict, not a DataFrame: building one costs more than the model on an API-sized request.
        return {c: X[:, self.names.index(c)] for c in (*INPUTS, "tier") if c in self.names}

    def fit(self, X: np.ndarray, y=None, names=None) -> BTYDScorer:
        """Fit the four parameters on the rows' purchase history (y is not used)."""
        self.model.fit(self._frame(X))
        return self

    def predict(self, X: np.ndarray, pred_contrib: bool = False) -> np.ndarray:
        """Scores, or (pred_contrib) n x features+1 log-odds with everything in the bias column.

        BG/NBD is a closed form of three inputs, not a sum over features: its reasons would be
        made up, so the whole log-odds sits in the bias and the feature columns stay zero.
        """
        p = np.clip(self.model.predict_proba(self._frame(X)), 1e-9, 1 - 1e-9)
        if not pred_contrib:
            return p
        out = np.zeros((len(p), len(self.names) + 1))
        out[:, -1] = np.log(p / (1 - p))
        return out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Scores, one per row."""
        return self.predict(X)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """n x features+1 log-odds (all in the bias)."""
        return self.predict(X, pred_contrib=True)

    def to_json(self) -> dict:
        """Kind, feature names and the BG/NBD state as plain JSON."""
        return {"kind": self.kind, "names": self.names, "model": json.loads(self.model.to_json())}


def candidate(label: str, names: list[str], cfg) -> BTYDScorer | None:
    """The BG/NBD candidate for `label`, or None where it does not apply (KOC, or no purchase features)."""
    if label not in ("churn", "promotion") or not set(INPUTS) <= set(names):
        return None
    return BTYDScorer(label, names, cfg.windows.horizon_days)


def from_json(d: dict) -> BTYDScorer:
    """Inverse of BTYDScorer.to_json."""
    m = BTYDCandidate.from_json(json.dumps(d["model"]))
    return BTYDScorer(m.label, d["names"], m.horizon_days, m.params)
