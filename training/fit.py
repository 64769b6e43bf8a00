"""One label's data split and LightGBM fit (imbalance, monotone hints, early stopping, calibration)."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.catalog import Feature
from siyu.config import Config
from siyu.errors import SiyuError
from training.calibrate import Calibrator, fit_calibrator


def matrix(df: pd.DataFrame, names: Sequence[str], rows: np.ndarray | None = None) -> np.ndarray:
    """Float matrix of the named columns (missing -> NaN) at the given row positions (default all).

    Filled column by column into a column-major array, so a 1M-user table is never copied
    whole on the way (LightGBM reads either layout).
    """
    return stacked([(df, rows)], names)


def stacked(parts: Sequence[tuple[pd.DataFrame, np.ndarray | None]], names: Sequence[str]) -> np.ndarray:
    """`matrix` over several (frame, row positions or None = all) parts, stacked in order into one array."""
    sizes = [len(df) if rows is None else len(rows) for df, rows in parts]
    X = np.empty((sum(sizes), len(names)), dtype=np.float64, order="F")
    for j, name in enumerate(names):
        at = 0
        for (df, rows), n in zip(parts, sizes):
            col = df[name].to_numpy(dtype=np.float64, na_value=np.nan)
            X[at : at + n, j] = col if rows is None else col[rows]
            at += n
    return X


def capped(mask: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """`mask` with at most `cap` rows left (a seeded sample; 0: all): a 1M-user pool fits on a bounded table."""
    idx = np.flatnonzero(mask)
    if not cap or len(idx) <= cap:
        return mask
    out = np.zeros_like(mask)
    out[np.random.default_rng(seed).choice(idx, cap, replace=False)] = True
    return out


def tier_column(df: pd.DataFrame) -> str:
    """The column holding the tier's name (`tier_name` beside an integer `tier` feature, else `tier`)."""
    return "tier_name" if "tier_name" in df.columns else "tier"


@dataclass
class LabelData:
    """A label's population, split out of time into fit / holdout / validation rows."""

    label: str
    fit: pd.DataFrame
    holdout: pd.DataFrame
    val: pd.DataFrame
    X_fit: np.ndarray
    X_holdout: np.ndarray
    X_val: np.ndarray

    @classmethod
    def split(
        cls,
        table: pd.DataFrame,
        label: str,
        part: dict[str, pd.Series],
        names: Sequence[str],
        keep: Sequence[str] | None = None,
        max_fit_rows: int = 0,
        seed: int = 0,
    ) -> LabelData:
        """Rows of the label's population with a known outcome, per part of the split.

        Args:
            table: the training table.
            label: churn, promotion or koc.
            part: part name (fit, holdout, validation) -> row mask of `table`.
            names: feature columns, in model order (become the X matrices).
            keep: feature columns also kept in the frames (baselines); None keeps every column.
            max_fit_rows: at most this many `fit` rows and as many `holdout` rows, each a seeded
                sample in table order (0: all); the validation rows are never cut.
            seed: the sample's seed.
        """
        pop = table[f"in_{label}_pop"].fillna(False).astype(bool) & table[label].notna()
        cols = (
            None
            if keep is None
            else list(
                dict.fromkeys(
                    [c for c in ("user_id", "cutoff", tier_column(table), label) if c in table.columns] + list(keep)
                )
            )
        )
        frames, X = {}, {}
        for k, m in part.items():
            rows = (pop & m).to_numpy()
            rows = np.flatnonzero(rows if k == "validation" else capped(rows, max_fit_rows, seed))
            X[k] = matrix(table, names, rows)
            # Only the columns baselines need stay in pandas: a 1M-user table is large.
            frames[k] = (table if cols is None else table[cols]).iloc[rows].reset_index(drop=True)
            frames[k][label] = frames[k][label].astype(int)
        return cls(
            label, frames["fit"], frames["holdout"], frames["validation"], X["fit"], X["holdout"], X["validation"]
        )

    @functools.cached_property
    def fit_and_holdout(self) -> pd.DataFrame:
        """Every training row (what baselines are fitted on)."""
        return pd.concat([self.fit, self.holdout], ignore_index=True)

    def counts(self) -> dict[str, int]:
        """Positives and negatives per part (eligibility, run params)."""
        out = {}
        for part, df in (("train", self.fit), ("holdout", self.holdout), ("validation", self.val)):
            pos = int(df[self.label].sum())
            out[f"{part}_pos"], out[f"{part}_neg"] = pos, len(df) - pos
        return out


def lgbm_params(label: str, cfg: Config, features: Sequence[Feature], n_pos: int, n_neg: int) -> dict:
    """LightGBM parameters of one label: config, seed, imbalance weight and monotone constraints."""
    t = cfg.training
    params = {
        "objective": "binary",
        "metric": "auc",
        "verbosity": -1,
        "seed": t.seed,
        "deterministic": True,
        "force_col_wise": True,
        **t.lgbm_params,
    }
    ratio = n_neg / max(n_pos, 1)
    # Rare positives weigh more so the trees look at them; the calibrator undoes the shift in
    # probability. "sqrt" is the milder form: full balancing over-fits a handful of positives.
    if t.class_weight == "balanced":
        params["scale_pos_weight"] = ratio
    elif t.class_weight == "sqrt":
        params["scale_pos_weight"] = float(np.sqrt(ratio))
    if t.monotone:
        extra = t.monotone_extra.get(label, {})
        # A hint for a window this config does not build (e.g. 7 days under `auto` windows) is moot.
        ws = set(cfg.windows.feature_windows)
        moot = {n for n in extra if (m := re.search(r"_(\d+)d$", n)) and int(m.group(1)) not in ws}
        unknown = sorted(set(extra) - moot - {f.name for f in features})
        if unknown:
            raise SiyuError(f"training.monotone_extra.{label} names unknown feature(s) {unknown}")
        signs = [extra.get(f.name, dict(f.monotone).get(label, 0)) for f in features]
        if any(signs):
            params["monotone_constraints"] = signs
    return params


def train_booster(params: dict, X_fit, y_fit, X_es, y_es, names, cats, cfg: Config):
    """One LightGBM fit with early stopping on (X_es, y_es); returns the booster."""
    import lightgbm as lgb

    dfit = _dataset(X_fit, y_fit, names, cats)
    return _early_stopped(params, dfit, lgb.Dataset(X_es, y_es, reference=dfit), cfg)


class FoldSets:
    """LightGBM Datasets of each fold, binned once and reused by every tuning trial.

    Trials change booster parameters only; with `feature_pre_filter` off, min_data_in_leaf may
    vary on one binning. Binning a fold costs about as much as a short fit, so this halves a search.
    """

    def __init__(self, names: Sequence[str], cats: Sequence[str]):
        self.names, self.cats, self._sets = list(names), list(cats), {}

    def train(self, params: dict, key, X_fit, y_fit, X_es, y_es, cfg: Config):
        """`train_booster` on the Datasets kept under `key` (built from these rows the first time)."""
        import lightgbm as lgb

        if key not in self._sets:
            dfit = lgb.Dataset(X_fit, y_fit, feature_name=self.names, categorical_feature=self.cats or "auto",
                               free_raw_data=False)  # fmt: skip
            self._sets[key] = (dfit, lgb.Dataset(X_es, y_es, reference=dfit, free_raw_data=False))
        return _early_stopped({**params, "feature_pre_filter": False}, *self._sets[key], cfg)

    def fit_predict(self, params: dict, key, X_fit, y_fit, X_es, y_es, X_eval, cfg: Config):
        """`train` then the booster's (X_eval, X_es) predictions, on the fit's own thread count.

        Returns:
            (predictions of X_eval, predictions of X_es).
        """
        b = self.train(params, key, X_fit, y_fit, X_es, y_es, cfg)
        # A predict left at LightGBM's default thread count would reset the process-wide count
        # under a fold fitted beside it (siyu/lgbm_threads.py).
        n = params.get("num_threads", 0)
        return b.predict(X_eval, num_threads=n), b.predict(X_es, num_threads=n)


def _early_stopped(params: dict, dfit, des, cfg: Config):
    import lightgbm as lgb

    return lgb.train(
        params,
        dfit,
        num_boost_round=cfg.training.num_boost_round,
        valid_sets=[des],
        valid_names=["holdout"],
        callbacks=[lgb.early_stopping(cfg.training.early_stopping_rounds, verbose=False)],
    )


_ROUND_KEYS = {"num_iterations", "num_iteration", "n_iter", "num_tree", "num_trees", "num_round", "num_rounds",
               "nrounds", "num_boost_round", "n_estimators", "max_iter", "early_stopping_round",
               "early_stopping_rounds", "early_stopping", "n_iter_no_change"}  # fmt: skip


def refits(cfg: Config, n_rows: int) -> bool:
    """True when the early-stopped LightGBM is refitted on fit + holdout rows (`n_rows` of them)."""
    t = cfg.training
    return t.refit_all_cutoffs and (t.refit_max_rows == 0 or n_rows <= t.refit_max_rows)


def refit_booster(booster, X, y, names, cats):
    """`booster`'s parameters and early-stopped rounds, refitted on (X, y) (e.g. fit + holdout rows)."""
    import lightgbm as lgb

    rounds = max(int(booster.best_iteration or booster.current_iteration()), 1)
    params = {k: v for k, v in booster.params.items() if k not in _ROUND_KEYS}
    return lgb.train(params, _dataset(X, y, names, cats), num_boost_round=rounds)


def _dataset(X, y, names, cats):
    """A LightGBM training Dataset with the registry's names and categorical columns."""
    import lightgbm as lgb

    return lgb.Dataset(X, y, feature_name=list(names), categorical_feature=cats or "auto", free_raw_data=True)


def fit_label(label: str, d: LabelData, cfg: Config, features: Sequence[Feature], overrides: dict | None = None):
    """Fit on the older cutoffs, early-stop and calibrate on the held-back cutoff.

    Args:
        label: churn, promotion or koc.
        d: the label's split.
        cfg: the config.
        features: the registry's features (column order).
        overrides: LightGBM parameters over the config's (the tuned ones).

    Returns:
        (booster, calibrator, raw validation probabilities, calibrated validation probabilities).
    """
    names = [f.name for f in features]
    cats = [f.name for f in features if f.kind == "categorical"]
    y_fit, y_hold = d.fit[label].to_numpy(), d.holdout[label].to_numpy()
    params = {**lgbm_params(label, cfg, features, int(y_fit.sum()), int(len(y_fit) - y_fit.sum())), **(overrides or {})}
    es = capped(np.ones(len(y_hold), bool), cfg.training.early_stopping_max_rows, cfg.training.seed)
    X_es, y_es = (d.X_holdout, y_hold) if es.all() else (d.X_holdout[es], y_hold[es])
    booster = train_booster(params, d.X_fit, y_fit, X_es, y_es, names, cats, cfg)
    method = "platt" if cfg.training.calibration == "auto" else cfg.training.calibration  # auto: see select.py
    cal: Calibrator = fit_calibrator(booster.predict(d.X_holdout), y_hold, method, cfg.training.seed)
    if refits(cfg, len(y_fit) + len(y_hold)):  # the calibrator keeps its out-of-sample holdout fit
        booster = refit_booster(booster, np.vstack([d.X_fit, d.X_holdout]), np.r_[y_fit, y_hold], names, cats)
    raw_val = booster.predict(d.X_val)
    return booster, cal, raw_val, cal.apply(raw_val)
