"""LightGBM hyper-parameter search on the walk-forward folds (Optuna TPE, seeded, bounded in trials and time).

The search space is a function of the rows a fold fits on: a few thousand rows need few leaves,
small leaf minimums and strong L2; millions of rows allow deep trees with large leaf minimums.
Leaf minimums are tuned as counts on the (possibly subsampled) tuning rows and rescaled to the
rows of the final fit, so a leaf holds the same share of the data.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from training.bootstrap import point


def search_space(n_rows: int) -> dict[str, tuple[float, float]]:
    """Bounds of each tuned parameter for a fit on `n_rows` rows.

    Args:
        n_rows: rows of the fit.

    Returns:
        name -> (low, high); num_leaves and min_data_in_leaf are integers, the rest floats.
    """
    n = max(int(n_rows), 1)
    leaves_hi = int(np.clip(round(np.sqrt(n) / 2), 8, 255))
    data_lo = max(5, int(n * 1e-4))
    data_hi = max(4 * data_lo, int(n * 0.01))
    l2_hi = 10.0 * max(1.0, np.sqrt(1e5 / n))  # small data: allow much stronger shrinkage
    return {
        "num_leaves": (4, leaves_hi),
        "min_data_in_leaf": (data_lo, data_hi),
        "lambda_l2": (1e-3, float(l2_hi)),
        "learning_rate": (0.03, 0.2),  # the final fit at 1M rows stays within ~2x of the 0.05 default
        "feature_fraction": (0.4, 1.0),
        "bagging_fraction": (0.5, 1.0),
    }


def _clip_to(space: dict, params: dict) -> dict:
    """The config's parameters moved inside the space (the first trial: today's defaults)."""
    out = {}
    for k, (lo, hi) in space.items():
        if k in params:
            v = min(max(float(params[k]), lo), hi)
            out[k] = int(round(v)) if k in ("num_leaves", "min_data_in_leaf") else v
    return out


def suggest(trial, space: dict) -> dict:
    """One trial's parameters from the space."""
    out = {}
    for k, (lo, hi) in space.items():
        if k in ("num_leaves", "min_data_in_leaf"):
            out[k] = trial.suggest_int(k, int(lo), int(hi), log=True)
        elif k in ("lambda_l2", "learning_rate"):
            out[k] = trial.suggest_float(k, lo, hi, log=True)
        else:
            out[k] = trial.suggest_float(k, lo, hi)
    return out


def rescale(params: dict, n_tuned: int, n_final: int) -> dict:
    """Tuned parameters for a fit on `n_final` rows: leaf minimums keep their share of the rows."""
    out = dict(params)
    if "min_data_in_leaf" in out and n_tuned > 0:
        out["min_data_in_leaf"] = max(1, int(round(out["min_data_in_leaf"] * n_final / n_tuned)))
    return out


class Job(NamedTuple):
    """A fit for `fold_map` that is not a fold: its key, and its rows (largest start first)."""

    key: object
    n_fit: int


def threaded(params: dict, threads: int) -> dict:
    """`params` asking LightGBM for `fold_map`'s `threads` (0: as they are, LightGBM's default)."""
    return {**params, "num_threads": threads} if threads else params


def fold_map(fn: Callable[[object, int], object], folds: list) -> list:
    """[fn(fold, threads) for fold in folds], the folds fitted side by side.

    On a few cores two one-thread LightGBM fits finish ~30% sooner than the same fits one after
    the other on every thread (a small fit does not keep two threads busy), and give the same
    trees. Largest folds start first, so the workers finish together. Every LightGBM call in `fn`
    must ask for `threads` (or 0): the cap below makes them agree (siyu/lgbm_threads.py).
    """
    from concurrent.futures import ThreadPoolExecutor

    from siyu.lgbm_threads import capped_threads

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = max(1, min(len(folds), cores))
    if workers == 1:
        return [fn(f, 0) for f in folds]  # 0: LightGBM's default thread count
    threads = max(1, cores // workers)
    with capped_threads(threads), ThreadPoolExecutor(workers) as pool:  # LightGBM releases the GIL
        order = sorted(range(len(folds)), key=lambda i: -folds[i].n_fit)
        futures = {i: pool.submit(fn, folds[i], threads) for i in order}
        return [futures[i].result() for i in range(len(folds))]


def tune(
    folds: list,
    fit_fold: Callable[[dict, object], tuple[np.ndarray, np.ndarray]],
    base: dict,
    n_trials: int,
    timeout_s: float,
    seed: int,
    on_trial: Callable[[int, float, float], None] | None = None,
    score: Callable[[object, np.ndarray], float] | None = None,
) -> tuple[dict, list[np.ndarray], float, int]:
    """Search LightGBM parameters maximising mean fold ROC AUC.

    Args:
        folds: the folds (each has `y_eval`, `n_fit`); passed to `fit_fold`.
        fit_fold: (params, fold) -> raw scores of the fold's (evaluation rows, early-stopping rows).
        base: the config's LightGBM parameters (tried first, so tuning never does worse on the folds).
        n_trials: at most this many trials.
        timeout_s: stop starting trials after this many seconds.
        seed: TPE sampler seed.
        on_trial: called (trial number, its score, best score) after each trial (progress).
        score: (fold, its evaluation scores) -> the fold's figure to maximise (default ROC AUC of `y_eval`).

    Returns:
        (best parameters, best trial's (eval, early-stopping) fold scores, best mean fold AUC, trials run).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n_fit = int(np.median([f.n_fit for f in folds]))
    space = search_space(n_fit)
    best: dict = {"score": -np.inf, "preds": None}

    def objective(trial) -> float:
        params = suggest(trial, space)
        preds = fold_map(lambda f, threads: fit_fold({**rescale(params, n_fit, f.n_fit), "num_threads": threads}, f),
                         folds)  # fmt: skip
        of = score or (lambda f, p: point(f.y_eval, p)["roc_auc"])
        value = float(np.nanmean([of(f, p[0]) for f, p in zip(folds, preds)]))
        if value > best["score"]:
            best.update(score=value, preds=preds)
        if on_trial:
            on_trial(trial.number, value, best["score"])
        return value

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(_clip_to(space, base))
    start = time.monotonic()
    # Trials, not wall time, decide unless the budget runs out: reproducible when it does not.
    study.optimize(objective, n_trials=n_trials, timeout=timeout_s if timeout_s > 0 else None)
    params = {**study.best_params, "_n_tuned": n_fit, "_seconds": round(time.monotonic() - start, 1)}
    return params, best["preds"], float(best["score"]), len(study.trials)
