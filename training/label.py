"""One label's training: choose a scorer on the walk-forward folds, refit it, judge it on validation.

The validation rows enter only after the choice is made (`select` gets training rows alone):
they measure the chosen scorer, the baselines and the oracle (with bootstrap intervals), and the
gate decides what serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.catalog import Feature
from siyu.config import Config
from training import model_registry
from training.calibrate import Calibrator
from training.fit import FoldSets, LabelData, fit_label, lgbm_params
from training.select import BASELINES, Rows, Selection, make_candidate, make_folds, select
from training.tuning import rescale


@dataclass
class LabelResult:
    """What happened to one label: trained (metrics, version, gate) or skipped (why)."""

    label: str
    trained: bool
    message: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    raw_metrics: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    oracle: dict[str, float] | None = None
    beats_baselines: bool | None = None
    best_iteration: int | None = None
    version: int | None = None
    gate: model_registry.GateDecision | None = None
    run_id: str | None = None
    selection: Selection | None = None
    scorer: str = ""  # the kind the registered version holds (a baseline when the model lost)
    versus: dict[str, tuple[float, float]] = field(default_factory=dict)  # baseline -> CI of (model - baseline)


def training_rows(d: LabelData) -> Rows:
    """The label's training rows (fit + held-back cutoff), never the validation cutoff."""
    cut = np.r_[pd.to_datetime(d.fit["cutoff"]).to_numpy(), pd.to_datetime(d.holdout["cutoff"]).to_numpy()]
    y = np.r_[d.fit[d.label].to_numpy(dtype=int), d.holdout[d.label].to_numpy(dtype=int)]
    return Rows([d.X_fit, d.X_holdout], y, cut.astype("datetime64[ns]"))


def choose(
    label: str, d: LabelData, cfg: Config, features: Sequence[Feature], rfm: Sequence[str], on_trial=None
) -> Selection:
    """Folds from the training rows, then `select` on them (tuning, candidates, blend).

    Returns:
        The Selection; with no usable fold, LightGBM with the config's parameters.
    """
    t = cfg.training
    names = [f.name for f in features]
    cats = [f.name for f in features if f.kind == "categorical"]
    rows = training_rows(d)
    folds = make_folds(rows, t.folds, cfg.windows.horizon_days, t.tuning.max_rows, t.seed)
    if not folds:
        return Selection("lightgbm" if "lightgbm" in t.candidates else "logistic")
    pos = int(rows.y.sum())
    base = lgbm_params(label, cfg, features, pos, len(rows.y) - pos)

    sets = FoldSets(names, cats)

    def fit_fold(params: dict, f) -> tuple[np.ndarray, np.ndarray]:
        return sets.fit_predict({**base, **params}, id(f), f.X_fit, f.y_fit, f.X_es, f.y_es, f.X_eval, cfg)

    return select(label, folds, names, rfm, cfg, fit_fold, {**base, **t.lgbm_params}, on_trial)


def fit_simple(kind: str, d: LabelData, cfg: Config, names: Sequence[str], rfm: Sequence[str]):
    """A rule / logistic / btyd candidate fitted on (a seeded sample of) every training row."""
    rows = training_rows(d)
    idx = np.arange(len(rows.y))
    cap = cfg.training.baseline_max_rows
    if len(idx) > cap:
        idx = np.sort(np.random.default_rng(cfg.training.seed).choice(idx, cap, replace=False))
    c = make_candidate(kind, d.label, names, cfg, rfm)
    return c.fit(rows.take(idx), rows.y[idx], names)


def fit_chosen(kind: str, sel: Selection, d: LabelData, cfg: Config, features, rfm, fitted: dict):
    """The chosen scorer refitted on all training cutoffs (LightGBM: early stopping on the held-back one).

    Args:
        kind: the candidate to fit.
        sel: the selection (tuned parameters, blend weights).
        d: the label's split.
        cfg: the config.
        features: the registry's features.
        rfm: the logistic regression's columns.
        fitted: kind -> (scorer, calibrator) already fitted (reused, filled in).

    Returns:
        (scorer with predict(X[, pred_contrib]), calibrator).
    """
    if kind in fitted:
        return fitted[kind]
    names = [f.name for f in features]
    if kind == "lightgbm":
        tuned = {k: v for k, v in sel.lgbm_params.items() if not k.startswith("_")}
        if tuned:
            tuned = rescale(tuned, int(sel.lgbm_params["_n_tuned"]), len(d.fit))
        if cfg.training.calibration == "auto":  # the method the folds chose (Platt when there were none)
            cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"calibration": sel.calibration})})
        booster, cal, _, _ = fit_label(d.label, d, cfg, features, tuned)
        fitted[kind] = (booster, cal)
    elif kind == "blend":
        from training.scorers import BlendScorer, BoosterScorer

        members = []
        for m in sel.blend["members"]:
            s, cal = fit_chosen(m, sel, d, cfg, features, rfm, fitted)
            members.append((BoosterScorer(s) if m == "lightgbm" else s, cal))
        fitted[kind] = (BlendScorer(members, sel.blend["weights"]), Calibrator("none"))
    else:
        fitted[kind] = (fit_simple(kind, d, cfg, names, rfm), Calibrator("none"))
    return fitted[kind]


def baseline_scores(d: LabelData, cfg: Config, features, rfm, fitted: dict) -> dict[str, np.ndarray]:
    """Validation probabilities of every baseline (fitted on the training rows, as the model)."""
    out = {}
    for b in BASELINES:
        s, cal = fit_chosen(b, Selection(b), d, cfg, features, rfm, fitted)
        out[b] = cal.apply(s.predict(d.X_val))
    return out
