"""The contact advice in the snapshot and the API: push effect, push or hold, the reason, the fatigue state.

The push-effect champion (training/push_effect.py) is optional: without one, or outside the churn
population, every advice field is null (the brand's usual practice stands).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from siyu.config import Config
from siyu.errors import SiyuError

FIELDS = ("push_effect_churn", "push_effect_spend", "contact", "contact_reason", "fatigue")


def load_push_effect(cfg: Config, alias: str = "champion"):
    """The push-effect model under `alias`, or None when the registry has none.

    Raises:
        RegistryUnreachable: the registry does not answer (not the same as "no model").
    """
    from training.model_registry import RegistryUnreachable, load_model
    from training.uplift import LABEL

    try:
        model = load_model(cfg, LABEL, alias=alias)
    except RegistryUnreachable:
        raise
    except SiyuError:
        return None
    return native_terms(model)


def native_terms(model):
    """`model` with each term's booster behind serving.native.NativeBooster (same effects, no per-call set-up)."""
    from serving.native import NativeBooster

    terms = {o: [(NativeBooster(b), w, a) for b, w, a in t] for o, t in model.terms.items()}
    return dataclasses.replace(model, terms=terms)


def advice_columns(model, X: np.ndarray, churn_pop: np.ndarray, names: list[str], cfg: Config) -> dict[str, np.ndarray]:
    """FIELDS per row of X: effects (NaN) and contact / reason / fatigue (None) outside the churn population.

    Args:
        model: the push-effect model (training.uplift.PushEffectModel) or None.
        X: feature rows in `names` order.
        churn_pop: bool per row.
        names: the columns of X (the model's inputs are picked by name).
        cfg: the config (uplift.policy).
    """
    from training.policy import advise

    n = len(X)
    out: dict[str, np.ndarray] = {f: np.full(n, np.nan) for f in FIELDS[:2]}
    out.update({f: np.full(n, None, dtype=object) for f in FIELDS[2:]})
    rows = np.flatnonzero(np.asarray(churn_pop, dtype=bool))
    if model is None or rows.size == 0:
        return out
    pos = {f: j for j, f in enumerate(names)}
    missing = [f for f in model.feature_names if f not in pos]
    if missing:
        raise SiyuError(f"the push-effect model needs features the snapshot lacks: {missing[:5]}")
    Xm = X[np.ix_(rows, [pos[f] for f in model.feature_names])]
    eff = model.effects(Xm)
    p = cfg.uplift.policy
    ratio = X[rows, pos[p.fatigue_feature]] if p.fatigue_feature in pos else np.full(rows.size, np.nan)
    contact, reason, state = advise(eff["churn"], eff["spend"], ratio, p)
    out["push_effect_churn"][rows], out["push_effect_spend"][rows] = eff["churn"], eff["spend"]
    out["contact"][rows], out["contact_reason"][rows], out["fatigue"][rows] = contact, reason, state
    return out


def arrow_columns(cols: dict[str, np.ndarray]) -> dict[str, pa.Array]:
    """The advice columns as Arrow arrays for the snapshot (nulls where there is no advice)."""
    return {
        f: pa.array(cols[f], from_pandas=True) if f.startswith("push_") else pa.array(cols[f].tolist(), pa.string())
        for f in FIELDS
    }
