"""A small hand-made training table shaped like `training_table()` output, for training tests.

Outcomes follow known rules (churn rises with inactivity, complaints and mutes;
promotion with recent purchases; KOC with referral purchases), so a model that
learns nothing fails the tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.catalog import Feature

FEATURES = [
    Feature("days_since_user_event", "recency", "days since the last user-side event", "days"),
    Feature("purchases_90d", "frequency", "purchase days in the last 90 days", "count"),
    Feature("spend_90d", "monetary", "spend in the last 90 days", "currency"),
    Feature("opens_30d", "engagement", "pushes opened in the last 30 days", "count"),
    Feature("complaints_90d", "friction", "complaints in the last 90 days", "count", monotone=(("churn", 1),)),
    Feature("mutes_90d", "friction", "mutes in the last 90 days", "count", monotone=(("churn", 1),)),
    Feature(
        "referral_purchases_90d",
        "advocacy",
        "referred purchases in the last 90 days",
        "count",
        monotone=(("koc", 1), ("promotion", 1)),
    ),
    Feature("tier_rank", "ladder", "current tier rank", "tier rank"),
]
TIER_NAMES = ["connected", "engaged", "buyer", "repeat", "koc"]


def make_table(n_users: int = 400, n_cutoffs: int = 4, seed: int = 0) -> tuple[pd.DataFrame, list]:
    """Return (table, cutoffs oldest first)."""
    rng = np.random.default_rng(seed)
    cutoffs = [pd.Timestamp("2024-01-01") + pd.Timedelta(days=30 * k) for k in range(n_cutoffs)]
    frames = []
    for c in cutoffs:
        n = n_users
        rec = rng.exponential(20, n).round()
        rec[rng.random(n) < 0.05] = np.nan  # never active
        buys = rng.poisson(1.0, n)
        refs = rng.poisson(0.3, n) * (buys > 0)
        comp, mute = rng.poisson(0.2, n), rng.poisson(0.3, n)
        rank = 1 + (buys > 0) + (buys > 1) + ((buys > 1) & (refs > 0))  # koc = repeat + referral
        sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
        p_churn = sig(-1.5 + 0.06 * np.nan_to_num(rec, nan=90) + 0.8 * comp + 0.6 * mute - 0.4 * buys)
        p_promo = sig(-1.2 + 0.5 * buys + 0.8 * refs - 0.02 * np.nan_to_num(rec, nan=90))
        p_koc = sig(-2.5 + 1.5 * refs + 0.3 * buys)
        churn, promo, koc = ((rng.random(n) < p).astype(int) for p in (p_churn, p_promo, p_koc))
        below_koc = rank < 4
        df = pd.DataFrame(
            {
                "user_id": [f"u{i}" for i in range(n)],
                "cutoff": c,
                "tier": [TIER_NAMES[r] for r in rank],
                "days_since_user_event": rec,
                "purchases_90d": buys,
                "spend_90d": buys * rng.gamma(2, 50, n),
                "opens_30d": rng.poisson(2, n),
                "complaints_90d": comp,
                "mutes_90d": mute,
                "referral_purchases_90d": refs,
                "tier_rank": rank,
                "in_churn_pop": ~np.isnan(rec),
                "in_promotion_pop": below_koc,
                "in_koc_pop": below_koc,
                "_p_churn": p_churn,
                "_p_promotion": p_promo,
                "_p_koc": p_koc,  # the truth, for the oracle
            }
        )
        df["churn"] = pd.array(np.where(df.in_churn_pop, churn, -1), dtype="Int64")
        df.loc[~df.in_churn_pop, "churn"] = pd.NA
        for lab, v in (("promotion", promo), ("koc", koc)):
            df[lab] = pd.array(v, dtype="Int64")
            df.loc[~below_koc, lab] = pd.NA
        frames.append(df)
    return pd.concat(frames, ignore_index=True), cutoffs


def oracle_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The true probabilities in the simulator's long oracle format (cutoff, user_id, label, p_oracle)."""
    parts = [
        table[["cutoff", "user_id"]].assign(label=lab, p_oracle=table[f"_p_{lab}"])
        for lab in ("churn", "promotion", "koc")
    ]
    return pd.concat(parts, ignore_index=True)


def small_cfg(tracking_uri: str, **training):
    """Default config scaled for a few hundred users, tracking to `tracking_uri`."""
    from siyu.config import load_config

    cfg = load_config()
    params = {**cfg.training.lgbm_params, "min_data_in_leaf": 20, "num_leaves": 15, "num_threads": 1}
    # monotone_extra names features of the real registry; this hand-made table has its own.
    # A few seeded trials and no time budget: the same inputs give the same choice on a busy machine.
    tuning = cfg.training.tuning.model_copy(update={"n_trials": 4, "timeout_s": 0})
    small = {"min_class_count": 20, "lgbm_params": params, "monotone_extra": {}, "tuning": tuning}
    small |= {"rule_tier_feature": "tier_rank", "bootstrap_resamples": 100}  # this table's tier rank
    t = cfg.training.model_copy(update={**small, **training})
    m = cfg.mlflow.model_copy(update={"tracking_uri": tracking_uri})
    return cfg.model_copy(update={"training": t, "mlflow": m})
