"""Walk-forward folds on the training cutoffs and the choice of a label's scorer on them.

Rolling origin: fold k evaluates on training cutoff c_k and fits on the cutoffs whose labels
end by c_k (c_j + H <= c_k); the latest of those early-stops and calibrates LightGBM. Only
training rows ever reach this module: the validation cutoff is not passed in, so tuning,
candidate choice and blend weights cannot see it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from training.bootstrap import point
from training.calibrate import fit_calibrator
from training.scorers import LogisticScorer, RuleScorer, logit, sigmoid

BASELINES = ("rule", "logistic")
SIMPLER_FIRST = ("rule", "logistic", "btyd", "lightgbm", "blend")  # exact ties go to the simpler scorer
# Blend members that keep the monotone constraints (training.monotone): LightGBM enforces them, the rule
# and BG/NBD read no constrained signal; the logistic regression's signs are free, so it stays out.
MONOTONE_SAFE = ("lightgbm", "rule", "btyd")


@dataclass
class Rows:
    """Training rows of one label: the matrix in blocks (not copied whole), outcomes and cutoffs."""

    blocks: list[np.ndarray]
    y: np.ndarray
    cutoff: np.ndarray  # datetime64 per row

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Rows at positions idx (sorted) as one matrix."""
        out, start = [], 0
        for b in self.blocks:
            sel = idx[(idx >= start) & (idx < start + len(b))] - start
            out.append(b[sel])
            start += len(b)
        return np.vstack(out) if len(out) > 1 else out[0]


@dataclass
class Fold:
    """One walk-forward fold: fit, early-stopping and evaluation rows."""

    cutoff: pd.Timestamp
    fit_cutoffs: list
    X_fit: np.ndarray
    y_fit: np.ndarray
    X_es: np.ndarray
    y_es: np.ndarray
    X_eval: np.ndarray
    y_eval: np.ndarray

    @property
    def n_fit(self) -> int:
        return len(self.y_fit)


def _cap(idx: np.ndarray, n: int, rng) -> np.ndarray:
    return idx if len(idx) <= n else np.sort(rng.choice(idx, n, replace=False))


def make_folds(
    rows: Rows, n_folds: int, horizon_days: int, max_rows: int, seed: int, groups: np.ndarray | None = None
) -> list[Fold]:
    """The last `n_folds` training cutoffs as rolling-origin folds (fewer when the log is short).

    A fold with a single earlier cutoff early-stops on a seeded 20% of its rows; a fold whose
    evaluation rows lack a class is dropped. Fit, early-stopping and evaluation rows are each
    capped at `max_rows` (a seeded sample), so tuning costs the same at 20k and 1M users.
    `groups` (0 .. k-1 per row, by user), for targets longer than the embargo (LTV: a user's
    neighbouring rows share months): each cutoff gives k folds, fold g fitting on the users of the
    other groups and early-stopping and evaluating on group g's, so no user is judged by a fit that
    saw them and every user of the cutoff is judged once.
    """
    rng = np.random.default_rng(seed)
    cuts = sorted(pd.unique(rows.cutoff))
    folds = []
    for c in cuts[-n_folds:]:
        before = [d for d in cuts if d + np.timedelta64(horizon_days, "D") <= c]
        ev = np.flatnonzero(rows.cutoff == c)
        if not before or not (0 < rows.y[ev].sum() < len(ev)):
            continue
        if len(before) > 1:
            fit = np.flatnonzero(np.isin(rows.cutoff, before[:-1]))
            es = np.flatnonzero(rows.cutoff == before[-1])
        else:
            cand = np.flatnonzero(rows.cutoff == before[0])
            mask = rng.random(len(cand)) < 0.2
            fit, es = cand[~mask], cand[mask]
        splits = [(fit, es, ev)]
        if groups is not None:
            k = int(groups.max()) + 1
            splits = [(fit[groups[fit] != g], es[groups[es] == g], ev[groups[ev] == g]) for g in range(k)]
        for fit, es, ev in splits:
            if not (0 < rows.y[ev].sum() < len(ev)):
                continue
            fit, es, ev = (_cap(i, max_rows, rng) for i in (fit, es, ev))
            if min(rows.y[fit].sum(), len(fit) - rows.y[fit].sum(), rows.y[es].sum(), len(es) - rows.y[es].sum()) < 1:
                continue
            parts = [(rows.take(i), rows.y[i]) for i in (fit, es, ev)]
            folds.append(Fold(pd.Timestamp(c), [pd.Timestamp(d) for d in before], *[a for p in parts for a in p]))
    return folds


def fold_auc(folds: Sequence[Fold], preds: Sequence[np.ndarray]) -> list[float]:
    """ROC AUC of each fold's evaluation rows."""
    return [point(f.y_eval, p)["roc_auc"] for f, p in zip(folds, preds)]


def blend_weight(folds: Sequence[Fold], a: list[np.ndarray], b: list[np.ndarray], grid: int = 11):
    """The weight w on a (1 - w on b) of the log-odds average with the best mean fold AUC.

    The grid holds w = 0 and w = 1, so the blend is never worse on these folds than either member.

    Returns:
        (w, blended fold predictions, mean fold AUC).
    """
    best = (-1.0, None, -np.inf)
    for w in np.linspace(0.0, 1.0, grid):
        preds = [sigmoid(w * logit(pa) + (1 - w) * logit(pb)) for pa, pb in zip(a, b)]
        score = float(np.nanmean(fold_auc(folds, preds)))
        if score > best[2] + 1e-12:
            best = (float(w), preds, score)
    return best


@dataclass
class Selection:
    """What the folds decided for one label."""

    chosen: str
    fold_auc: dict[str, list[float]] = field(default_factory=dict)
    mean_auc: dict[str, float] = field(default_factory=dict)
    lgbm_params: dict = field(default_factory=dict)
    trials: int = 0
    blend: dict = field(default_factory=dict)  # members (names) and weights
    cutoffs_seen: list = field(default_factory=list)
    calibration: str = "platt"  # LightGBM's calibrator, chosen on the folds when `training.calibration: auto`
    calibration_loss: dict[str, float] = field(default_factory=dict)  # method -> mean fold log loss

    def best_baseline(self) -> str:
        """The baseline with the best mean fold AUC (ties: the simpler)."""
        return max(BASELINES, key=lambda b: (self.mean_auc.get(b, -np.inf), -BASELINES.index(b)))


CALIBRATIONS = ("platt", "isotonic")  # what `auto` compares (ties: the first, Platt's two numbers)


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean negative log-likelihood of 0/1 outcomes y under probabilities p (clipped to [1e-6, 1 - 1e-6])."""
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def choose_calibration(
    folds: Sequence[Fold], raw: Sequence[tuple[np.ndarray, np.ndarray]], method: str, seed: int
) -> tuple[str, dict[str, float], list[np.ndarray]]:
    """The calibration method for LightGBM: the configured one, or (auto) the lowest mean fold log loss.

    Each fold's calibrator is fitted on its early-stopping rows and judged on its evaluation rows,
    as the final one is fitted on the held-back cutoff and judged on validation.

    Args:
        folds: the walk-forward folds.
        raw: per fold, (raw probabilities on the evaluation rows, on the early-stopping rows).
        method: training.calibration (platt, isotonic, none or auto).
        seed: the calibrators' seed.

    Returns:
        (method, method -> mean fold log loss, calibrated evaluation probabilities per fold).
    """
    methods = CALIBRATIONS if method == "auto" else (method,)
    cal = {m: [fit_calibrator(es, f.y_es, m, seed).apply(ev) for f, (ev, es) in zip(folds, raw)] for m in methods}
    loss = {m: float(np.mean([log_loss(f.y_eval, p) for f, p in zip(folds, ps)])) for m, ps in cal.items()}
    best = min(methods, key=lambda m: (round(loss[m], 12), methods.index(m)))
    return best, loss, cal[best]


def make_candidate(kind: str, label: str, names: Sequence[str], cfg, rfm: Sequence[str]):
    """An unfitted non-LightGBM candidate (None: not applicable to this label or table).

    Args:
        kind: rule, logistic or btyd.
        label: churn, promotion or koc.
        names: feature names (column order).
        cfg: the config.
        rfm: the logistic regression's columns.
    """
    t = cfg.training
    if kind == "logistic":
        return LogisticScorer([c for c in rfm if c in names], t.seed, t.baseline_max_rows)
    if kind == "rule":
        return RuleScorer(label, t.rule_recency_feature if label == "churn" else t.rule_tier_feature)
    if kind == "btyd":
        try:
            from training import btyd  # the BG/NBD module, optional
        except ImportError:
            return None
        return btyd.candidate(label, list(names), cfg)
    raise ValueError(kind)


def select(
    label: str,
    folds: list[Fold],
    names: Sequence[str],
    rfm: Sequence[str],
    cfg,
    fit_lgbm: Callable[[dict, Fold], np.ndarray],
    base_params: dict,
    on_trial: Callable | None = None,
) -> Selection:
    """Tune LightGBM, score every candidate on the folds and choose the best by mean fold ROC AUC.

    Args:
        label: churn, promotion or koc.
        folds: make_folds() output (training cutoffs only).
        names: feature names (column order).
        rfm: the logistic regression's columns.
        cfg: the config.
        fit_lgbm: (params, fold) -> (raw scores of the fold's evaluation rows, of its early-stopping rows).
        base_params: the config's LightGBM parameters (first trial).
        on_trial: progress callback of the search.

    Returns:
        The Selection.
    """
    from training.tuning import tune

    t = cfg.training
    preds: dict[str, list[np.ndarray]] = {}
    # The baselines are scored on the folds even when they may not be chosen: the fallback needs the best.
    for kind in [k for k in ("rule", "logistic", "btyd") if k in t.candidates or k in BASELINES]:
        proto = make_candidate(kind, label, names, cfg, rfm)
        if proto is None:
            continue
        preds[kind] = []
        for f in folds:
            c = make_candidate(kind, label, names, cfg, rfm)
            c.fit(np.vstack([f.X_fit, f.X_es]), np.r_[f.y_fit, f.y_es], names)
            preds[kind].append(c.predict(f.X_eval))
    sel = Selection("", cutoffs_seen=sorted({c for f in folds for c in (f.cutoff, *f.fit_cutoffs)}))
    if "lightgbm" in t.candidates:
        tc = t.tuning
        sel.lgbm_params, raw, _, sel.trials = tune(
            folds, fit_lgbm, base_params, tc.n_trials, tc.timeout_s, t.seed, on_trial
        )
        # Calibrated on each fold's early-stopping rows, as the final model is on the held-back cutoff
        # (the other candidates already give probabilities): the blend then mixes comparable log-odds.
        sel.calibration, sel.calibration_loss, preds["lightgbm"] = choose_calibration(folds, raw, t.calibration, t.seed)
    sel.fold_auc = {k: fold_auc(folds, v) for k, v in preds.items()}
    sel.mean_auc = {k: float(np.nanmean(v)) for k, v in sel.fold_auc.items()}
    ranked = sorted(
        [k for k in sel.mean_auc if k in t.candidates], key=lambda k: (-sel.mean_auc[k], SIMPLER_FIRST.index(k))
    )
    members = [k for k in ranked if k in MONOTONE_SAFE] if t.monotone else ranked
    if "blend" in t.candidates and len(members) >= 2:
        a, b = members[:2]
        w, bp, score = blend_weight(folds, preds[a], preds[b])
        if 0.0 < w < 1.0:  # an end point is just a member
            sel.blend = {"members": [a, b], "weights": [w, 1 - w]}
            sel.fold_auc["blend"], sel.mean_auc["blend"] = fold_auc(folds, bp), score
    allowed = [k for k in sel.mean_auc if k in t.candidates] or list(sel.mean_auc)
    sel.chosen = max(allowed, key=lambda k: (round(sel.mean_auc[k], 12), -SIMPLER_FIRST.index(k)))
    return sel
