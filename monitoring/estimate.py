"""Performance before the outcomes: what calibrated probabilities say the metrics will be (CBPE).

If the stored probabilities are calibrated, user i is a positive with probability p_i, so every
threshold's confusion matrix has an expected value (TP = sum of p above it, FP = sum of 1 - p
above it), and so does the ROC curve: NannyML's confidence-based performance estimation. Here
the expected AUC is computed in closed form over all pairs (i positive, j negative, i != j):

    E-AUC = sum_{i != j} p_i (1 - p_j) [s_i > s_j] (ties 1/2)  /  sum_{i != j} p_i (1 - p_j)

It can be trusted only as far as the calibration holds on the new population, which is why the
report sets it beside the realised AUC once the horizon is complete.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def expected_auc(p: np.ndarray, score: np.ndarray | None = None) -> float:
    """Expected ROC AUC of `score` when each row is positive with probability `p` (independently).

    Args:
        p: calibrated probabilities.
        score: the ranking score (default: p itself).

    Returns:
        The expected AUC (ratio of expected concordant pair weight to expected pair weight);
        NaN with fewer than two rows or no expected positives or negatives.
    """
    p = np.asarray(p, dtype=float)
    s = p if score is None else np.asarray(score, dtype=float)
    if p.size < 2:
        return float("nan")
    order = np.argsort(s, kind="stable")
    s, p = s[order], p[order]
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    pos = np.add.reduceat(p, starts)  # expected positives per distinct score
    neg = np.add.reduceat(1.0 - p, starts)
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])  # expected negatives strictly below
    self_pairs = float(np.sum(p * (1.0 - p)))  # i == j is no pair: it sat in its own tie term
    num = float(np.sum(pos * (below + 0.5 * neg))) - 0.5 * self_pairs
    den = float(pos.sum() * neg.sum()) - self_pairs
    return num / den if den > 0 else float("nan")


def expected_lift(p: np.ndarray, fractions: Sequence[float]) -> dict[str, float]:
    """Expected lift in the top fraction by score: mean p of the top k over mean p of all."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(-p, kind="stable")
    base = p.mean() if p.size else 0.0
    out = {}
    for f in fractions:
        k = max(1, int(round(f * p.size)))
        out[f"lift_top{round(f * 100):d}"] = float(p[order[:k]].mean() / base) if base > 0 else float("nan")
    return out


def estimate(p: np.ndarray, fractions: Sequence[float]) -> dict[str, float | int]:
    """Every expected metric of one label's calibrated scores.

    Args:
        p: the snapshot's stored probabilities of the label's population (no NaN).
        fractions: top shares for the expected lift.

    Returns:
        {"n", "roc_auc", "positive_rate", "brier", "lift_top5", ...} (expected values).
    """
    p = np.asarray(p, dtype=float)
    return {
        "n": int(p.size),
        "roc_auc": expected_auc(p),
        "positive_rate": float(p.mean()) if p.size else float("nan"),
        "brier": float(np.mean(p * (1.0 - p))) if p.size else float("nan"),  # E[(p - y)^2] when calibrated
        **expected_lift(p, fractions),
    }


def beside_realised(est: dict, realised: dict | None) -> dict:
    """The estimate with the realised values and the gaps (realised - expected), once they are known."""
    if not realised:
        return est
    out = dict(est)
    for k in ("roc_auc", "positive_rate", "brier"):
        if realised.get(k) is not None and est.get(k) is not None:
            out[f"realised_{k}"] = realised[k]
            out[f"gap_{k}"] = realised[k] - est[k]
    return out
