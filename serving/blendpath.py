"""The native path for a blend champion: its LightGBM members scored from decision paths, the rest as they are.

A blend (training.scorers.BlendScorer) averages its calibrated members' log-odds. Scored
through `predict_proba` + `contributions`, each LightGBM member costs a `predict` and a TreeSHAP
`pred_contrib` per request (milliseconds a row); here one leaf prediction gives both its score
and its decision-path reasons (serving.explain.PathExplainer), as for a LightGBM champion. The
other members (rule, BG/NBD) are closed forms and keep their own `predict`.

`BlendPath.create` checks on probe rows that this reproduces `predict_proba` to 1e-9 and returns
None otherwise, so a blend it cannot reproduce keeps the plain path.
"""

from __future__ import annotations

import numpy as np

from serving.explain import PathExplainer

_EPS = 1e-6  # the clip of training.scorers.logit


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _contributions_sum(scorer, n: int) -> bool:
    """Whether `scorer`'s contributions add up to its log-odds on probe rows (then one call gives both)."""
    rng = np.random.default_rng(1)
    probe = np.abs(rng.normal(scale=3.0, size=(32, n)) * rng.choice([1, 10, 100], size=(32, 1)))
    probe[::5] = np.nan
    try:
        c = np.asarray(scorer.predict(probe, pred_contrib=True), dtype=float)
        p = scorer.predict(probe)
        return c.shape == (32, n + 1) and np.allclose(_sigmoid(c.sum(axis=1)), p, rtol=0, atol=1e-12)
    except Exception:  # noqa: BLE001 - no contributions of that shape: keep the two calls
        return False


class BlendPath:
    """Probabilities and decision-path contributions of one blend model.

    Args:
        model: a loaded blend (training.scorer_files.CandidateModel whose `booster` is a BlendScorer).
    """

    def __init__(self, model) -> None:
        self.model = model
        blend = model.booster
        self.weights = list(blend.weights)
        self.members = []  # (explainer or None, scorer, member calibrator, contribution scale, bias shift)
        for (scorer, cal), w in zip(blend.members, self.weights):
            a, b = (cal.params["a"], cal.params["b"]) if cal.method == "platt" else (1.0, 0.0)
            ex = PathExplainer(scorer.booster) if getattr(scorer, "kind", "") == "lightgbm" else None
            self.members.append((ex, scorer, cal, w * a, w * b))
        # Closed-form members whose contributions sum to their log-odds give both from one call.
        n = len(model.feature_names)
        self.sums = [ex is None and _contributions_sum(scorer, n) for ex, scorer, *_ in self.members]

    @classmethod
    def create(cls, model) -> BlendPath | None:
        """A BlendPath for `model` when it reproduces `model.predict_proba` on probe rows, else None."""
        blend = getattr(model, "booster", None)
        if getattr(model, "kind", "") != "blend" or not hasattr(blend, "members"):
            return None
        path = cls(model)
        if not any(ex is not None for ex, *_ in path.members):
            return None  # nothing to speed up
        rng = np.random.default_rng(0)
        n = len(model.feature_names)
        probe = rng.normal(scale=3.0, size=(64, n)) * rng.choice([1, 10, 100], size=(64, 1))
        probe[::7] = np.nan
        probe[:, :] = np.abs(probe)  # counts and days are non-negative; the closed-form members expect that
        fast, _ = path.predict(probe, reasons=False)
        return path if np.allclose(fast, model.predict_proba(probe), rtol=0, atol=1e-9, equal_nan=True) else None

    def predict(self, X: np.ndarray, reasons: bool, num_threads: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated probabilities and (optionally) n x (features + 1) contributions in log-odds.

        Args:
            X: n x features rows in the model's column order (NaN = missing).
            reasons: also return contributions (the members' weighted, Platt slopes folded in; bias last).
            num_threads: LightGBM threads for the leaf predictions.
        """
        z = np.zeros(len(X))
        contrib = np.zeros((len(X), X.shape[1] + 1)) if reasons else None
        for (ex, scorer, cal, scale, shift), w, sums in zip(self.members, self.weights, self.sums):
            if ex is not None:
                leaves = ex.leaves(X, num_threads)
                p = _sigmoid(ex.raw(leaves))
                c = ex.contributions(leaves=leaves) if reasons else None
            elif reasons and sums:
                c = np.asarray(scorer.predict(X, pred_contrib=True), dtype=float)
                p = _sigmoid(c.sum(axis=1))
            else:
                p = scorer.predict(X)
                c = np.asarray(scorer.predict(X, pred_contrib=True), dtype=float) if reasons else None
            z += w * _logit(cal.apply(p))
            if reasons:
                contrib += c * scale
                contrib[:, -1] += shift
        return self.model.calibrator.apply(_sigmoid(z)), contrib
