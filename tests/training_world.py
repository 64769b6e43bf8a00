"""A small hand-made training table shaped like `training_table()` output, for training tests.

Outcomes follow known rules (churn rises with inactivity, complaints and mutes;
promotion with recent purchases; KOC with referral purchases), so a model that
learns nothing fails the tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from siyu.features.registry import Feature

FEATURES = [
    Feature("days_since_last_activity", "recency", "days since the last user-side event", "days"),
    Feature("purchases_90d", "frequency", "purchase days in the last 90 days", "count"),
    Feature("spend_90d", "monetary", "spend in the last 90 days", "currency"),
    Feature("opens_30d", "engagement", "pushes opened in the last 30 days", "count"),
    Feature("complaints_90d", "friction", "complaints in the last 90 days", "count", monotone=(("churn", 1),)),
    Feature("mutes_90d", "friction", "mutes in the last 90 days", "count", monotone=(("churn", 1),)),
    Feature("referral_purchases_90d", "advocacy", "referred purchases in the last 90 days", "count",
            monotone=(("koc", 1), ("promotion", 1))),
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
        refs = rng.poisson(0.3, n) * (buys > 1)
        comp, mute = rng.poisson(0.2, n), rng.poisson(0.3, n)
        rank = np.clip(1 + (buys > 0) + (buys > 1) + (refs > 0), 1, 4)
        z = -1.5 + 0.06 * np.nan_to_num(rec, nan=90) + 0.8 * comp + 0.6 * mute - 0.4 * buys
        churn = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
        promo = (rng.random(n) < 1 / (1 + np.exp(-(-1.2 + 0.5 * buys + 0.8 * refs - 0.02 * np.nan_to_num(rec, nan=90))))).astype(int)
        koc = (rng.random(n) < 1 / (1 + np.exp(-(-2.5 + 1.5 * refs + 0.3 * buys)))).astype(int)
        below_koc = rank < 4
        df = pd.DataFrame({
            "user_id": [f"u{i}" for i in range(n)], "cutoff": c,
            "tier": [TIER_NAMES[r] for r in rank],
            "days_since_last_activity": rec, "purchases_90d": buys, "spend_90d": buys * rng.gamma(2, 50, n),
            "opens_30d": rng.poisson(2, n), "complaints_90d": comp, "mutes_90d": mute,
            "referral_purchases_90d": refs, "tier_rank": rank,
            "in_churn_pop": ~np.isnan(rec), "in_promotion_pop": below_koc, "in_koc_pop": below_koc,
        })
        df["churn"] = pd.array(np.where(df.in_churn_pop, churn, -1), dtype="Int64")
        df.loc[~df.in_churn_pop, "churn"] = pd.NA
        for lab, v in (("promotion", promo), ("koc", koc)):
            df[lab] = pd.array(v, dtype="Int64")
            df.loc[~below_koc, lab] = pd.NA
        frames.append(df)
    return pd.concat(frames, ignore_index=True), cutoffs
