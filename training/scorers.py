"""Candidate scorers besides LightGBM: the RFM logistic regression, the operator rule and the blend.

Every candidate has the same small interface, so selection, the registry and serving treat them
alike: `fit(X, y, names)` on numpy rows in feature-name order, `predict(X, pred_contrib=False)`
(the raw score, or n x features+1 contributions with the bias last, like a LightGBM booster),
`predict_proba(X)`, `contributions(X)`, and `to_json()` / `from_json()` (plain numbers, no pickle).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) with p clipped away from 0 and 1."""
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z))."""
    from scipy.special import expit  # no overflow warning for a large |z| (a near-separable fit)

    return expit(np.asarray(z, dtype=float))


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


class _Scorer:
    """Shared plumbing: predict_proba / contributions from predict."""

    kind = ""

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities, one per row of X (n x features in feature-name order, NaN = missing)."""
        return self.predict(X)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature contributions in log-odds (n x features+1, last column the bias)."""
        return self.predict(X, pred_contrib=True)


class LogisticScorer(_Scorer):
    """Logistic regression on RFM columns: median-impute (+ missing indicator), signed log, standardise.

    The `logistic` baseline; stored as coefficients so serving needs numpy only.
    """

    kind = "logistic"

    def __init__(self, columns: Sequence[str], seed: int = 0, max_rows: int = 200_000, state: dict | None = None):
        self.columns, self.seed, self.max_rows, self.s = list(columns), seed, max_rows, state or {}

    def _design(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(standardised values, standardised missing indicators), each n x len(columns)."""
        s = self.s
        V = X[:, s["idx"]]
        miss = np.isnan(V)
        V = np.where(miss, np.asarray(s["median"]), V)
        Z = (_signed_log(V) - np.asarray(s["mean"])) / np.asarray(s["scale"])
        M = (miss - np.asarray(s["mean_ind"])) / np.asarray(s["scale_ind"])
        return Z, M

    def fit(self, X: np.ndarray, y: np.ndarray, names: Sequence[str]) -> LogisticScorer:
        """Fit on rows X (columns `names`) and outcomes y; returns self."""
        from sklearn.linear_model import LogisticRegression

        if len(X) > self.max_rows:  # a baseline, not the product: a sample fits as well
            keep = np.sort(np.random.default_rng(self.seed).choice(len(X), self.max_rows, replace=False))
            X, y = X[keep], y[keep]
        idx = [list(names).index(c) for c in self.columns]
        V = X[:, idx]
        miss = np.isnan(V)
        with warnings.catch_warnings():  # an all-missing column has no median: 0 (its indicator carries it)
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nan_to_num(np.nanmedian(V, axis=0)) if len(V) else np.zeros(len(idx))
        L = _signed_log(np.where(miss, med, V))
        sd = lambda a: np.where(a.std(0) > 0, a.std(0), 1.0)  # noqa: E731
        self.s = {"idx": idx, "median": med.tolist(), "mean": L.mean(0).tolist(), "scale": sd(L).tolist()}
        self.s |= {"mean_ind": miss.mean(0).tolist(), "scale_ind": sd(miss.astype(float)).tolist()}
        Z, M = self._design(X)
        # Newton steps: a few dozen columns, so the exact optimum in ~5 iterations (L-BFGS stopped
        # short of it in ~60, 5x slower).
        lr = LogisticRegression(solver="newton-cholesky", max_iter=200, random_state=self.seed)
        lr.fit(np.hstack([Z, M]), y)
        k = len(idx)
        self.s |= {"coef": lr.coef_[0, :k].tolist(), "coef_ind": lr.coef_[0, k:].tolist()}
        self.s["intercept"] = float(lr.intercept_[0])
        return self

    def predict(self, X: np.ndarray, pred_contrib: bool = False) -> np.ndarray:
        """Probabilities, or contributions (coefficient x standardised value, per feature; bias last)."""
        Z, M = self._design(np.asarray(X, dtype=float))
        part = Z * np.asarray(self.s["coef"]) + M * np.asarray(self.s["coef_ind"])
        if not pred_contrib:
            return sigmoid(part.sum(1) + self.s["intercept"])
        out = np.zeros((len(X), X.shape[1] + 1))
        out[:, self.s["idx"]] = part
        out[:, -1] = self.s["intercept"]
        return out

    def to_json(self) -> dict:
        """JSON-ready state."""
        return {"kind": self.kind, "columns": self.columns, "state": self.s}

    @classmethod
    def from_json(cls, d: dict) -> LogisticScorer:
        """Rebuild from `to_json` output."""
        return cls(d["columns"], state=d["state"])


class RuleScorer(_Scorer):
    """The operator's rule as a servable scorer.

    churn: days since the last activity (never active = the longest gap), through a one-feature
    logistic fit so it reads as a probability. promotion / koc: the label's rate in the user's tier
    on the training rows (unseen tiers: the overall rate).
    """

    kind = "rule"

    def __init__(self, label: str, column: str, state: dict | None = None):
        self.label, self.column, self.s = label, column, state or {}

    def _gap(self, X: np.ndarray) -> np.ndarray:
        g = X[:, self.s["idx"]]
        return np.log1p(np.where(np.isnan(g), self.s["fill"], np.maximum(g, 0.0)))

    def fit(self, X: np.ndarray, y: np.ndarray, names: Sequence[str]) -> RuleScorer:
        """Fit the rule's few numbers on rows X (columns `names`); returns self."""
        from siyu.errors import SiyuError

        if self.column not in names:
            raise SiyuError(f"{self.label} rule: feature '{self.column}' is not in the table")
        self.s = {"idx": list(names).index(self.column)}
        self._rate_cache = self._bias_cache = None  # built from the new state on first use
        x = X[:, self.s["idx"]]
        if self.label == "churn":
            from sklearn.linear_model import LogisticRegression

            self.s["fill"] = float(np.nanmax(x, initial=0.0)) * 2 + 365.0  # never active ranks last
            lr = LogisticRegression(C=1e6, max_iter=1000).fit(self._gap(X).reshape(-1, 1), y)
            self.s |= {"a": max(float(lr.coef_[0, 0]), 1e-6), "b": float(lr.intercept_[0])}  # longer gap, more risk
        else:
            key = np.nan_to_num(x, nan=-1.0)
            tiers = np.unique(key)
            self.s |= {"tiers": tiers.tolist(), "rates": [float(y[key == t].mean()) for t in tiers]}
            self.s["overall"] = float(np.mean(y)) if len(y) else 0.0
        return self

    def predict(self, X: np.ndarray, pred_contrib: bool = False) -> np.ndarray:
        """Probabilities, or contributions (all on the rule's one feature; bias last)."""
        X = np.asarray(X, dtype=float)
        if self.label == "churn":
            z = self.s["a"] * self._gap(X) + self.s["b"]
        else:
            rate, overall = self._rates()
            x = X[:, self.s["idx"]]
            z = logit(np.array([rate.get(k, overall) for k in np.where(np.isnan(x), -1.0, x).tolist()]))
        if not pred_contrib:
            return sigmoid(z)
        out = np.zeros((len(X), X.shape[1] + 1))
        bias = self._bias()
        out[:, self.s["idx"]], out[:, -1] = z - bias, bias
        return out

    def _rates(self) -> tuple[dict, float]:
        """(tier -> rate, overall rate), built once: a one-user request should not rebuild them."""
        if getattr(self, "_rate_cache", None) is None:
            self._rate_cache = (dict(zip(self.s["tiers"], self.s["rates"])), self.s["overall"])
        return self._rate_cache

    def _bias(self) -> float:
        """The contributions' bias (log-odds of the overall rate), computed once."""
        if getattr(self, "_bias_cache", None) is None:
            self._bias_cache = float(logit(np.array([self.s.get("overall", sigmoid(self.s.get("b", 0.0)))]))[0])
        return self._bias_cache

    def to_json(self) -> dict:
        """JSON-ready state."""
        return {"kind": self.kind, "label": self.label, "column": self.column, "state": self.s}

    @classmethod
    def from_json(cls, d: dict) -> RuleScorer:
        """Rebuild from `to_json` output."""
        return cls(d["label"], d["column"], d["state"])


class BlendScorer(_Scorer):
    """Weighted average of calibrated members' log-odds: sigmoid(sum_i w_i * logit(cal_i(raw_i(X)))).

    Members are (scorer, calibrator) pairs; weights sum to 1 and are chosen on the folds.
    """

    kind = "blend"

    def __init__(self, members: list, weights: Sequence[float]):
        self.members, self.weights = members, [float(w) for w in weights]

    def predict(self, X: np.ndarray, pred_contrib: bool = False) -> np.ndarray:
        """Probabilities, or the members' contributions weighted (Platt slopes folded in; bias last)."""
        if not pred_contrib:
            z = sum(w * logit(cal.apply(m.predict(X))) for (m, cal), w in zip(self.members, self.weights))
            return sigmoid(z)
        out = 0.0
        for (m, cal), w in zip(self.members, self.weights):
            a, b = (cal.params["a"], cal.params["b"]) if cal.method == "platt" else (1.0, 0.0)
            c = np.array(m.predict(X, pred_contrib=True), dtype=float) * (w * a)
            c[:, -1] += w * b
            out = out + c
        return out

    def to_json(self) -> dict:
        """JSON-ready state (members by their own `to_json`)."""
        return {
            "kind": self.kind,
            "weights": self.weights,
            "members": [{"scorer": scorer_json(m), "calibrator": cal.to_dict()} for m, cal in self.members],
        }

    @classmethod
    def from_json(cls, d: dict) -> BlendScorer:
        """Rebuild from `to_json` output."""
        from training.calibrate import Calibrator

        members = [(scorer_from_json(x["scorer"]), Calibrator.from_dict(x["calibrator"])) for x in d["members"]]
        return cls(members, d["weights"])


class BoosterScorer(_Scorer):
    """A LightGBM booster behind the candidate interface (blend members, JSON round trip)."""

    kind = "lightgbm"

    def __init__(self, booster):
        self.booster = booster

    def predict(self, X: np.ndarray, pred_contrib: bool = False) -> np.ndarray:
        """Raw probabilities, or TreeSHAP contributions."""
        return self.booster.predict(X, pred_contrib=pred_contrib)

    def to_json(self) -> dict:
        """The booster as LightGBM's text model."""
        return {"kind": self.kind, "booster": self.booster.model_to_string()}

    @classmethod
    def from_json(cls, d: dict) -> BoosterScorer:
        """Rebuild from `to_json` output."""
        import lightgbm as lgb

        return cls(lgb.Booster(model_str=d["booster"]))


def scorer_json(s) -> dict:
    """`to_json()` of a candidate (a bare LightGBM booster is wrapped first)."""
    return (s if hasattr(s, "to_json") else BoosterScorer(s)).to_json()


def scorer_from_json(d: dict):
    """Rebuild any candidate from its `to_json()` dict, dispatched on `kind`."""
    kinds = {c.kind: c for c in (LogisticScorer, RuleScorer, BlendScorer, BoosterScorer)}
    if d["kind"] == "btyd":
        from training import btyd  # optional module (BG/NBD); present when its branch is merged

        return btyd.from_json(d)
    return kinds[d["kind"]].from_json(d)
