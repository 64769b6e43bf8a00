"""The LTV model: two LightGBM Tweedie regressions (own spend, referred buyers' spend), saved as text.

Lifetime value over L days is zero for most users and long-tailed for the rest; the Tweedie
objective (a compound Poisson-gamma: a point mass at zero plus a continuous tail, log link) fits
that shape directly. The referral part is its own booster, absent for a log without advocacy
events (its prediction is then missing, not zero). A model folder holds scorer.json (kind `ltv`)
plus `own.txt` and, when present, `referral.txt` (LightGBM's text format; nothing is pickled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from siyu.config import Config
from training.scorer_files import write_spec

PARTS = ("own", "referral")


def tweedie_params(cfg: Config, overrides: dict | None = None) -> dict:
    """LightGBM parameters of an LTV part: the config's tree settings under a Tweedie objective."""
    t = cfg.training
    return {
        **t.lgbm_params,
        "learning_rate": cfg.ltv.learning_rate,
        "objective": "tweedie",
        "tweedie_variance_power": cfg.ltv.tweedie_variance_power,
        "metric": "tweedie",
        "verbosity": -1,
        "seed": t.seed,
        "deterministic": True,
        "force_col_wise": True,
        **(overrides or {}),
    }


def nonnegative(y) -> np.ndarray:
    """The Tweedie target: net spend with a negative total (refunds) counted as 0 (Tweedie needs y >= 0)."""
    return np.maximum(np.asarray(y, dtype=float), 0.0)


def fit_part(params: dict, X_fit, y_fit, X_es, y_es, names: Sequence[str], cats: Sequence[str], cfg: Config):
    """One Tweedie booster, early-stopped on (X_es, y_es); negative net spend (refunds) counts as 0."""
    from training.fit import train_booster

    return train_booster(params, X_fit, nonnegative(y_fit), X_es, nonnegative(y_es), names, cats, cfg)


@dataclass
class LTVModel:
    """Predicted own, referral and total value of feature rows in `feature_names` order."""

    label: str
    name: str
    version: int
    feature_names: list[str]
    own: Any  # lightgbm.Booster
    referral: Any | None  # lightgbm.Booster, or None: the log shows no referrals
    kind: str = "ltv"

    def predict_parts(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """{"own", "referral" (NaN when there is no referral part), "ltv"} per row of X."""
        own = self.own.predict(X)
        ref = self.referral.predict(X) if self.referral is not None else np.full(len(own), np.nan)
        return {"own": own, "referral": ref, "ltv": own + np.nan_to_num(ref)}

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Predicted ltv (currency) per row: the ScoringModel / pyfunc method name, a value here."""
        return self.predict_parts(X)["ltv"]

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """n x features+1 log-scale contributions: each part's, weighted by its share of the prediction."""
        c = self.own.predict(X, pred_contrib=True)
        if self.referral is None:
            return c
        parts = self.predict_parts(X)
        w = (parts["own"] / np.maximum(parts["ltv"], 1e-12))[:, None]
        return w * c + (1 - w) * self.referral.predict(X, pred_contrib=True)

    def save(self, folder: str | Path) -> Path:
        """Write scorer.json, own.txt and referral.txt (when present) into `folder`; returns it."""
        parts = [p for p in PARTS if getattr(self, p) is not None]
        folder = write_spec(folder, self.kind, self.label, self.name, self.feature_names, parts=parts)
        for p in parts:
            getattr(self, p).save_model(str(folder / f"{p}.txt"))
        return folder


def load_ltv(folder: Path, spec: dict, name: str, version: int) -> LTVModel:
    """Loader of kind `ltv` (registered in training.scorer_files.KINDS)."""
    import lightgbm as lgb

    boosters = {p: lgb.Booster(model_file=str(folder / f"{p}.txt")) for p in spec["parts"]}
    return LTVModel(
        spec["label"], name, version, list(spec["feature_names"]), boosters["own"], boosters.get("referral")
    )
