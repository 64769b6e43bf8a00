"""Train the churn, promotion and KOC models on the multi-cutoff training table.

Split (out of time, DESIGN §4): the latest cutoff validates; the latest
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
from siyu.contract import LABELS
from siyu.errors import SiyuError
from training import baselines, evaluate, model_registry
from training.fit import LabelData, fit_label, tier_column


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


@dataclass
class TrainResult:
    """One training: the runs, the split and every label's result."""

    parent_run_id: str
    experiment: str
    tracking_uri: str
    cutoffs: list
    rows: dict[str, int]
    labels: dict[str, LabelResult]

    def warnings(self) -> list[str]:
        """Loud messages: labels that lost to a baseline, labels skipped."""
        out = [f"{r.label}: {r.message}" for r in self.labels.values() if not r.trained]
        out += [
            f"{r.label}: MODEL DOES NOT BEAT THE BASELINES ({r.message})"
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

    from events.loader import connect
    from events.validate import load_valid_events
    from features.catalog import features_of
    from features.windows import resolve
    from training.table import training_cutoffs, training_table

    con = connect()
    load_valid_events(con, events_path, cfg)
    cfg = resolve(cfg, con)  # `auto` windows from this log; the models store the feature list
    cutoffs = training_cutoffs(con, cfg)
    table = training_table(con, cutoffs, cfg)
    lo, hi = con.execute("SELECT min(ts), max(ts) FROM events").fetchall()[0]
    con.close()  # DuckDB's memory goes back before LightGBM needs it
    info = {"events_path": str(events_path), "data_window_start": str(lo), "data_window_end": str(hi)}
    features = features_of(cfg)
    return train_table(table, cutoffs, cfg, features, experiment, baselines.load_oracle(Path(events_path)), info)


def train_table(
    table: pd.DataFrame,
    cutoffs: Sequence,
    cfg: Config,
    features: Sequence[Feature],
    experiment: str | None = None,
    oracle: pd.DataFrame | None = None,
    info: dict | None = None,
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
        for label in LABELS:
            keep = [t.rule_recency_feature] + [f.name for f in features if f.family in t.rfm_families]
            data = LabelData.split(table, label, part, names, keep=[c for c in keep if c in table.columns])
            results[label] = _train_label(label, data, cfg, features, oracle, cutoffs[-1])
            del data  # free this label's matrices before the next one is built
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
                "siyu.skipped": ",".join(r.label for r in results.values() if not r.trained),
                "siyu.warning": f"model does not beat baselines: {','.join(lost)}" if lost else "",
            }
        )
    return TrainResult(parent.info.run_id, experiment or cfg.mlflow.experiment, uri, cutoffs, rows, results)


def _train_label(
    label: str, d: LabelData, cfg: Config, features: Sequence[Feature], oracle: pd.DataFrame | None, val_cutoff
) -> LabelResult:
    """Eligibility, fit, calibrate, evaluate against baselines and oracle, log, register, judge (aliases: caller)."""
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
    with mlflow.start_run(run_name=label, nested=True) as run:
        res.run_id = run.info.run_id
        booster, cal, raw_val, p_val = fit_label(label, d, cfg, features)
        res.trained, res.best_iteration = True, int(booster.best_iteration or booster.current_iteration())
        y = d.val[label].to_numpy(dtype=int)
        res.metrics = evaluate.all_metrics(
            y, p_val, t.lift_fractions, tiers=d.val[tier_column(d.val)].astype(str).to_numpy()
        )
        res.raw_metrics = evaluate.probability_metrics(y, raw_val)
        rfm = [f.name for f in features if f.family in t.rfm_families]
        scores = {
            "model": p_val,
            "rule": baselines.rule_scores(label, d.fit_and_holdout, d.val, t.rule_recency_feature),
            "logreg_rfm": baselines.logreg_scores(d.fit_and_holdout, d.val, label, rfm, t.seed),
        }
        for b in ("rule", "logreg_rfm"):
            res.baselines[b] = {**evaluate.ranking_metrics(y, scores[b])}
            if b == "logreg_rfm":
                res.baselines[b].update(evaluate.probability_metrics(y, scores[b]))
        res.beats_baselines = all(
            res.metrics[m] > res.baselines[b][m] for b in res.baselines for m in ("roc_auc", "pr_auc")
        )
        res.message = "; ".join(
            f"{b} roc_auc {v['roc_auc']:.4f} pr_auc {v['pr_auc']:.4f}" for b, v in res.baselines.items()
        )
        res.message = f"model roc_auc {res.metrics['roc_auc']:.4f} pr_auc {res.metrics['pr_auc']:.4f}; {res.message}"
        po = baselines.oracle_scores(oracle, label, val_cutoff, d.val)
        if po is not None:
            ok = ~np.isnan(po)
            om, mm = evaluate.all_metrics(y[ok], po[ok], ()), evaluate.all_metrics(y[ok], p_val[ok], ())
            res.oracle = {
                "oracle_roc_auc": om["roc_auc"],
                "oracle_pr_auc": om["pr_auc"],
                "oracle_brier": om["brier"],
                "model_roc_auc_on_oracle_users": mm["roc_auc"],
                "oracle_users": int(ok.sum()),
                "auc_ratio_to_oracle": mm["roc_auc"] / om["roc_auc"] if om["roc_auc"] > 0 else float("nan"),
            }
            scores["oracle"] = po if ok.all() else None  # plotted only when it covers every row
        mlflow.log_params(
            {
                "label": label,
                "best_iteration": res.best_iteration,
                "calibration": cal.method,
                **{f"n_{k}": v for k, v in res.counts.items()},
            }
        )
        mlflow.log_metrics(
            {
                **res.metrics,
                **{f"raw_{k}": v for k, v in res.raw_metrics.items()},
                **{f"{b}_{k}": v for b, m in res.baselines.items() for k, v in m.items()},
                **(res.oracle or {}),
            }
        )
        mlflow.set_tag("siyu.beats_baselines", str(res.beats_baselines).lower())
        if not res.beats_baselines:
            mlflow.set_tag("siyu.warning", f"{label} model does not beat the baselines: {res.message}")
        rng = np.random.default_rng(t.seed)
        idx = np.sort(rng.choice(len(d.val), size=min(t.shap_sample, len(d.val)), replace=False))
        with tempfile.TemporaryDirectory() as folder:
            evaluate.write_label_artifacts(Path(folder), label, y, scores, raw_val, booster, d.X_val[idx], names)
            mlflow.log_artifacts(folder, "evaluation")
        example = pd.DataFrame(d.X_val[:5], columns=names)
        res.version = model_registry.log_model(booster, cal, label, model_registry.model_name(cfg, label), example)
        metric_fn = {
            "roc_auc": lambda yy, pp: evaluate.ranking_metrics(yy, pp)["roc_auc"],
            "pr_auc": lambda yy, pp: evaluate.ranking_metrics(yy, pp)["pr_auc"],
        }[t.gate_metric]
        res.gate = model_registry.judge(
            cfg, label, res.version, d.X_val, names, y, res.metrics[t.gate_metric], metric_fn, t.gate_metric
        )
        g = res.gate
        mlflow.set_tags(
            {
                "siyu.gate": "promoted" if g.promoted else "kept_champion",
                "siyu.gate_reason": g.reason,
                "siyu.model_version": str(res.version),
            }
        )
        mlflow.log_metrics(
            {
                f"gate_challenger_{g.metric}": g.challenger,
                **({f"gate_champion_{g.metric}": g.champion} if g.champion is not None else {}),
            }
        )
    return res
