"""The LTV model: two LightGBM Tweedie regressions (own spend, referred buyers' spend), saved as text.

Lifetime value over L days is zero for most users and long-tailed for the rest; the Tweedie
objective (a compound Poisson-gamma: a point mass at zero plus a continuous tail, log link) fits
that shape directly. The referral part is its own booster, absent for a log without advocacy
events (its prediction is then missing, not zero). A model folder holds scorer.json (kind `ltv`)
plus `own.txt` and, when present, `referral.txt` (LightGBM's text format; nothing is pickled).
Where no model beats the baselines, BaselineLTVModel (kind `ltv_bgnbd_gg`) serves instead.
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


@dataclass
class BaselineLTVModel:
    """BG/NBD + Gamma-Gamma expected own spend over L days: the LTV scorer when no model beats the baselines.

    Seven numbers in scorer.json (kind `ltv_bgnbd_gg`); own value only (no CLV model knows referrals), and
    no reasons: a closed form of six features is not a sum over them (training.serve_best_baseline).
    """

    label: str
    name: str
    version: int
    feature_names: list[str]
    bg: tuple[float, ...]  # BG/NBD (r, alpha, a, b)
    gg: tuple[float, ...]  # Gamma-Gamma (p, q, gamma)
    horizon_days: int
    kind: str = "ltv_bgnbd_gg"
    referral: None = None

    def predict_parts(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """{"own", "referral" (NaN), "ltv"} per row of X."""
        from training.ltv_baselines import BGNBDGammaGamma

        frame = {c: X[:, i] for i, c in enumerate(self.feature_names)}
        own = BGNBDGammaGamma(self.horizon_days, self.bg, self.gg).predict(frame)
        return {"own": own, "referral": np.full(len(own), np.nan), "ltv": own}

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Predicted ltv (currency) per row."""
        return self.predict_parts(X)["ltv"]

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """n x features+1: the log value in the bias, zeros for the features (no per-feature reasons)."""
        out = np.zeros((len(X), len(self.feature_names) + 1))
        out[:, -1] = np.log(np.maximum(self.predict_proba(X), 1e-12))
        return out

    def save(self, folder: str | Path) -> Path:
        """Write scorer.json (the seven parameters and L) into `folder`; returns it."""
        extra = {"bgnbd": list(self.bg), "gamma_gamma": list(self.gg), "horizon_days": self.horizon_days}
        return write_spec(folder, self.kind, self.label, self.name, self.feature_names, **extra)


def baseline_ltv_model(name: str, fitted) -> BaselineLTVModel:
    """A fitted ltv_baselines.BGNBDGammaGamma as a registrable model over its input features."""
    from training.ltv_baselines import INPUTS

    return BaselineLTVModel("ltv", name, 0, list(INPUTS), tuple(fitted.bg), tuple(fitted.gg), fitted.horizon_days)


def load_baseline_ltv(folder: Path, spec: dict, name: str, version: int) -> BaselineLTVModel:
    """Loader of kind `ltv_bgnbd_gg` (registered in training.scorer_files.KINDS)."""
    return BaselineLTVModel(spec["label"], name, version, list(spec["feature_names"]), tuple(spec["bgnbd"]),
                            tuple(spec["gamma_gamma"]), int(spec["horizon_days"]))  # fmt: skip


def load_ltv(folder: Path, spec: dict, name: str, version: int) -> LTVModel:
    """Loader of kind `ltv` (registered in training.scorer_files.KINDS)."""
    import lightgbm as lgb

    boosters = {p: lgb.Booster(model_file=str(folder / f"{p}.txt")) for p in spec["parts"]}
    return LTVModel(
        spec["label"], name, version, list(spec["feature_names"]), boosters["own"], boosters.get("referral")
    )
