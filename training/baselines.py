"""What the model has to beat, on the same out-of-time split: an operator's rule,
a logistic regression on RFM features, and (simulated worlds) the oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from siyu.errors import SiyuError


def rule_scores(label: str, fit: pd.DataFrame, val: pd.DataFrame, recency_feature: str) -> np.ndarray:
    """The rule an operator would use, as a score on the validation rows.

    churn: days since the user's last activity (longer gap, higher risk).
    promotion / koc: the historic rate of the label in the user's current tier
    (measured on the training cutoffs).

    Args:
        label: churn, promotion or koc.
        fit: training rows (population of the label, label present).
        val: validation rows.
        recency_feature: the column holding days since the last user-side event.

    Returns:
        One score per validation row (higher = more likely).
    """
    if label == "churn":
        if recency_feature not in val.columns:
            raise SiyuError(
                f"churn rule baseline: feature '{recency_feature}' (training.rule_recency_feature) is not in the table"
            )
        gap = pd.to_numeric(val[recency_feature], errors="coerce").to_numpy(dtype=float)
        # No activity at all ever counts as the longest gap.
        return np.where(np.isnan(gap), np.nanmax(gap, initial=0.0) + 1.0, gap)
    tier = "tier_name" if "tier_name" in val.columns else "tier"
    rates = fit.groupby(tier, observed=True)[label].mean()
    overall = float(fit[label].mean())
    return val[tier].map(rates).astype(float).fillna(overall).to_numpy()


def load_oracle(events_path: Path) -> pd.DataFrame | None:
    """The simulator's oracle beside the events (`oracle.parquet`), or None when absent."""
    path = Path(events_path)
    path = (path if path.is_dir() else path.parent) / "oracle.parquet"
    if not path.is_file():
        return None
    df = pd.read_parquet(path, columns=["cutoff", "user_id", "label", "p_oracle"])
    df["cutoff"] = pd.to_datetime(df["cutoff"])
    df["user_id"] = df["user_id"].astype(str)
    return df


def oracle_scores(oracle: pd.DataFrame | None, label: str, cutoff, val: pd.DataFrame) -> np.ndarray | None:
    """The oracle's probability for each validation row (NaN where it has no estimate), or None.

    Args:
        oracle: `load_oracle` output (or None).
        label: churn, promotion or koc.
        cutoff: the validation cutoff.
        val: validation rows (user_id column).

    Returns:
        Array aligned with `val` (the oracle may cover a sample of users; compare on those),
        or None when the oracle lacks this cutoff and label altogether.
    """
    if oracle is None:
        return None
    o = oracle[(oracle["label"] == label) & (oracle["cutoff"] == pd.Timestamp(cutoff))]
    if o.empty:
        return None
    p = val["user_id"].astype(str).map(o.drop_duplicates("user_id").set_index("user_id")["p_oracle"])
    if p.isna().all():
        return None
    return p.to_numpy(dtype=float)
