"""Drift between two scores snapshots: PSI and KS of every feature and score, tier mix and transitions.

PSI bins come from the old (reference) snapshot: quantile edges of its non-missing values plus
one bin for missing values, so a feature that goes missing more often moves too. KS is the
two-sample Kolmogorov-Smirnov statistic (max CDF gap) of the non-missing values. Columns are
read one at a time so a 1M-user pair never holds every feature matrix at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from serving.snapshot import FEATURE_PREFIX
from siyu.config import MonitoringConfig, Thresholds

LEVELS = ("ok", "watch", "alert")
# Floor of a bin's share in PSI: an empty bin would make ln(a/e) infinite (the usual guard).
SHARE_FLOOR = 1e-4


def level(value: float, t: Thresholds) -> str:
    """ok / watch / alert of a drift measure against its thresholds (NaN is ok: nothing to compare)."""
    if not np.isfinite(value) or value < t.watch:
        return "ok"
    return "alert" if value >= t.alert else "watch"


def worst(levels) -> str:
    """The most severe of some levels ("ok" when there are none)."""
    return max(levels, key=LEVELS.index, default="ok")


def psi_from_shares(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index sum((a - e) ln(a / e)) of two share vectors over the same bins."""
    e = np.maximum(np.asarray(expected, dtype=float), SHARE_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=float), SHARE_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def _shares(sorted_vals: np.ndarray, n_missing: int, edges: np.ndarray) -> np.ndarray:
    """Shares of the bins (-inf, e0), [e0, e1), ..., [ek, inf) and missing, from sorted values."""
    cuts = np.searchsorted(sorted_vals, edges, side="left")
    counts = np.diff(np.concatenate([[0], cuts, [sorted_vals.size]]))
    total = sorted_vals.size + n_missing
    return np.concatenate([counts, [n_missing]]) / max(total, 1)


def psi_sorted(old: np.ndarray, old_missing: int, new: np.ndarray, new_missing: int, bins: int) -> float:
    """PSI of two samples given as sorted non-missing values and missing counts.

    Args:
        old: the reference sample's non-missing values, sorted ascending.
        old_missing: its count of missing values.
        new: the compared sample's non-missing values, sorted.
        new_missing: its count of missing values.
        bins: quantile bins of `old` (ties merge bins, so a discrete feature gets fewer).
    """
    if old.size:
        idx = (np.arange(1, bins) * old.size) // bins
        edges = np.unique(old[idx])
    else:
        edges = np.empty(0)
    return psi_from_shares(_shares(old, old_missing, edges), _shares(new, new_missing, edges))


def ks_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample KS statistic of sorted samples: the largest gap between their empirical CDFs.

    The gap only changes at the samples' distinct values. Few of them (counts, days): both CDFs
    are looked up there. Many (continuous values): one stable merge of the two sorted runs and
    running counts, O(n), instead of 2n binary searches.
    """
    if not a.size or not b.size:
        return float("nan")
    da = a[np.flatnonzero(np.r_[a[1:] != a[:-1], True])]
    db = b[np.flatnonzero(np.r_[b[1:] != b[:-1], True])]
    if da.size + db.size <= (a.size + b.size) // 8:
        grid = np.sort(np.concatenate([da, db]), kind="stable")
        gap = np.searchsorted(a, grid, side="right") / a.size - np.searchsorted(b, grid, side="right") / b.size
        return float(np.max(np.abs(gap)))
    cat = np.concatenate([a, b])
    order = np.argsort(cat, kind="stable")  # two sorted runs: timsort merges them
    from_a = order < a.size
    gap = np.cumsum(from_a) / a.size - np.cumsum(~from_a) / b.size
    v = cat[order]
    return float(np.max(np.abs(gap[np.r_[v[1:] != v[:-1], True]])))  # after the last of each tied value


def psi(old, new, bins: int = 10) -> float:
    """PSI of two samples (NaN = missing): see psi_sorted."""
    o, n = np.asarray(old, dtype=float), np.asarray(new, dtype=float)
    om, nm = np.isnan(o), np.isnan(n)
    return psi_sorted(np.sort(o[~om]), int(om.sum()), np.sort(n[~nm]), int(nm.sum()), bins)


def ks(old, new) -> float:
    """KS statistic of the non-missing values of two samples."""
    o, n = np.asarray(old, dtype=float), np.asarray(new, dtype=float)
    return ks_sorted(np.sort(o[~np.isnan(o)]), np.sort(n[~np.isnan(n)]))


@dataclass
class ColumnDrift:
    """Drift of one column between the snapshots."""

    psi: float
    ks: float
    missing_old: float
    missing_new: float
    mean_old: float
    mean_new: float
    status: str

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in self.__dict__.items()}


def column_drift(old: np.ndarray, new: np.ndarray, cfg: MonitoringConfig) -> ColumnDrift:
    """PSI, KS, missing shares and means of one column; status is the worse of PSI's and KS's."""
    om, nm = np.isnan(old), np.isnan(new)
    o, n = np.sort(old[~om]), np.sort(new[~nm])
    p = psi_sorted(o, int(om.sum()), n, int(nm.sum()), cfg.psi_bins)
    k = ks_sorted(o, n)
    return ColumnDrift(
        psi=p,
        ks=k,
        missing_old=float(om.mean()) if old.size else float("nan"),
        missing_new=float(nm.mean()) if new.size else float("nan"),
        mean_old=float(o.mean()) if o.size else float("nan"),
        mean_new=float(n.mean()) if n.size else float("nan"),
        status=worst([level(p, cfg.psi), level(k, cfg.ks)]),
    )


def _column(pf: pq.ParquetFile, name: str) -> np.ndarray:
    return pf.read(columns=[name]).column(0).to_numpy(zero_copy_only=False).astype(np.float64)


def snapshot_drift(
    old: Path, new: Path, features: list[str], scores: list[str], cfg: MonitoringConfig, progress=None
) -> tuple[dict[str, ColumnDrift], dict[str, ColumnDrift]]:
    """Drift of every feature (`x.<name>` columns) and score (`p_<label>`, inside its population).

    Args:
        old: the reference snapshot file.
        new: the compared snapshot file.
        features: feature names present in both.
        scores: score columns present in both, e.g. ["p_churn", ...].
        cfg: the monitoring config (bins, thresholds).
        progress: optional callable(done, total) for a progress bar.

    Returns:
        (feature name -> ColumnDrift, score column -> ColumnDrift).
    """
    po, pn = pq.ParquetFile(old), pq.ParquetFile(new)
    cols = [(FEATURE_PREFIX + f, f, True) for f in features] + [(s, s, False) for s in scores]
    out_f, out_s = {}, {}
    for i, (col, name, is_feature) in enumerate(cols):
        a, b = _column(po, col), _column(pn, col)
        if not is_feature:  # a score is NaN outside its population: not "missing", just not scored
            a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        (out_f if is_feature else out_s)[name] = column_drift(a, b, cfg)
        if progress:
            progress(i + 1, len(cols))
    return out_f, out_s
