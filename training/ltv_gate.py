"""The LTV gate: a version becomes champion only if it beats every baseline and the champion beyond noise.

The same rule as the classification gate (training/model_registry.judge) with normalized Gini in
place of ROC AUC: the lower bound of the paired-bootstrap interval of (new - baseline) for every
baseline, and of (new - current champion) on the same validation rows, must exceed
`training.gate_margin`. The LTV baselines are not servable scorers, so a losing model stays a
challenger and the champion (if any) keeps serving (`training.serve_best_baseline: false`: the
losing model is judged against the champion alone and may serve, loudly, as for the other labels).
"""

from __future__ import annotations

import numpy as np

from siyu.config import Config
from siyu.errors import SiyuError
from training import ltv_metrics as lm
from training.model_registry import GateDecision, RegistryUnreachable, load_version, resolve_alias


def judge_ltv(cfg: Config, version: int, X_val: np.ndarray, names: list[str], y, p_new, res) -> GateDecision:
    """Whether LTV `version` may become champion (moves no alias: model_registry.apply_gate does).

    Args:
        cfg: config (gate margin, bootstrap).
        version: the newly registered version.
        X_val: validation rows (columns `names`).
        names: their feature names.
        y: realised ltv of those rows.
        p_new: the new version's predicted ltv.
        res: the LtvResult (baselines beaten or not, with their intervals).
    """
    t = cfg.training
    new = lm.gini(y, p_new)
    if not res.beats_baselines and t.serve_best_baseline:  # false: the losing model serves, loudly (as for labels)
        why = "; ".join(f"{b} [{lo:+.4f}, {hi:+.4f}]" for b, (lo, hi) in res.versus.items())
        return GateDecision(False, f"does not beat every baseline beyond noise (model - baseline: {why})", "gini", new)
    try:
        champ_v = resolve_alias(cfg, "ltv", "champion")
    except RegistryUnreachable:
        raise
    except SiyuError:
        why = "beats every baseline" if res.beats_baselines else "LOSES to a baseline (serve_best_baseline off)"
        return GateDecision(True, f"no champion yet; {why}", "gini", new)
    champ = load_version(cfg, "ltv", champ_v)
    missing = [f for f in champ.feature_names if f not in names]
    if missing:
        why = f"champion v{champ_v} needs features not in this table ({missing[:3]}...); compare by hand"
        return GateDecision(False, why, "gini", new, None, champ_v)
    p_champ = champ.predict_proba(X_val[:, [names.index(f) for f in champ.feature_names]])
    boot = lm.gini_resamples(y, {"new": p_new, "champion": p_champ}, t.bootstrap_resamples, t.seed)
    lo, hi = lm.interval(boot["new"] - boot["champion"], t.ci_level)
    old = lm.gini(y, p_champ)
    d = GateDecision(lo > t.gate_margin, "", "gini", new, old, champ_v, (lo, hi))
    d.reason = (
        f"gini {new:.4f} vs champion v{champ_v} {old:.4f}, difference CI [{lo:+.4f}, {hi:+.4f}] "
        f"{'>' if d.promoted else 'not >'} margin {t.gate_margin}"
    )
    return d
