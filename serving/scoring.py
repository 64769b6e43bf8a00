"""One scoring path for batch and API: feature rows -> calibrated probability per label,
percentile against a reference distribution, risk bucket and top reasons.

Everything here works on NumPy arrays (no DataFrame, no pyfunc): the API calls it
for one row per request, batch scoring for chunks of a million.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from serving.blendpath import BlendPath
from serving.explain import PathExplainer
from siyu.contract import LABELS

N_REASONS = 3
# How a reason sentence names each score.
LABEL_PHRASE = {
    "churn": "the churn risk",
    "promotion": "the chance of moving up a tier",
    "koc": "the chance of becoming a KOC",
    "ltv": "the predicted lifetime value",
}
# Units printed after a value; the rest ("count", "ratio", ...) read fine bare.
_UNIT_SUFFIX = {"days": " days", "day": " days", "currency": " (currency)"}


class ScoringModel(Protocol):
    """What training.model_registry.load_model returns, whatever its kind (training/scorer_files.py).

    A LightGBM model also has `booster` and `calibrator`: the Scorer then takes the native path
    (serving/explain.py); any other kind is scored through these two methods.
    """

    name: str
    version: int
    feature_names: list[str]

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """n x (features + 1) contributions in log-odds, last column the bias."""
        ...


@dataclass
class Scored:
    """Scores of n rows for every label that has a model.

    Attributes:
        proba: label -> calibrated probability (NaN outside the label's population).
        reason_idx: label -> n x k indices into `Scorer.feature_names` of the top reasons (-1: none).
        reason_contrib: label -> n x k contributions (log-odds) of those features.
    """

    proba: dict[str, np.ndarray] = field(default_factory=dict)
    reason_idx: dict[str, np.ndarray] = field(default_factory=dict)
    reason_contrib: dict[str, np.ndarray] = field(default_factory=dict)


class Scorer:
    """The loaded models plus the column map from feature rows to each model's inputs.

    Args:
        models: label -> ScoringModel (a label without a model is left out: its scores are null).
        feature_names: column order of the feature rows this scorer receives.
        reasons: "path" (decision-path attributions, see explain.py) or "shap" (LightGBM TreeSHAP).
    """

    def __init__(self, models: dict[str, ScoringModel], feature_names: list[str], reasons: str = "path"):
        self.models = {lab: models[lab] for lab in LABELS if lab in models}
        self.feature_names = list(feature_names)
        self.reasons = reasons
        pos = {f: i for i, f in enumerate(self.feature_names)}
        bad = {lab: [f for f in m.feature_names if f not in pos] for lab, m in self.models.items()}
        bad = {lab: fs for lab, fs in bad.items() if fs}
        if bad:
            lab, fs = next(iter(bad.items()))
            raise ValueError(f"model {lab} needs features missing from the snapshot: {fs[:5]}")
        self._cols = {lab: np.array([pos[f] for f in m.feature_names]) for lab, m in self.models.items()}
        # Identity column maps skip a copy on the hot path.
        self._identity = {
            lab: bool(len(c) == len(pos) and (c == np.arange(len(pos))).all()) for lab, c in self._cols.items()
        }
        # Decision paths exist only for LightGBM; a baseline or blend champion gives its own contributions,
        # and the operator rule of a thin label (serving/rules.py) none.
        self._explainers = {
            lab: PathExplainer(m.booster)
            for lab, m in self.models.items()
            if _kind(m) == "lightgbm" and getattr(m, "booster", None) is not None
        }
        self._fast = {lab: _fast_proba_ok(self.models[lab], ex) for lab, ex in self._explainers.items()}
        # A blend's LightGBM members take the same native path (serving/blendpath.py).
        self._blends = {lab: b for lab, m in self.models.items() if (b := BlendPath.create(m)) is not None}

    @property
    def kinds(self) -> dict[str, str | None]:
        """label -> the kind of scorer serving it (lightgbm, blend, logistic, rule, btyd; None: no model)."""
        return {lab: (_kind(self.models[lab]) if lab in self.models else None) for lab in LABELS}

    @property
    def versions(self) -> dict[str, int | None]:
        """label -> registered model version (None when the label has no model, or a rule scores it)."""
        out = {}
        for lab in LABELS:
            v = getattr(self.models[lab], "version", None) if lab in self.models else None
            out[lab] = int(v) if v is not None else None
        return out

    def _inputs(self, label: str, X: np.ndarray) -> np.ndarray:
        return X if self._identity[label] else X[:, self._cols[label]]

    def score(self, X: np.ndarray, pops: dict[str, np.ndarray], reasons: bool = True) -> Scored:
        """Probabilities (and top reasons) for feature rows.

        Args:
            X: n x len(feature_names) float matrix (NaN = missing).
            pops: label -> boolean mask of rows inside that label's population.
            reasons: also compute the top reasons from per-feature contributions.

        Returns:
            Scored; rows outside a population get NaN and reason index -1.
        """
        out = Scored()
        n = X.shape[0]
        for lab, _model in self.models.items():
            mask = np.asarray(pops[lab], dtype=bool)
            p = np.full(n, np.nan)
            idx = np.full((n, N_REASONS), -1, dtype=np.int64)
            con = np.zeros((n, N_REASONS))
            if mask.any():
                Xl = self._inputs(lab, X if mask.all() else X[mask])
                p[mask], contrib = self._predict(lab, Xl, reasons)
                if contrib is not None:
                    i, c = top_reasons(contrib)
                    idx[mask] = self._cols[lab][i]
                    con[mask] = c
            out.proba[lab] = p
            out.reason_idx[lab] = idx
            out.reason_contrib[lab] = con
        return out

    def _predict(self, lab: str, Xl: np.ndarray, reasons: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated probabilities and (optionally) contributions with as few LightGBM calls as possible."""
        model, ex = self.models[lab], self._explainers.get(lab)
        # One thread for API-sized requests: OpenMP start-up costs more than a few rows take.
        threads = 1 if len(Xl) < 5000 else 0
        blend = self._blends.get(lab)
        if blend is not None and (self.reasons == "path" or not reasons):
            return blend.predict(Xl, reasons, threads)
        if ex is None:  # a baseline / blend gives its own contributions; the thin-data rule has none
            has = callable(getattr(model, "contributions", None))
            return model.predict_proba(Xl), (model.contributions(Xl) if reasons and has else None)
        if self._fast.get(lab) and (reasons and self.reasons == "path" or not reasons):
            leaves = ex.leaves(Xl, threads)
            p = model.calibrator.apply(_sigmoid(ex.raw(leaves)))
            return p, (ex.contributions(leaves=leaves) if reasons else None)
        p = model.predict_proba(Xl)
        if not reasons:
            return p, None
        if self.reasons == "shap" or ex is None:
            return p, model.contributions(Xl)
        return p, ex.contributions(Xl, num_threads=threads)


def _kind(model) -> str:
    return getattr(model, "kind", "lightgbm")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _fast_proba_ok(model: ScoringModel, ex: PathExplainer) -> bool:
    """Whether calibrator(sigmoid(raw from leaves)) reproduces model.predict_proba (checked on probe rows).

    It does for LightGBM's binary objective; anything else keeps the slower, always-right path.
    """
    if not hasattr(model, "calibrator"):
        return False
    rng = np.random.default_rng(0)
    probe = rng.normal(scale=3.0, size=(64, ex.n_features)) * rng.choice([1, 10, 100], size=(64, 1))
    probe[::7] = np.nan
    fast = model.calibrator.apply(_sigmoid(ex.raw(ex.leaves(probe, 1))))
    return bool(np.allclose(fast, model.predict_proba(probe), rtol=0, atol=1e-9))


def top_reasons(contrib: np.ndarray, k: int = N_REASONS) -> tuple[np.ndarray, np.ndarray]:
    """The k features with the largest absolute contribution per row, largest first (ties: lower position first).

    The order is that of a stable sort of each row, for any number of rows, so a user's reasons never
    depend on the batch they were scored in; k passes of argmax keep it linear in the row width.

    Args:
        contrib: n x (features + 1) from LightGBM pred_contrib (last column: the bias).

    Returns:
        (n x k feature positions, n x k contributions).
    """
    c = contrib[:, :-1]
    k = min(k, c.shape[1])
    # |c| is >= 0, so -1 marks a position already taken and -0.5 a NaN (after every number, as a sort puts it).
    a = np.abs(c)
    a[np.isnan(a)] = -0.5
    rows = np.arange(len(c))
    idx = np.empty((len(c), k), dtype=np.int64)
    for j in range(k):
        idx[:, j] = best = a.argmax(axis=1)
        a[rows, best] = -1.0
    return idx, np.take_along_axis(c, idx, axis=1)


def reference(proba: np.ndarray) -> np.ndarray:
    """The sorted, non-missing scores of a pool: what percentiles are measured against."""
    p = np.asarray(proba, dtype=float)
    return np.sort(p[~np.isnan(p)])


def percentiles(proba: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Percentile rank (0-100) of each score in the reference: the share of the pool scoring lower plus half
    the share scoring the same.

    Ties sit at the middle of their group, so a score the whole pool shares (a rule's 0 for a label the log
    cannot show) is at 50, not 100 ("high" for everyone), and a group tied at the bottom is not lifted to
    the top of its span.

    Args:
        proba: scores (NaN stays NaN).
        ref: sorted reference scores (see `reference`).
    """
    p = np.asarray(proba, dtype=float)
    if len(ref) == 0:
        return np.full(p.shape, np.nan)
    ranks = np.searchsorted(ref, p, side="left") + np.searchsorted(ref, p, side="right")
    return np.where(np.isnan(p), np.nan, ranks * (50.0 / len(ref)))


def buckets(pct: np.ndarray, bounds: dict[str, float]) -> np.ndarray:
    """Risk bucket per percentile: the bucket with the highest lower bound (0-1) not above it.

    Args:
        pct: percentiles 0-100 (NaN -> None).
        bounds: bucket name -> lower bound as a share (cfg.scoring.buckets).
    """
    edges, labels = _bucket_edges(tuple(bounds.items()))
    pct = np.asarray(pct, dtype=float)
    nan = np.isnan(pct)
    pos = np.searchsorted(edges, np.where(nan, -1.0, pct), side="right")
    return np.where(nan, None, labels[pos])


@functools.lru_cache(maxsize=8)
def _bucket_edges(bounds: tuple[tuple[str, float], ...]) -> tuple[np.ndarray, np.ndarray]:
    """(percentile edges, None + bucket names) of `buckets`, built once per bucket setting."""
    ordered = sorted(bounds, key=lambda kv: kv[1])
    return np.array([v for _, v in ordered]) * 100.0, np.array([None, *(b for b, _ in ordered)], dtype=object)


def format_value(value: float | None, unit: str = "") -> str:
    """A feature value as a reader sees it: rounded, with its unit where that helps."""
    if value is None or value != value:  # NaN
        return "unknown (no such events)"
    v = float(value)
    if v.is_integer() and abs(v) < 1e12:
        text = str(int(v))
    else:
        text = f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return text + _UNIT_SUFFIX.get(unit, "")


class ReasonFormatter:
    """Readable reasons from the feature registry's meaning and unit, prepared once per feature.

    Args:
        features: registry entries (name, meaning, unit) in the scorer's feature order.
    """

    def __init__(self, features: list[Any]):
        self.names = [f.name for f in features]
        self.units = [f.unit for f in features]
        self.prefix = [(f.meaning[:1].upper() + f.meaning[1:] if f.meaning else f.name) + ": " for f in features]
        self.tail = {
            (lab, up): f" - {'raises' if up else 'lowers'} {phrase}."
            for lab, phrase in LABEL_PHRASE.items()
            for up in (True, False)
        }

    def item(self, label: str, j: int, value: float, contrib: float) -> dict[str, Any]:
        """One reason: feature, value, direction, contribution and a sentence.

        Args:
            label: churn, promotion or koc.
            j: the feature's position.
            value: the user's value (NaN = missing).
            contrib: its contribution (log-odds; > 0 raises the score).
        """
        up = contrib > 0
        val = None if value != value else float(value)
        return {
            "feature": self.names[j],
            "value": val,
            "direction": "up" if up else "down",
            "contribution": round(float(contrib), 4),
            "sentence": self.prefix[j] + format_value(val, self.units[j]) + self.tail[(label, up)],
        }
