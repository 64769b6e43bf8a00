"""`siyu train`'s push-effect step: fit the meta-learner, judge it out of time, log it, register it.

Fit on the training cutoffs' churn population (held and pushed rows, training/uplift.py), judged on
the validation cutoff's control groups (Qini / AUUC, uplift deciles) and, in a simulated world, on
the oracle's counterfactual (Spearman against the true effect; the advice's expected churn and spend
against push-everyone, hold-everyone and the oracle's own advice). The version becomes `champion`
when its ranking beats a random one on the validation control groups (Qini > 0); otherwise the
brand's usual practice (push everyone) stands, and the snapshot carries no advice.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from features.catalog import Feature
from siyu.config import Config
from training import model_registry
from training.fit import matrix, stacked
from training.policy import advise
from training.uplift import LABEL, arm_rows, fit_push_effect, with_arms
from training.uplift_eval import compare_policies, decile_table, oracle_contrast, plot_deciles, qini


@dataclass
class PushEffectResult:
    """What the push-effect step did."""

    trained: bool
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    version: int | None = None
    promoted: bool = False
    deciles: pd.DataFrame | None = None


def train_push_effect(
    table: pd.DataFrame,
    arms: pd.DataFrame,
    cutoffs: Sequence,
    cfg: Config,
    features: Sequence[Feature],
    oracle=None,
    earlier: pd.DataFrame | None = None,
) -> PushEffectResult:
    """Fit, evaluate, log (a nested MLflow run of the active one) and register the push-effect model.

    Args:
        table: the training table (all cutoffs; the last validates).
        arms: uplift.arms_frame() of the same cutoffs.
        cutoffs: the cutoffs, oldest first.
        cfg: the config (uplift.*).
        features: the model's features (column order).
        oracle: baselines.load_oracle() output, or None.
        earlier: the training table of earlier cutoffs (uplift.extra_cutoffs) whose control groups it also fits on.

    Returns:
        The PushEffectResult (trained False with the reason when the control groups are too small).
    """
    from features.catalog import HOLDOUT_FEATURE

    # The control-group flag is the arm itself: an effect compares both arms at the same inputs.
    features = [f for f in features if f.name != HOLDOUT_FEATURE]
    u, names = cfg.uplift, [f.name for f in features]
    val_cut = pd.Timestamp(sorted(pd.Timestamp(c) for c in cutoffs)[-1])
    # Fit rows by position in each table (the earlier cutoffs' and these), filled straight into one
    # matrix: no frame copies of a pool of millions of rows. Validation is the last cutoff of `table`.
    srcs = ([earlier] if earlier is not None and len(earlier) else []) + [table]
    rows = []
    for src in srcs:
        pos, arm, spend = arm_rows(src, arms, u.min_held_share)
        rows.append((pos, arm, spend, pd.to_datetime(src["cutoff"].to_numpy()[pos]) < val_cut))
    rows = capped_arms(rows, u.max_rows_per_arm, cfg.training.seed)
    parts = [(src, pos[f]) for src, (pos, _, _, f) in zip(srcs, rows)]
    fit = {
        "churn": np.concatenate([src["churn"].to_numpy(float)[p] for src, p in parts]),
        "spend": np.concatenate([spend[f] for _, _, spend, f in rows]),
        "arm": np.concatenate([arm[f] for _, arm, _, f in rows]),
    }
    pos, arm, spend, in_fit = rows[-1]  # `table`'s
    val = with_arms(table, pos[~in_fit], arm[~in_fit], spend[~in_fit]).reset_index(drop=True)
    held_fit, held_val = int(fit["arm"].sum()), int(val["arm"].sum())
    if held_fit < u.min_held_rows or held_val == 0 or held_val == len(val):
        return PushEffectResult(
            False,
            f"skipped: {held_fit} held rows on the training cutoffs (uplift.min_held_rows={u.min_held_rows}), "
            f"{held_val} of {len(val)} on the validation cutoff (a log without holdout_start / holdout_end has none)",
        )
    X_fit, X_val = stacked(parts, names), matrix(val, names)
    with mlflow.start_run(run_name="push_effect", nested=True):
        t0 = time.perf_counter()
        model = fit_push_effect(
            X_fit,
            fit["churn"],
            fit["spend"],
            fit["arm"] == 1,
            cfg,
            names,
            model_registry.model_name(cfg, LABEL),
        )
        eff = model.effects(X_val)
        held = val["arm"].to_numpy() == 1
        res = PushEffectResult(True, metrics=_metrics(eff, val, held, model, cfg, names))
        res.metrics["fit_seconds"] = time.perf_counter() - t0
        truth = oracle_contrast(oracle, val_cut, val["user_id"])
        true_c = None
        if truth is not None:
            res.metrics.update(
                {f"oracle_{k}": v for k, v in compare_policies(eff["churn"], eff["spend"], truth, u.policy).items()}
            )
            true_c = (truth["churn_pushed"] - truth["churn_held"]).to_numpy()
        res.deciles = decile_table(eff["churn"], held, val["churn"].to_numpy(float), true_c, u.deciles)
        mlflow.log_params({"label": LABEL, "learner": u.learner, **{f"lgbm_{k}": v for k, v in u.lgbm_params.items()}})
        mlflow.log_metrics({k: v for k, v in res.metrics.items() if np.isfinite(v)})
        with tempfile.TemporaryDirectory() as folder:
            res.deciles.to_csv(Path(folder) / "push_effect_deciles.csv", index=False)
            plot_deciles(res.deciles, Path(folder) / "push_effect_deciles.png")
            mlflow.log_artifacts(folder, "evaluation")
        res.version = model_registry.log_scoring_model(model, pd.DataFrame(X_val[:5], columns=names))
        res.promoted = res.metrics["qini_churn"] > 0
        if res.promoted:
            model_registry.promote(cfg, LABEL, res.version)
        res.message = (
            f"{u.learner}-learner: Qini {res.metrics['qini_churn']:+.4f} on {held_val} held / {len(val) - held_val} "
            f"pushed validation users; "
            + ("champion" if res.promoted else "NOT promoted (no better than random: push everyone stands)")
        )
        mlflow.set_tags({"siyu.gate": "promoted" if res.promoted else "kept_champion", "siyu.gate_reason": res.message})
    return res


def capped_arms(rows: list[tuple[np.ndarray, ...]], cap: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    """`rows` with each arm's fit rows (over all tables) cut to a seeded sample of `cap`; validation rows kept.

    Args:
        rows: per table (positions, arm, spend, in_fit), as arm_rows gives them plus the fit flag.
        cap: fit rows per arm (uplift.max_rows_per_arm).
        seed: the sample's seed.

    Returns:
        The same tuples with the dropped fit rows removed (order kept).
    """
    arm = np.concatenate([a[f] for _, a, _, f in rows]) if rows else np.zeros(0, int)
    keep = np.ones(len(arm), dtype=bool)
    rng = np.random.default_rng(seed)
    for side in (0, 1):
        at = np.flatnonzero(arm == side)
        if len(at) > cap:
            keep[at] = False
            keep[rng.choice(at, cap, replace=False)] = True
    out, lo = [], 0
    for pos, a, spend, f in rows:
        k = np.ones(len(pos), dtype=bool)
        k[np.flatnonzero(f)] = keep[lo : lo + int(f.sum())]
        lo += int(f.sum())
        out.append((pos[k], a[k], spend[k], f[k]))
    return out


def _metrics(eff: dict, val: pd.DataFrame, held: np.ndarray, model, cfg: Config, names: list[str]) -> dict[str, float]:
    """Qini / AUUC per outcome on the validation control groups, mean estimates, the advice's hold share."""
    out: dict[str, float] = {"rows_held_fit": model.info["rows_held"], "rows_pushed_fit": model.info["rows_pushed"]}
    for outcome, y in (("churn", val["churn"].to_numpy(float)), ("spend", val["spend"].to_numpy(float))):
        q = qini(eff[outcome], held, y)
        out[f"qini_{outcome}"], out[f"auuc_{outcome}"] = q["qini"], q["auuc"]
        out[f"realised_effect_{outcome}"], out[f"estimated_effect_{outcome}"] = q["overall"], float(eff[outcome].mean())
    p = cfg.uplift.policy
    ratio = val[p.fatigue_feature].to_numpy(float) if p.fatigue_feature in val.columns else np.full(len(val), np.nan)
    contact, _, state = advise(eff["churn"], eff["spend"], ratio, p)
    out["advice_hold_share"] = float((contact == "hold").mean())
    out["fatigued_share"] = float((state == "fatigued").mean())
    return out
