"""Train the LTV label: its own cutoffs, walk-forward folds and tuning, baselines, oracle, gate, registry.

The LTV horizon L (`ltv.horizon_days`) is much longer than H, so LTV has its own cutoffs: the
latest whose (T, T+L] lies inside the log validates; the one before early-stops; older ones fit
(features/ltv_label.ltv_cutoffs). Model choice uses the same rolling-origin folds as the other
labels (training/select.make_folds) on training cutoffs only, scored by normalized Gini, and the
gate is the paired bootstrap of Gini against every baseline and the current champion.
Labels of neighbouring cutoffs overlap in time (L > the cutoff spacing); the folds embargo one
spacing, as the classification folds embargo H: rows are out of time, targets may share months.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from siyu.config import Config
from siyu.errors import SiyuError
from training import ltv_metrics as lm
from training.bootstrap import interval
from training.fit import FoldSets, capped
from training.ltv_baselines import BASELINES, INPUTS, BGNBDGammaGamma, baseline_predictions
from training.ltv_model import LTVModel, nonnegative, tweedie_params

EXTRA = ["ltv_own", "ltv_referral", "spend_last_l", "spend_life", "tenure_days_l"]


@dataclass
class LtvResult:
    """What happened to the LTV label: trained (metrics, version, gate) or skipped (why)."""

    label: str = "ltv"
    trained: bool = False
    message: str = ""
    referral: bool = True
    cutoffs: list = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # scorer -> value metrics (+ gini CI)
    versus: dict[str, tuple[float, float]] = field(default_factory=dict)  # baseline -> CI of model - baseline
    fold_gini: dict[str, list[float]] = field(default_factory=dict)
    chosen: str = ""
    scorer: str = "lightgbm"  # what the registered version is: the model, or `bgnbd_gg` when no model won
    beats_baselines: bool = False
    oracle: dict[str, float] | None = None
    trials: int = 0
    version: int | None = None
    gate: object | None = None
    run_id: str | None = None
    cross_fit_groups: int = 0  # the validation predictions' models, each fitted without one group of users


def ltv_data(con, cfg: Config) -> tuple[pd.DataFrame | None, list, str]:
    """The LTV training table (features at the LTV cutoffs + targets + baseline inputs).

    Returns:
        (table or None, cutoffs, why it is None).
    """
    from features.ltv_label import ltv_cutoffs, ltv_labels
    from training.table import training_table

    lo, hi = con.execute("SELECT min(ts), max(ts) FROM events").fetchone()
    cuts = ltv_cutoffs(hi, lo, cfg)
    if len(cuts) < 3:
        L = cfg.ltv.horizon_days
        return None, cuts, f"skipped: the log is too short for {L}-day LTV labels at 3 cutoffs (ltv.horizon_days)"
    feats = training_table(con, cuts, cfg)
    labels = ltv_labels(con, cuts, cfg)
    feats["cutoff"] = pd.to_datetime(feats["cutoff"])
    table = feats.merge(labels, on=["user_id", "cutoff"], how="left", validate="one_to_one")
    table["ltv_own"] = table["ltv_own"].fillna(0.0)
    return table, cuts, ""


def train_ltv(table, cuts, why: str, cfg: Config, features, oracle, parent_run_id: str | None) -> LtvResult:
    """Choose, fit, judge and register the LTV model (a child run of the training's parent run).

    Args:
        table: `ltv_data` output (None: skipped, with `why`).
        cuts: its cutoffs, oldest first.
        why: the reason there is no table.
        cfg: the config.
        features: the registry's features (model column order).
        oracle: `load_ltv_oracle` output or None.
        parent_run_id: the training's MLflow parent run (None: a run of its own).
    """
    res = LtvResult(cutoffs=list(cuts), message=why)
    if table is None:
        return res
    from training.train import _progress

    with mlflow.start_run(run_id=parent_run_id) if parent_run_id else mlflow.start_run(run_name="ltv"):
        with mlflow.start_run(run_name="ltv", nested=True) as run, _progress() as bar:
            res.run_id = run.info.run_id
            task = bar.add_task("ltv: tuning LightGBM (Tweedie) on the folds", total=None)
            _fit_and_judge(res, table, cuts, cfg, features, oracle, bar, task)
    return res


def _matrix(table: pd.DataFrame, cols: list[str], mask) -> np.ndarray:
    from training.fit import matrix

    return matrix(table, cols, np.flatnonzero(np.asarray(mask)))


def capped_table(table: pd.DataFrame | None, cuts, cfg: Config) -> pd.DataFrame | None:
    """`table` with its fit and held-back rows cut to `ltv.max_fit_rows` each (the rows train_ltv would keep)."""
    if table is None or not cfg.ltv.max_fit_rows or len(cuts) < 2:
        return table
    ts = table["cutoff"]
    masks = [np.asarray(ts < cuts[-2]), np.asarray(ts == cuts[-2])]
    keep = np.asarray(ts == cuts[-1]).copy()
    for i, m in enumerate(masks):
        keep |= capped(m, cfg.ltv.max_fit_rows, cfg.training.seed + i)
    return table if keep.all() else table[keep].reset_index(drop=True)


def _fit_and_judge(res: LtvResult, table, cuts, cfg: Config, features, oracle, bar, task) -> None:
    from training.select import Rows, make_folds
    from training.tuning import fold_map, threaded, tune

    t, L = cfg.training, cfg.ltv.horizon_days
    names = [f.name for f in features]
    cats = [f.name for f in features if f.kind == "categorical"]
    F = len(names)
    table = capped_table(table, cuts, cfg)  # train_all spills it capped already: then the same table
    res.referral = bool(table["ltv_referral"].notna().any())
    ts = table["cutoff"]
    parts = {"fit": ts < cuts[-2], "holdout": ts == cuts[-2], "validation": ts == cuts[-1]}
    res.rows = {k: int(m.sum()) for k, m in parts.items()}
    train_m = parts["fit"] | parts["holdout"]
    Xtr = _matrix(table, names + EXTRA, train_m)
    Xtr[:, F + 1] = np.nan_to_num(Xtr[:, F + 1])  # no advocacy events: the referral target is unused
    total = Xtr[:, F] + Xtr[:, F + 1]
    cut_tr = ts[train_m].to_numpy().astype("datetime64[ns]")
    cap = min(t.tuning.max_rows, cfg.ltv.fold_max_rows)
    rows = Rows([Xtr], (total > 0).astype(int), cut_tr)
    from training.ltv_fit import user_groups

    # Users unseen by each fold's fit are its judges: a target spans months of its neighbours' (ltv_fit.py).
    groups = user_groups(table.loc[np.asarray(train_m), "user_id"], t.seed, cfg.ltv.fold_user_groups)
    folds = make_folds(rows, t.folds, cfg.windows.cutoff_spacing_days, cap, t.seed, groups)
    if not folds:
        raise SiyuError("ltv: no walk-forward fold (too few training cutoffs with value)")

    sets = FoldSets(names, cats)

    def part(params: dict, f, j: int) -> tuple[np.ndarray, np.ndarray]:
        return sets.fit_predict(tweedie_params(cfg, params), (id(f), j), f.X_fit[:, :F], nonnegative(f.X_fit[:, j]),
                                f.X_es[:, :F], nonnegative(f.X_es[:, j]), f.X_eval[:, :F], cfg)  # fmt: skip

    # The search tunes the own-spend part; the referral part (sparser, cheaper to leave) keeps the
    # config's parameters and is fitted once per fold, so a trial costs one booster per fold.
    base = {**t.lgbm_params, "learning_rate": cfg.ltv.learning_rate}
    ref_fold = {}
    if res.referral:  # side by side, one thread each, as the trials' folds
        fits = fold_map(lambda f, threads: part(threaded(base, threads), f, F + 1), folds)
        ref_fold = {id(f): p for f, p in zip(folds, fits)}

    def fit_fold(params: dict, f) -> tuple[np.ndarray, np.ndarray]:
        ev, es = part(params, f, F)
        if res.referral:
            ev, es = ev + ref_fold[id(f)][0], es + ref_fold[id(f)][1]
        return ev, es

    def fold_value(f) -> np.ndarray:
        return f.X_eval[:, F] + f.X_eval[:, F + 1]

    trial = lambda n, s, best: bar.update(task, description=f"ltv: trial {n + 1} fold Gini {s:.4f} (best {best:.4f})")  # noqa: E731
    tuned, raw, _, res.trials = tune(folds, fit_fold, base, t.tuning.n_trials, cfg.ltv.tuning_timeout_s,
                                     t.seed, trial, lambda f, p: lm.gini(fold_value(f), p))  # fmt: skip
    res.fold_gini["lightgbm"] = [lm.gini(fold_value(f), ev) for f, (ev, _) in zip(folds, raw)]
    cols = names + EXTRA
    for f in folds:
        fit_rows = pd.DataFrame(np.vstack([f.X_fit, f.X_es]), columns=cols)
        preds = baseline_predictions(fit_rows, pd.DataFrame(f.X_eval, columns=cols), L)
        for b, p in preds.items():
            res.fold_gini.setdefault(b, []).append(lm.gini(fold_value(f), p))
    mean = {k: float(np.nanmean(v)) for k, v in res.fold_gini.items()}
    res.chosen = max(mean, key=lambda k: (round(mean[k], 12), k == "lightgbm"))

    bar.update(task, description="ltv: fitting on every training cutoff, and on each half of the users")
    from training.ltv_fit import cross_fitted, fit_parts
    from training.model_registry import model_name

    boost = fit_parts(tuned, table, parts["fit"], parts["holdout"], names, cats, cfg, res.referral)
    model = LTVModel("ltv", model_name(cfg, "ltv"), 0, names, boost["ltv_own"], boost.get("ltv_referral"))
    val = table[np.asarray(parts["validation"])].reset_index(drop=True)
    X_val = _matrix(table, names, parts["validation"])
    pred = cross_fitted(tuned, table, parts, names, cats, cfg, res.referral)  # what judges the model (ltv_fit.py)
    res.cross_fit_groups = cfg.ltv.cross_fit_groups
    y = val["ltv_own"].to_numpy(dtype=float) + np.nan_to_num(val["ltv_referral"].to_numpy(dtype=float))
    train_rows = pd.DataFrame(Xtr, columns=cols)
    # fitted once: it predicts the validation rows and, when no model wins, serves
    bgnbd_gg = BGNBDGammaGamma(L).fit(train_rows) if set(INPUTS) <= set(train_rows.columns) else None
    bases = baseline_predictions(train_rows, val[cols], L, bgnbd_gg)
    scores = {"model": pred["ltv"], **bases}
    boot = lm.gini_resamples(y, scores, t.bootstrap_resamples, t.seed, t.bootstrap_max_rows)
    for k, s in scores.items():
        res.metrics[k] = lm.value_metrics(y, s)
        res.metrics[k]["gini_lo"], res.metrics[k]["gini_hi"] = interval(boot[k], t.ci_level)
    res.metrics["model_own"] = lm.value_metrics(val["ltv_own"].to_numpy(dtype=float), pred["own"])
    if res.referral:
        res.metrics["model_referral"] = lm.value_metrics(val["ltv_referral"].to_numpy(dtype=float), pred["referral"])
    res.versus = {b: interval(boot["model"] - boot[b], t.ci_level) for b in bases}
    res.beats_baselines = res.chosen == "lightgbm" and all(lo > t.gate_margin for lo, _ in res.versus.values())
    po = oracle_values(oracle, cuts[-1], val, res.referral)
    plot = {**scores}
    if po is not None:
        ok = ~np.isnan(po)
        ob = lm.gini_resamples(
            y[ok], {"oracle": po[ok], "model": pred["ltv"][ok]}, t.bootstrap_resamples, t.seed, t.bootstrap_max_rows
        )
        om = lm.value_metrics(y[ok], po[ok])
        lo, hi = interval(ob["oracle"], t.ci_level)
        res.metrics["oracle"] = {**om, "gini_lo": lo, "gini_hi": hi}
        mg = lm.gini(y[ok], pred["ltv"][ok])
        res.oracle = {"oracle_gini": om["gini"], "model_gini_on_oracle_users": mg, "oracle_users": int(ok.sum()),
                      "gini_ratio_to_oracle": mg / om["gini"] if om["gini"] > 0 else float("nan")}  # fmt: skip
        plot["oracle"] = po if ok.all() else None
    bar.update(task, description="ltv: logging and registering")
    from training.ltv_gate import log_and_register
    from training.ltv_model import baseline_ltv_model

    # No model beats the baselines: BG/NBD + Gamma-Gamma serves, the one baseline computed from features.
    if not res.beats_baselines and t.serve_best_baseline and bgnbd_gg is not None and set(INPUTS) <= set(names):
        res.scorer = "bgnbd_gg"
        model = baseline_ltv_model(model.name, bgnbd_gg)
    log_and_register(res, model, X_val, names, y, plot, cfg, tuned, bases)


def oracle_values(oracle: pd.DataFrame | None, cutoff, val: pd.DataFrame, referral: bool) -> np.ndarray | None:
    """The simulator's expected ltv per validation row (own only for a log without referrals), or None."""
    if oracle is None:
        return None
    o = oracle[oracle["cutoff"] == pd.Timestamp(cutoff)].drop_duplicates("user_id").set_index("user_id")
    if o.empty:
        return None
    v = o["ltv"] if referral else o["ltv_own"]
    p = val["user_id"].astype(str).map(v)
    return None if p.isna().all() else p.to_numpy(dtype=float)


def load_ltv_oracle(events_path) -> pd.DataFrame | None:
    """The simulator's LTV oracle beside the events (`oracle_ltv.parquet`), or None when absent."""
    path = Path(events_path)
    path = (path if path.is_dir() else path.parent) / "oracle_ltv.parquet"
    if not path.is_file():
        return None
    df = pd.read_parquet(path, columns=["cutoff", "user_id", "ltv_own", "ltv_referral", "ltv"])
    df["cutoff"], df["user_id"] = pd.to_datetime(df["cutoff"]), df["user_id"].astype(str)
    return df


__all__ = ["BASELINES", "LtvResult", "capped_table", "ltv_data", "train_ltv", "load_ltv_oracle", "oracle_values"]
