"""Train the churn, promotion and KOC models on the multi-cutoff training table.

Split (out of time, docs/design.md §4): the latest cutoff validates; the latest
training cutoff is held back for early stopping and calibration; the older
cutoffs fit the trees. Every number lands in MLflow: one parent run per
training, one child run per label.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from features.catalog import Feature
from siyu.config import Config
from siyu.contract import LABELS, unseen_labels
from siyu.errors import SiyuError
from training import baselines, bootstrap, evaluate, model_registry
from training.fit import LabelData, tier_column
from training.label import LabelResult, baseline_scores, choose, fit_chosen
from training.select import BASELINES


@dataclass
class TrainResult:
    """One training: the runs, the split and every label's result."""

    parent_run_id: str
    experiment: str
    tracking_uri: str
    cutoffs: list
    rows: dict[str, int]
    labels: dict[str, LabelResult]
    notes: list[str] = field(default_factory=list)
    ltv: object | None = None  # training.ltv_train.LtvResult (its own cutoffs, horizon and gate)
    push_effect: object | None = None  # training.push_effect.PushEffectResult (uplift.enabled, holdouts in the log)
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per step of train_all

    def trained_any(self) -> bool:
        """Whether at least one label got a model (else a nightly job must fail: see app/cli.py train)."""
        return any(r.trained for r in self.labels.values())

    def warnings(self) -> list[str]:
        """Loud messages: labels that lost to a baseline, labels skipped."""
        out = [f"{r.label}: {r.message}" for r in self.labels.values() if not r.trained]
        if self.ltv is not None and self.ltv.trained and not self.ltv.beats_baselines:
            s = self.ltv.scorer
            kept = "champion unchanged" if s == "lightgbm" else f"serving the best baseline '{s}'"
            out.append(f"ltv: MODEL DOES NOT BEAT THE BASELINES: {kept} ({self.ltv.message})")
        out += [
            f"{r.label}: MODEL DOES NOT BEAT THE BASELINES: "
            + (
                f"the folds chose the baseline '{r.scorer}', which serves"
                if r.selection is not None and r.selection.chosen == r.scorer
                else f"serving the best baseline '{r.scorer}'"
                if r.scorer in BASELINES
                else "serving it anyway"
            )
            + f" ({r.message})"
            for r in self.labels.values()
            if r.trained and not r.beats_baselines
        ]
        return out


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v, default=str) if not isinstance(v, str) else v
    return out


def _progress():
    """Rich progress on stderr: per label and per tuning trial (transient: the summary table follows)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=Console(stderr=True), transient=True
    )


def train_all(events_path: str | Path, cfg: Config, experiment: str | None = None) -> TrainResult:
    """Validate the events, build the training table and train every label.

    Args:
        events_path: the event log (CSV, Parquet or folder); `oracle.parquet` beside it is used when present.
        cfg: the config.
        experiment: MLflow experiment (default `cfg.mlflow.experiment`).

    Returns:
        The TrainResult.
    """
    import os

    # LightGBM's OpenMP threads spin while waiting; on a busy machine that costs 3-4x wall time.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import time

    from events.lineage import lineage
    from events.loader import connect
    from events.validate import load_valid_events
    from features.catalog import features_of
    from features.compute import present_families
    from features.windows import resolve
    from training.table import training_cutoffs, training_table

    clock, timings = time.perf_counter(), {}

    def lap(step: str) -> None:
        nonlocal clock
        timings[step] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    con = connect(cfg=cfg)
    load_valid_events(con, events_path, cfg)
    lap("validate_s")
    cfg = resolve(cfg, con)  # `auto` windows from this log; the models store the feature list
    from training.ltv_train import capped_table, load_ltv_oracle, ltv_data, train_ltv

    with tempfile.TemporaryDirectory(prefix="siyu-train-") as spill:
        # The LTV table first, and on disk while the labels train: DuckDB builds each pool-sized table
        # beside as few pandas tables as possible (at 1M users two of them plus DuckDB's cap overran 24 GiB).
        ltv_table, ltv_cuts, ltv_why = ltv_data(con, cfg)  # LTV has its own cutoffs (horizon ltv.horizon_days)
        cutoffs = training_cutoffs(con, cfg)
        arms = _arms(con, cutoffs, cfg, ltv_table)
        spilled = Path(spill) / "ltv.parquet"
        if ltv_table is not None:
            capped_table(ltv_table, ltv_cuts, cfg).to_parquet(spilled)  # only the rows LTV will fit on
            ltv_table = None
        table = training_table(con, cutoffs, cfg)
        lo, hi = con.execute("SELECT min(ts), max(ts) FROM events").fetchall()[0]
        families = present_families(con)
        notes = churn_notes(families, cfg)
        info = {"events_path": str(events_path), "data_window_start": str(lo), "data_window_end": str(hi)}
        info.update(lineage(con, cfg, events_path))
        con.close()  # DuckDB's memory goes back before LightGBM needs it
        lap("tables_s")
        features = features_of(cfg)
        result = train_table(
            table, cutoffs, cfg, features, experiment, baselines.load_oracle(Path(events_path)), info, arms
        )
        del table, arms
        _give_back_memory()
        for label, why in unseen_labels(families).items():
            r = result.labels.get(label)
            if r is not None and not r.trained:  # say why, not "too little data"
                r.message = f"not trained: {why}"
        lap("labels_s")
        if spilled.exists():
            import pyarrow.parquet as pq

            # Column by column into pandas, each Arrow buffer freed once converted: no second copy.
            ltv_table = pq.read_table(spilled).to_pandas(self_destruct=True, split_blocks=True)
    ltv_oracle = load_ltv_oracle(events_path)
    result.ltv = train_ltv(ltv_table, ltv_cuts, ltv_why, cfg, features, ltv_oracle, result.parent_run_id)
    lap("ltv_s")
    result.timings = timings
    result.notes.extend(notes)
    return result


def _give_back_memory() -> None:
    """Collect, then hand freed heap pages back to the OS (glibc keeps them; at 1M users, GBs)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def _arms(con, cutoffs, cfg: Config, ltv_table: pd.DataFrame | None = None):
    """The push effect's inputs when it is on and the log has control groups (else None).

    The earlier cutoffs' table is the LTV table's rows when it holds them all (by default the LTV
    cutoffs are those cutoffs and one more: the same features, computed once).

    Returns:
        A one-item list for train_table to empty: [(arms_frame of every cutoff, training table of the
        `uplift.extra_cutoffs` earlier cutoffs or None)].
    """
    from siyu.contract import HOLDOUT_START
    from training.table import training_table
    from training.uplift import arms_frame, earlier_cutoffs

    if not cfg.uplift.enabled:
        return None
    first, n = con.execute(f"SELECT min(ts), count(*) FILTER (event = '{HOLDOUT_START}') FROM events").fetchone()
    if not n:
        return None
    extra = earlier_cutoffs(cutoffs, first, cfg)
    table, want = None, [pd.Timestamp(c) for c in extra]
    if want and ltv_table is not None and set(want) <= set(ltv_table["cutoff"].unique()):
        from features.ltv_label import LTV_COLUMNS

        rows = ltv_table["cutoff"].isin(want).to_numpy()
        table = ltv_table.loc[rows, ltv_table.columns.drop(LTV_COLUMNS[2:])].reset_index(drop=True)
    elif want:
        table = training_table(con, extra, cfg)
    return [(arms_frame(con, [*extra, *cutoffs], cfg), table)]


def churn_notes(families: frozenset[str], cfg: Config) -> list[str]:
    """What `churn` means for a log without connection events (nobody can be seen leaving).

    Every user with a user-side event is then connected implicitly (docs/design.md §3), so churn is
    inactivity only: for a purchases-only log, "no purchase in H days".
    """
    if "connection" in families:
        return []
    H = cfg.windows.horizon_days
    if families <= {"commerce"}:
        what = "no purchase (nor refund or coupon claim)"
    else:
        what = "no user-side event (" + ", ".join(sorted(families - {"exposure"})) + ")"
    mode = cfg.labels.churn_mode
    tail = " - labels.churn_mode 'disconnect' finds no positives here" if mode == "disconnect" else ""
    return [f"the log has no connection events: churn means {what} in the {H} days after the cutoff{tail}"]


def train_table(
    table: pd.DataFrame,
    cutoffs: Sequence,
    cfg: Config,
    features: Sequence[Feature],
    experiment: str | None = None,
    oracle: pd.DataFrame | None = None,
    info: dict | None = None,
    arms: list | None = None,
) -> TrainResult:
    """Train every label on a ready training table (the part of `train_all` after the features).

    Args:
        table: training_table() output (user_id, cutoff, tier, features, populations, labels).
        cutoffs: its cutoffs, oldest first; the last validates, the one before is held back.
        cfg: the config.
        features: the registry's features (column order of the model).
        experiment: MLflow experiment name.
        oracle: `baselines.load_oracle` output, or None.
        info: extra run params (events path, data window).
        arms: a one-item list holding `_arms` output (the cutoffs' control-group arms, the earlier cutoffs'
            table): fit the push-effect model too (None or empty: not). The list is emptied once the push
            effect has read it, so a pool-sized table is not held while the labels train.

    Returns:
        The TrainResult.
    """
    cutoffs = sorted(pd.Timestamp(c) for c in cutoffs)
    if len(cutoffs) < 3:
        raise SiyuError(
            f"training needs at least 3 cutoffs (fit, held-back, validation); got {len(cutoffs)} "
            "(windows.n_cutoffs, or a longer log)"
        )
    names = [f.name for f in features]
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise SiyuError(f"training table lacks registry features {missing[:5]}")
    ts = pd.to_datetime(table["cutoff"])
    part = {"fit": ts < cutoffs[-2], "holdout": ts == cutoffs[-2], "validation": ts == cutoffs[-1]}
    rows = {k: int(m.sum()) for k, m in part.items()}
    uri = model_registry.use_tracking(cfg)
    model_registry.use_experiment(cfg, experiment or cfg.mlflow.experiment)
    results: dict[str, LabelResult] = {}
    t = cfg.training
    with mlflow.start_run(run_name=f"train@{cutoffs[-1]:%Y-%m-%d}") as parent:
        params = {
            **_flat(cfg.model_dump(mode="json"), "cfg."),
            **(info or {}),
            "cutoffs": ",".join(f"{c:%Y-%m-%d}" for c in cutoffs),
            "validation_cutoff": f"{cutoffs[-1]:%Y-%m-%d}",
            "holdout_cutoff": f"{cutoffs[-2]:%Y-%m-%d}",
            "n_features": len(names),
            "features": ",".join(names),
            **{f"rows_{k}": v for k, v in rows.items()},
        }
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        mlflow.log_dict(cfg.model_dump(mode="json"), "config/resolved_config.json")
        mlflow.log_dict({"features": [f.__dict__ for f in features]}, "config/features.json")
        with _progress() as bar:
            task = bar.add_task("training", total=len(LABELS))
            push = None
            if arms:  # first, so the earlier cutoffs' table is freed before the labels build their matrices
                from training.push_effect import train_push_effect

                bar.update(task, description="push effect: meta-learner on the control groups")
                inputs = arms.pop()
                push = train_push_effect(table, inputs[0], cutoffs, cfg, features, oracle, inputs[1])
                del inputs
            for label in LABELS:
                bar.update(task, description=f"{label}: tuning LightGBM on the folds")
                trial = lambda n, score, best, lab=label: bar.update(  # noqa: E731
                    task, description=f"{lab}: trial {n + 1}/{t.tuning.n_trials} fold AUC {score:.4f} (best {best:.4f})"
                )
                data = LabelData.split(table, label, part, names, ["cutoff"], t.max_fit_rows, t.seed)
                results[label] = _train_label(label, data, cfg, features, oracle, cutoffs[-1], trial)
                del data  # free this label's matrices before the next one is built
                bar.advance(task)
        # Aliases move only now, all together (milliseconds): a run killed before this point leaves
        # every challenger and champion where it was, even for labels it already registered.
        for r in results.values():
            if r.gate is not None:
                model_registry.apply_gate(cfg, r.label, r.version, r.gate)
        for r in results.values():
            mlflow.log_metrics(
                {f"{r.label}_{k}": v for k, v in r.metrics.items() if k in ("roc_auc", "pr_auc", "brier")}
            )
        lost = [r.label for r in results.values() if r.trained and not r.beats_baselines]
        mlflow.set_tags(
            {
                "siyu.validation_cutoff": f"{cutoffs[-1]:%Y-%m-%d}",
                "siyu.events_fingerprint": str((info or {}).get("events_fingerprint", "")),
                "siyu.config_hash": cfg.fingerprint(),
                "siyu.skipped": ",".join(r.label for r in results.values() if not r.trained),
                "siyu.warning": f"model does not beat baselines (best baseline serves): {','.join(lost)}"
                if lost
                else "",
                "siyu.scorer": ",".join(f"{r.label}={r.scorer}" for r in results.values() if r.trained),
            }
        )
    out = TrainResult(parent.info.run_id, experiment or cfg.mlflow.experiment, uri, cutoffs, rows, results)
    out.push_effect = push
    return out


def _train_label(
    label: str, d: LabelData, cfg: Config, features: Sequence[Feature], oracle, val_cutoff, on_trial=None
) -> LabelResult:
    """Eligibility, choice on the folds, refit, validation metrics with CIs, log, register, judge (aliases: caller)."""
    t = cfg.training
    res = LabelResult(label, False, counts=d.counts())
    small = {k: v for k, v in res.counts.items() if not k.startswith("holdout") and v < t.min_class_count}
    if small or min(res.counts["holdout_pos"], res.counts["holdout_neg"]) == 0:
        short = ", ".join(f"{k}={v}" for k, v in small.items()) or "the held-back cutoff lacks a class"
        res.message = (
            f"skipped, too little data: {short} (min_class_count={t.min_class_count}; all counts: "
            + ", ".join(f"{k}={v}" for k, v in res.counts.items())
            + ")"
        )
        return res
    names = [f.name for f in features]
    rfm = [f.name for f in features if f.family in t.rfm_families]
    with mlflow.start_run(run_name=label, nested=True) as run:
        res.run_id = run.info.run_id
        # Everything up to here sees training cutoffs only; validation rows enter below.
        sel = res.selection = choose(label, d, cfg, features, rfm, on_trial)
        fitted: dict = {}
        scorer, cal = fit_chosen(sel.chosen, sel, d, cfg, features, rfm, fitted)
        bases = baseline_scores(d, cfg, features, rfm, fitted)
        res.trained = True
        if hasattr(scorer, "best_iteration"):
            res.best_iteration = int(scorer.best_iteration or scorer.current_iteration())
        raw_val = scorer.predict(d.X_val)
        p_val = cal.apply(raw_val)
        y = d.val[label].to_numpy(dtype=int)
        res.metrics = evaluate.all_metrics(
            y, p_val, t.lift_fractions, tiers=d.val[tier_column(d.val)].astype(str).to_numpy()
        )
        res.raw_metrics = evaluate.probability_metrics(y, raw_val)
        scores = {"model": p_val, **bases}
        ci, boot = bootstrap.with_ci(y, scores, t.bootstrap_resamples, t.seed, t.ci_level, t.bootstrap_max_rows)
        res.metrics.update({k: v for k, v in ci["model"].items() if k.endswith(("_lo", "_hi"))})
        for b in BASELINES:
            res.baselines[b] = {**ci[b], **evaluate.probability_metrics(y, bases[b])}
            res.versus[b] = bootstrap.difference(boot, "model", b, t.gate_metric, t.ci_level)
        is_model = sel.chosen not in BASELINES
        res.beats_baselines = is_model and all(lo > t.gate_margin for lo, _ in res.versus.values())
        res.message = "; ".join(  # a baseline the folds chose is not compared with itself
            f"{b} {t.gate_metric} {v[t.gate_metric]:.4f} ({sel.chosen} - {b}: CI [{res.versus[b][0]:+.4f}, "
            f"{res.versus[b][1]:+.4f}])"
            for b, v in res.baselines.items()
            if b != sel.chosen
        )
        res.message = f"{sel.chosen} {t.gate_metric} {res.metrics[t.gate_metric]:.4f}; {res.message}"
        po = baselines.oracle_scores(oracle, label, val_cutoff, d.val)
        if po is not None:
            ok = ~np.isnan(po)
            oc, _ = bootstrap.with_ci(
                y[ok],
                {"oracle": po[ok], "model": p_val[ok]},
                t.bootstrap_resamples,
                t.seed,
                t.ci_level,
                t.bootstrap_max_rows,
            )
            om = evaluate.all_metrics(y[ok], po[ok], ())
            res.oracle = {
                "oracle_roc_auc": om["roc_auc"],
                "oracle_roc_auc_lo": oc["oracle"]["roc_auc_lo"],
                "oracle_roc_auc_hi": oc["oracle"]["roc_auc_hi"],
                "oracle_pr_auc": om["pr_auc"],
                "oracle_pr_auc_lo": oc["oracle"]["pr_auc_lo"],
                "oracle_pr_auc_hi": oc["oracle"]["pr_auc_hi"],
                "oracle_brier": om["brier"],
                "model_roc_auc_on_oracle_users": oc["model"]["roc_auc"],
                "oracle_users": int(ok.sum()),
                "auc_ratio_to_oracle": oc["model"]["roc_auc"] / om["roc_auc"] if om["roc_auc"] > 0 else float("nan"),
            }
            scores["oracle"] = po if ok.all() else None  # plotted only when it covers every row
        # What serves: the chosen model when it beats every baseline beyond noise, else the best baseline.
        fallback = not res.beats_baselines and t.serve_best_baseline
        res.scorer = sel.best_baseline() if fallback else sel.chosen
        served, served_cal = fitted[res.scorer]
        p_served = p_val if res.scorer == sel.chosen else served_cal.apply(served.predict(d.X_val))
        _log_label(res, sel, cal)
        rng = np.random.default_rng(t.seed)
        idx = np.sort(rng.choice(len(d.val), size=min(t.shap_sample, len(d.val)), replace=False))
        with tempfile.TemporaryDirectory() as folder:
            evaluate.write_label_artifacts(Path(folder), label, y, scores, raw_val, scorer, d.X_val[idx], names)
            mlflow.log_artifacts(folder, "evaluation")
        example = pd.DataFrame(d.X_val[:5], columns=names)
        name = model_registry.model_name(cfg, label)
        res.version = model_registry.log_model(served, served_cal, label, name, example, res.scorer)
        res.gate = g = model_registry.judge(cfg, label, res.version, d.X_val, names, y, p_served, bases, fallback)
        mlflow.set_tags(
            {
                "siyu.gate": "promoted" if g.promoted else "kept_champion",
                "siyu.gate_reason": g.reason,
                "siyu.model_version": str(res.version),
                "siyu.scorer": res.scorer,
            }
        )
        mlflow.log_metrics(
            {
                f"gate_challenger_{g.metric}": g.challenger,
                **({f"gate_champion_{g.metric}": g.champion} if g.champion is not None else {}),
                **({"gate_diff_lo": g.ci[0], "gate_diff_hi": g.ci[1]} if g.ci else {}),
            }
        )
    return res


def _log_label(res: LabelResult, sel, cal) -> None:
    """The label's params, metrics (validation with CIs, folds) and tags in its MLflow run."""
    mlflow.log_params(
        {
            "label": res.label,
            "best_iteration": res.best_iteration,
            "calibration": cal.method,
            "candidate": sel.chosen,
            "scorer": res.scorer,
            "tuning_trials": sel.trials,
            "blend": json.dumps(sel.blend),
            "selection_cutoffs": ",".join(f"{pd.Timestamp(c):%Y-%m-%d}" for c in sel.cutoffs_seen),
            **{f"lgbm_{k}": v for k, v in sel.lgbm_params.items()},
            **{f"n_{k}": v for k, v in res.counts.items()},
        }
    )
    folds = {f"cv_{k}_roc_auc_fold{i}": v for k, vs in sel.fold_auc.items() for i, v in enumerate(vs)}
    mlflow.log_metrics(
        {
            **{k: v for k, v in res.metrics.items() if np.isfinite(v)},
            **{f"raw_{k}": v for k, v in res.raw_metrics.items()},
            **{f"{b}_{k}": v for b, m in res.baselines.items() for k, v in m.items()},
            **{f"model_minus_{b}_{k}": v for b, ci in res.versus.items() for k, v in zip(("lo", "hi"), ci)},
            **(res.oracle or {}),
            **folds,
            **{f"cv_{k}_roc_auc_mean": v for k, v in sel.mean_auc.items()},
            **{f"cv_calibration_{k}_log_loss": v for k, v in sel.calibration_loss.items()},
        }
    )
    mlflow.set_tag("siyu.beats_baselines", str(res.beats_baselines).lower())
    if not res.beats_baselines:
        mlflow.set_tag(
            "siyu.warning",
            f"{res.label} model does not beat the baselines: serving the best baseline ({res.scorer}); {res.message}",
        )
