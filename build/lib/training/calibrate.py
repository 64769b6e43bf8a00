"""Probability calibration fitted on the held-back training cutoff.

The model is trained with class weights (imbalance), so its raw scores rank
well but overstate the rare class; a calibrator maps them back to honest
probabilities. Both methods are monotone non-decreasing, so they keep the
model's ranking and its monotone constraints, and both are stored as plain
numbers (JSON) so the serving hot path needs only numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


@dataclass
class Calibrator:
    """Maps raw model probabilities to calibrated ones.

    Attributes:
        method: "platt" (logistic on the raw logit), "isotonic" (step function) or "none".
        params: the fitted numbers (platt: a, b; isotonic: x, y knots).
    """

    method: str = "none"
    params: dict = field(default_factory=dict)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for raw model probabilities.

        Args:
            raw: uncalibrated probabilities, any shape.

        Returns:
            Probabilities of the same shape.
        """
        raw = np.asarray(raw, dtype=float)
        if self.method == "platt":
            z = self.params["a"] * _logit(raw) + self.params["b"]
            return 1.0 / (1.0 + np.exp(-z))
        if self.method == "isotonic":
            return np.interp(raw, self.params["x"], self.params["y"])
        return raw

    def to_dict(self) -> dict:
        """A JSON-ready description (what the model artifact stores)."""
        return {"method": self.method, "params": self.params}

    @classmethod
    def from_dict(cls, d: dict) -> Calibrator:
        """Rebuild from `to_dict` output."""
        return cls(method=d["method"], params=dict(d.get("params", {})))


def fit_calibrator(raw: np.ndarray, y: np.ndarray, method: str, seed: int = 0) -> Calibrator:
    """Fit a calibrator on held-back raw probabilities and outcomes.

    Args:
        raw: uncalibrated probabilities on the held-back cutoff.
        y: 0/1 outcomes of the same rows.
        method: "platt", "isotonic" or "none".
        seed: unused by the solvers today; kept so fits stay reproducible if that changes.

    Returns:
        The fitted Calibrator.
    """
    raw = np.asarray(raw, dtype=float)
    y = np.asarray(y, dtype=float)
    if method == "none":
        return Calibrator("none")
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6, max_iter=1000, random_state=seed)
        lr.fit(_logit(raw).reshape(-1, 1), y)
        # A negative slope would invert the ranking (and the monotone constraints); never allow it.
        a = max(float(lr.coef_[0, 0]), 1e-3)
        return Calibrator("platt", {"a": a, "b": float(lr.intercept_[0])})
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
        iso.fit(raw, y)
        return Calibrator("isotonic", {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()})
    raise ValueError(f"unknown calibration method {method!r}")
