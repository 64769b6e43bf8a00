"""Metrics of a value prediction (LTV): normalized Gini with paired-bootstrap intervals, and the rest.

Normalized Gini = Gini(realised ordered by the prediction) / Gini(realised ordered by itself): 1
ranks value perfectly, 0 is a random order. Tied predictions share their group's mean position
(a baseline predicting 0 for most users is not credited with a lucky order). Resamples are
Poisson(1) row weights shared by every scorer of a call (the paired bootstrap, as
training/bootstrap.py does for ROC AUC).
"""

from __future__ import annotations

import numpy as np

from training.bootstrap import side_by_side, spread_to_full, subsample

_CHUNK = 8


class _Ranked:
    """Rows sorted by descending score, grouped by tied score."""

    def __init__(self, p: np.ndarray):
        p = np.asarray(p, dtype=float)
        self.order = np.argsort(-p, kind="stable")
        ps = p[self.order]
        self.starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])

    def area(self, a: np.ndarray, W: np.ndarray) -> np.ndarray:
        """Unnormalised Gini per row of W (resamples x rows): sum_g (A_g/A)(1 - mid-position_g / n) - 1/2."""
        Ws = W[:, self.order]
        Aw = np.add.reduceat(Ws * a[self.order], self.starts, axis=1)  # realised value per tie group
        Nw = np.add.reduceat(Ws, self.starts, axis=1)  # weight per tie group
        before = np.cumsum(Nw, axis=1) - Nw
        n = Nw.sum(1, keepdims=True)
        A = Aw.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return ((Aw / A) * (n - before - (Nw - 1) / 2) / n).sum(1) - (n[:, 0] + 1) / (2 * n[:, 0])


def gini_resamples(
    y: np.ndarray, scores: dict[str, np.ndarray], n_boot: int, seed: int, max_rows: int = 0
) -> dict[str, np.ndarray]:
    """Normalized Gini of every scorer on the same Poisson-bootstrap resamples (name -> array(n_boot)).

    Above `max_rows` rows (> 0): a seeded subsample's resamples, spread scaled to every row
    (training/bootstrap.spread_to_full).
    """
    idx = subsample(len(y), max_rows, seed)
    if idx is not None:
        y, sub = np.asarray(y, dtype=float), {k: np.asarray(v)[idx] for k, v in scores.items()}
        res = gini_resamples(y[idx], sub, n_boot, seed)
        return {k: spread_to_full(res[k], gini(y[idx], sub[k]), gini(y, scores[k]), len(idx), len(y)) for k in res}
    y = np.asarray(y, dtype=float)
    perfect = _Ranked(y)
    ranked = {k: _Ranked(v) for k, v in scores.items()}
    out: dict[str, list] = {k: [] for k in scores}
    rng = np.random.default_rng(seed)
    with side_by_side(len(ranked) + 1) as pool:
        for start in range(0, n_boot, _CHUNK):
            W = rng.poisson(1.0, size=(min(_CHUNK, n_boot - start), len(y))).astype(float)
            best, *areas = pool.map(lambda r: r.area(y, W), [perfect, *ranked.values()])  # noqa: B023
            for k, a in zip(ranked, areas):
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[k].append(a / best)
    return {k: np.concatenate(v) if v else np.array([]) for k, v in out.items()}


def gini(y: np.ndarray, p: np.ndarray) -> float:
    """Normalized Gini of predictions p for realised values y (ties: mean position)."""
    y = np.asarray(y, dtype=float)
    W = np.ones((1, len(y)))
    return float(_Ranked(p).area(y, W)[0] / _Ranked(y).area(y, W)[0])


def value_metrics(y: np.ndarray, p: np.ndarray, top: float = 0.1) -> dict[str, float]:
    """Gini, Spearman, top-share capture, MAE and total predicted / realised of one scorer.

    Args:
        y: realised value per row.
        p: predicted value per row.
        top: the top share of rows by prediction whose realised value is reported.

    Returns:
        {"gini", "spearman", "top10_share", "mae", "total_ratio"} (top10 = `top` as a share).
    """
    from scipy.stats import spearmanr

    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    k = max(1, int(round(top * len(y))))
    r = _Ranked(p)
    # The top-k rows by prediction; a tie group cut by the boundary counts at its mean value.
    Aw = np.add.reduceat(y[r.order], r.starts)
    Nw = np.diff(np.r_[r.starts, len(y)])
    taken = np.clip(k - (np.cumsum(Nw) - Nw), 0, Nw)
    top_value = float((Aw * taken / Nw).sum())
    return {
        "gini": gini(y, p),
        "spearman": float(spearmanr(y, p).statistic) if np.ptp(p) > 0 else 0.0,
        "top10_share": top_value / y.sum() if y.sum() else float("nan"),
        "mae": float(np.mean(np.abs(y - p))),
        "total_ratio": float(p.sum() / y.sum()) if y.sum() else float("nan"),
    }


def deciles(y: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mean predicted and mean realised value per prediction decile (lowest first)."""
    order = np.argsort(np.asarray(p, dtype=float), kind="stable")
    parts = np.array_split(order, bins)
    return np.array([p[i].mean() for i in parts]), np.array([y[i].mean() for i in parts])


def calibration_plot(path, y: np.ndarray, scores: dict[str, np.ndarray | None]) -> None:
    """Decile calibration plot (predicted vs realised mean per decile), one line per scorer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    hi = 0.0
    for name, p in scores.items():
        if p is None:
            continue
        mp, my = deciles(y, p)
        ax.plot(mp, my, marker="o", label=name)
        hi = max(hi, float(np.nanmax(mp)), float(np.nanmax(my)))
    ax.plot([0, hi], [0, hi], color="grey", linestyle=":", label="perfect")
    ax.set_xlabel("mean predicted value per decile")
    ax.set_ylabel("mean realised value")
    ax.set_title("LTV calibration by decile of the prediction")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
