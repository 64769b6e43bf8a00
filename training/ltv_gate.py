"""The LTV gate and registration: champion only if it beats every baseline and the champion beyond noise.

The same rule as the classification gate (training/model_registry.judge) with normalized Gini in
place of ROC AUC: the lower bound of the paired-bootstrap interval of (new - baseline) for every
baseline, and of (new - current champion) on the same validation rows, must exceed
`training.gate_margin`. A model that does not beat every baseline is not registered: BG/NBD +
Gamma-Gamma (the one baseline computed from features) is, and it replaces the champion unless the
champion itself beats every baseline beyond noise, loudly, as for the other labels
(`training.serve_best_baseline: false`: the losing model is judged against the champion alone and may
serve; a log without purchase features keeps the losing model a challenger).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from siyu.config import Config
from siyu.errors import SiyuError
from training import ltv_metrics as lm
from training.bootstrap import interval
from training.model_registry import GateDecision, RegistryUnreachable, load_version, resolve_alias


def judge_ltv(
    cfg: Config, version: int, X_val: np.ndarray, names: list[str], y, p_new, res, baselines: dict
) -> GateDecision:
    """Whether LTV `version` may become champion (moves no alias: model_registry.apply_gate does).

    Args:
        cfg: config (gate margin, bootstrap).
        version: the newly registered version.
        X_val: validation rows (columns `names`).
        names: their feature names.
        y: realised ltv of those rows.
        p_new: the new version's predicted ltv.
        res: the LtvResult (baselines beaten or not, with their intervals; `scorer` bgnbd_gg: a baseline).
        baselines: baseline name -> predicted ltv of those rows.
    """
    t = cfg.training
    new = lm.gini(y, p_new)
    fallback = res.scorer != "lightgbm"
    if not res.beats_baselines and t.serve_best_baseline and not fallback:  # no servable baseline either
        why = "; ".join(f"{b} [{lo:+.4f}, {hi:+.4f}]" for b, (lo, hi) in res.versus.items())
        return GateDecision(False, f"does not beat every baseline beyond noise (model - baseline: {why})", "gini", new)
    try:
        champ_v = resolve_alias(cfg, "ltv", "champion")
    except RegistryUnreachable:
        raise
    except SiyuError:
        why = "beats every baseline" if res.beats_baselines else "LOSES to a baseline (serve_best_baseline off)"
        return GateDecision(True, f"no champion yet; {f'serving {res.scorer}' if fallback else why}", "gini", new)
    champ = load_version(cfg, "ltv", champ_v)
    missing = [f for f in champ.feature_names if f not in names]
    if missing:
        why = f"champion v{champ_v} needs features not in this table ({missing[:3]}...); compare by hand"
        return GateDecision(False, why, "gini", new, None, champ_v)
    p_champ = champ.predict_proba(X_val[:, [names.index(f) for f in champ.feature_names]])
    # The baselines' resamples are needed only to judge a champion that a baseline would replace.
    scores = {"new": p_new, "champion": p_champ, **(baselines if fallback else {})}
    boot = lm.gini_resamples(y, scores, t.bootstrap_resamples, t.seed, t.bootstrap_max_rows)
    lo, hi = interval(boot["new"] - boot["champion"], t.ci_level)
    old = lm.gini(y, p_champ)
    d = GateDecision(lo > t.gate_margin, "", "gini", new, old, champ_v, (lo, hi))
    span = f"gini {new:.4f} vs champion v{champ_v} ({champ.kind}) {old:.4f}, difference CI [{lo:+.4f}, {hi:+.4f}]"
    if not fallback:
        d.reason = f"{span} {'>' if d.promoted else 'not >'} margin {t.gate_margin}"
        return d
    champ_lo = [interval(boot["champion"] - boot[b], t.ci_level)[0] for b in baselines]
    d.promoted = not all(v > t.gate_margin for v in champ_lo)
    d.reason = (
        f"champion v{champ_v} ({champ.kind}) does not beat every baseline beyond noise: {res.scorer} serves ({span})"
        if d.promoted
        else f"champion v{champ_v} still beats every baseline ({span}): kept"
    )
    return d


def log_and_register(
    res, model, X_val, names: list[str], y, plot: dict, cfg: Config, tuned: dict, baselines: dict
) -> None:
    """Log the LTV run (params, metrics, decile plot and table), register the version, judge it, move aliases.

    Args:
        res: the LtvResult (filled in: version, gate, trained, message).
        model: what registers: the fitted training.ltv_model.LTVModel, or the BaselineLTVModel that serves
            in its place (res.scorer).
        X_val: validation rows (columns `names`).
        names: the table's feature names.
        y: their realised ltv.
        plot: scorer -> predictions for the decile plot (None: not plotted).
        cfg: the config.
        tuned: the tuned LightGBM parameters.
        baselines: baseline name -> predicted ltv of the validation rows.
    """
    from training.model_registry import apply_gate, log_scoring_model

    mlflow.log_params(
        {
            "label": "ltv",
            "ltv_horizon_days": cfg.ltv.horizon_days,
            "ltv_cutoffs": ",".join(f"{pd.Timestamp(c):%Y-%m-%d}" for c in res.cutoffs),
            "ltv_referral_part": res.referral,
            "ltv_cross_fit_groups": res.cross_fit_groups,
            "candidate": res.chosen,
            "scorer": res.scorer,
            "tuning_trials": res.trials,
            **{f"rows_{k}": v for k, v in res.rows.items()},
            **{f"lgbm_{k}": v for k, v in tuned.items()},
        }
    )
    mlflow.log_metrics(
        {
            **{f"{s}_{k}": v for s, m in res.metrics.items() for k, v in m.items() if np.isfinite(v)},
            **{f"model_minus_{b}_gini_{k}": v for b, ci in res.versus.items() for k, v in zip(("lo", "hi"), ci)},
            **{f"cv_{k}_gini_fold{i}": v for k, vs in res.fold_gini.items() for i, v in enumerate(vs)},
            **(res.oracle or {}),
        }
    )
    with tempfile.TemporaryDirectory() as d:
        lm.calibration_plot(Path(d) / "ltv_calibration_deciles.png", y, plot)
        table = {k: dict(zip(("predicted", "realised"), (a.tolist() for a in lm.deciles(y, p))))
                 for k, p in plot.items() if p is not None}  # fmt: skip
        (Path(d) / "ltv_deciles.json").write_text(json.dumps(table, indent=1))
        mlflow.log_artifacts(d, "evaluation")
    X_own = X_val[:, [names.index(f) for f in model.feature_names]]
    res.version = log_scoring_model(model, pd.DataFrame(X_own[:5], columns=model.feature_names))
    res.gate = g = judge_ltv(cfg, res.version, X_val, names, y, model.predict_proba(X_own), res, baselines)
    apply_gate(cfg, "ltv", res.version, g)
    res.trained = True
    m = res.metrics["model"]
    chose = "" if res.chosen == "lightgbm" else f" (the folds chose {res.chosen})"
    res.message = f"lightgbm gini {m['gini']:.4f}{chose}; " + "; ".join(
        f"{b} gini {res.metrics[b]['gini']:.4f} (model - {b}: CI [{lo:+.4f}, {hi:+.4f}])"
        for b, (lo, hi) in res.versus.items()
    )
    kept = f"serving the best baseline ({res.scorer})" if res.scorer != "lightgbm" else "champion unchanged"
    warn = "" if res.beats_baselines else f"ltv model does not beat the baselines: {kept}; {res.message}"
    mlflow.set_tags(
        {
            "siyu.beats_baselines": str(res.beats_baselines).lower(),
            "siyu.gate": "promoted" if g.promoted else "kept_champion",
            "siyu.gate_reason": g.reason,
            "siyu.model_version": str(res.version),
            "siyu.scorer": "ltv" if res.scorer == "lightgbm" else res.scorer,
            **({"siyu.warning": warn} if warn else {}),
        }
    )
