"""Bootstrap confidence intervals for ROC AUC and PR AUC, and paired differences on the same rows.

Resamples are Poisson(1) row weights (the Poisson bootstrap: each row drawn ~Poisson(1) times),
shared by every scorer of one call, so a difference between two scorers is a paired bootstrap of
the same resampled rows. Each scorer is sorted once; a resample then costs O(n) numpy.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_CHUNK = 8  # resamples per numpy block (memory: 8 x rows floats)


class _Sorted:
    """One scorer's rows sorted by descending score, grouped by tied score."""

    def __init__(self, y: np.ndarray, p: np.ndarray):
        order = np.argsort(-np.asarray(p, dtype=float), kind="stable")
        ps = np.asarray(p, dtype=float)[order]
        self.order, self.y = order, np.asarray(y, dtype=float)[order]
        self.starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
        self.tied = len(self.starts) < len(ps)

    def metrics(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ROC AUC, average precision) per row of the weight matrix W (resamples x rows, original order)."""
        Ws = W[:, self.order]
        P = Ws * self.y  # positive weight per row, then per tie group (integer-valued floats: sums are exact)
        if self.tied:
            P, Ws = np.add.reduceat(P, self.starts, axis=1), np.add.reduceat(Ws, self.starts, axis=1)
        N = Ws - P
        cP, cN = np.cumsum(P, axis=1), np.cumsum(N, axis=1)
        tp, fn_ = cP[:, -1:], cN[:, -1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = ((cP - P + 0.5 * P) * N).sum(1) / (tp[:, 0] * fn_[:, 0])
            prec = np.where(cP + cN > 0, cP / np.maximum(cP + cN, 1e-300), 0.0)
            ap = (P / tp * prec).sum(1)
        bad = (tp[:, 0] <= 0) | (fn_[:, 0] <= 0)
        auc[bad], ap[bad] = np.nan, np.nan
        return auc, ap


def side_by_side(n: int) -> ThreadPoolExecutor:
    """A pool for `n` scorers' resample passes: numpy lets go of the GIL in them (1M rows, 5 scorers: minutes)."""
    return ThreadPoolExecutor(max_workers=max(1, min(n, os.cpu_count() or 1)))


def subsample(n: int, max_rows: int, seed: int) -> np.ndarray | None:
    """Seeded sorted row indices when `n` rows exceed `max_rows` (> 0), else None (resample every row)."""
    if not max_rows or n <= max_rows:
        return None
    from training.fit import capped  # the project's one seeded row cap

    return np.flatnonzero(capped(np.ones(n, dtype=bool), max_rows, seed + 7))


def spread_to_full(samples: np.ndarray, sub_point: float, full_point: float, m: int, n: int) -> np.ndarray:
    """Resamples of an m-row subsample moved to describe all n rows (the m-out-of-n bootstrap).

    A metric's bootstrap spread shrinks as 1/sqrt(rows): the subsample's deviations from its own
    point are scaled by sqrt(m / n) around the point of every row.
    """
    return full_point + (samples - sub_point) * np.sqrt(m / n)


def resample(
    y: np.ndarray, scores: dict[str, np.ndarray], n_boot: int, seed: int, max_rows: int = 0
) -> dict[str, dict[str, np.ndarray]]:
    """Both metrics of every scorer on the same bootstrap resamples.

    Args:
        y: 0/1 outcomes.
        scores: scorer name -> scores of the same rows.
        n_boot: resamples.
        seed: the resamples' seed (same seed, same resamples).
        max_rows: above this many rows (> 0), resample a seeded subsample of this size and scale its
            spread to every row (`spread_to_full`): a 1M-row CI costs what a `max_rows` one does.

    Returns:
        name -> {"roc_auc": array(n_boot), "pr_auc": array(n_boot)}.
    """
    idx = subsample(len(y), max_rows, seed)
    if idx is not None:
        y, sub = np.asarray(y), {k: np.asarray(v)[idx] for k, v in scores.items()}
        res = resample(y[idx], sub, n_boot, seed)
        for k in scores:
            at_sub, at_full = point(y[idx], sub[k]), point(y, scores[k])
            for m in ("roc_auc", "pr_auc"):
                res[k][m] = spread_to_full(res[k][m], at_sub[m], at_full[m], len(idx), len(y))
        return res
    y = np.asarray(y, dtype=float)
    sorted_ = {k: _Sorted(y, v) for k, v in scores.items()}
    out = {k: {"roc_auc": [], "pr_auc": []} for k in scores}
    rng = np.random.default_rng(seed)
    with side_by_side(len(sorted_)) as pool:
        for start in range(0, n_boot, _CHUNK):
            W = rng.poisson(1.0, size=(min(_CHUNK, n_boot - start), len(y))).astype(float)
            for k, (auc, ap) in zip(sorted_, pool.map(lambda s: s.metrics(W), sorted_.values())):  # noqa: B023
                out[k]["roc_auc"].append(auc)
                out[k]["pr_auc"].append(ap)
    return {k: {m: np.concatenate(v) if v else np.array([]) for m, v in d.items()} for k, d in out.items()}


def point(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC AUC and PR AUC of the rows themselves (weights 1; equals scikit-learn's numbers)."""
    auc, ap = _Sorted(y, p).metrics(np.ones((1, len(y))))
    return {"roc_auc": float(auc[0]), "pr_auc": float(ap[0])}


def interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of bootstrap samples (NaN resamples ignored)."""
    s = samples[~np.isnan(samples)]
    if not len(s):
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(s, a)), float(np.quantile(s, 1 - a))


def with_ci(
    y: np.ndarray, scores: dict[str, np.ndarray], n_boot: int, seed: int, level: float, max_rows: int = 0
) -> tuple[dict[str, dict[str, float]], dict]:
    """Point metrics with `_lo` / `_hi` bounds for every scorer, and the raw resamples (for differences).

    Returns:
        (name -> {"roc_auc", "roc_auc_lo", "roc_auc_hi", "pr_auc", ...}, resample() output).
    """
    res = resample(y, scores, n_boot, seed, max_rows)
    out = {}
    for k, p in scores.items():
        m = point(y, p)
        for name in ("roc_auc", "pr_auc"):
            m[f"{name}_lo"], m[f"{name}_hi"] = interval(res[k][name], level)
        out[k] = m
    return out, res


def difference(res: dict, a: str, b: str, metric: str, level: float) -> tuple[float, float]:
    """Percentile interval of metric(a) - metric(b) over the shared resamples (the paired bootstrap)."""
    return interval(res[a][metric] - res[b][metric], level)
