"""How good the push-effect estimate and the contact advice are: Qini / AUUC on the validation cutoff's
control groups, uplift deciles, and (simulated worlds) the oracle's true effect and the advice's outcomes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from siyu.config import PolicyConfig
from training.policy import hold_mask, policy_outcomes

CONTRAST = ("churn_pushed", "churn_held", "spend_pushed", "spend_held")
HALVES = tuple(f"{k}_{h}" for h in "ab" for k in CONTRAST)  # each half of the oracle's replicas


def qini(effect: np.ndarray, held: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Qini coefficient and AUUC of a ranking by estimated push effect (largest first: hold those first).

    The curve at k is the realised effect among the top k (mean y of pushed minus held) times k, the
    outcome holding those k would change; the random ranking is the straight line to the end point.

    Args:
        effect: estimated effect per row.
        held: bool per row (the randomised arm).
        y: outcome per row (churn 0/1, or spend).

    Returns:
        qini (area between the curve and the random line, per row), auuc (area under the curve, per row),
        and the realised overall effect.
    """
    order = np.argsort(-np.asarray(effect, dtype=float), kind="stable")
    h, yy = np.asarray(held, dtype=bool)[order], np.asarray(y, dtype=float)[order]
    n_h, n_p = np.cumsum(h), np.cumsum(~h)
    s_h, s_p = np.cumsum(np.where(h, yy, 0.0)), np.cumsum(np.where(h, 0.0, yy))
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.nan_to_num(s_p / n_p - s_h / n_h) * np.arange(1, h.size + 1)
    n = h.size
    line = curve[-1] * np.arange(1, n + 1) / n
    return {"qini": float((curve - line).mean() / n), "auuc": float(curve.mean() / n), "overall": float(curve[-1] / n)}


def decile_table(effect: np.ndarray, held: np.ndarray, churn: np.ndarray, true_effect=None, bins: int = 10):
    """Per decile of the estimated churn effect (1 = largest): mean estimate, realised effect, true effect.

    Returns:
        DataFrame decile, rows, held, estimated, realised (mean churn pushed - held), true (NaN without oracle).
    """
    e = np.asarray(effect, dtype=float)
    rank = pd.Series(-e).rank(method="first").to_numpy()
    dec = np.minimum((rank - 1) * bins // e.size, bins - 1).astype(int) + 1
    df = pd.DataFrame({"decile": dec, "est": e, "held": np.asarray(held, bool), "churn": np.asarray(churn, float)})
    df["true"] = np.nan if true_effect is None else np.asarray(true_effect, dtype=float)
    rows = []
    for d, g in df.groupby("decile"):
        p, h = g.loc[~g["held"], "churn"], g.loc[g["held"], "churn"]
        real = p.mean() - h.mean() if len(p) and len(h) else np.nan
        rows.append((d, len(g), int(g["held"].sum()), g["est"].mean(), real, g["true"].mean()))
    return pd.DataFrame(rows, columns=["decile", "rows", "held", "estimated", "realised", "true"])


def plot_deciles(table: pd.DataFrame, path: Path) -> Path:
    """Bar plot of the decile table (estimated, realised on the control groups, true) into `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x, w = table["decile"].to_numpy(), 0.27
    ax.bar(x - w, table["estimated"], w, label="estimated")
    ax.bar(x, table["realised"], w, label="realised (pushed - held)")
    if table["true"].notna().any():
        ax.bar(x + w, table["true"], w, label="true (oracle)")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("decile of the estimated push effect on churn (1 = pushing hurts most)")
    ax.set_ylabel("P(churn | pushed) - P(churn | held)")
    ax.set_xticks(x)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def oracle_contrast(oracle: pd.DataFrame | None, cutoff, user_ids) -> pd.DataFrame | None:
    """The oracle's churn / spend pushed and held at `cutoff`, aligned with `user_ids` (NaN where absent).

    Args:
        oracle: oracle.parquet rows (cutoff, user_id, label, p_oracle), or None.
        cutoff: the validation cutoff.
        user_ids: the rows to align to.

    Returns:
        DataFrame with the CONTRAST columns, or None when the oracle lacks them at this cutoff.
    """
    if oracle is None:
        return None
    o = oracle[oracle["label"].isin(CONTRAST) & (oracle["cutoff"] == pd.Timestamp(cutoff))]
    if o.empty:
        return None
    o = oracle[oracle["label"].isin(CONTRAST + HALVES) & (oracle["cutoff"] == pd.Timestamp(cutoff))]
    wide = o.pivot_table(index="user_id", columns="label", values="p_oracle", aggfunc="first")
    return wide.reindex(pd.Index(np.asarray(user_ids, dtype=str))).reindex(columns=list(CONTRAST + HALVES))


def compare_policies(est_churn, est_spend, truth: pd.DataFrame, p: PolicyConfig) -> dict[str, float]:
    """Expected churn and spend under the oracle: the advice, push-everyone, hold-everyone, the oracle's advice.

    Args:
        est_churn, est_spend: the estimated effects per user.
        truth: oracle_contrast() rows of the same users (rows with NaN are left out).
        p: the policy (the oracle's advice is the same rule on the true effects).

    The oracle's advice is chosen on one half of its replicas and every policy is judged on the other half:
    judged on the replicas it was chosen on, it would pick users for their replicas' luck (the winner's curse)
    and promise a reduction nobody, the oracle included, achieves. Spearman compares with all replicas.

    Returns:
        Flat metrics: <policy>_churn / _spend / _held_share, spearman_churn / _spend, the share of the oracle
        advice's churn reduction the advice achieves, and the advice's spend change against push-everyone.
    """
    from scipy.stats import spearmanr

    ok = truth.notna().all(axis=1).to_numpy()
    t = truth[ok]
    c, s = np.asarray(est_churn, float)[ok], np.asarray(est_spend, float)[ok]
    true_c = (t["churn_pushed"] - t["churn_held"]).to_numpy()
    true_s = (t["spend_pushed"] - t["spend_held"]).to_numpy()
    arms = [t[f"{k}_b"].to_numpy() for k in CONTRAST]
    chosen_on = {k: t[f"{k}_a"].to_numpy() for k in CONTRAST}
    oracle_hold = hold_mask(
        chosen_on["churn_pushed"] - chosen_on["churn_held"], chosen_on["spend_pushed"] - chosen_on["spend_held"], p
    )
    out: dict[str, float] = {"oracle_users": int(ok.sum())}
    for name, hold in (
        ("advice", hold_mask(c, s, p)),
        ("push_all", np.zeros(c.size, bool)),
        ("hold_all", np.ones(c.size, bool)),
        ("oracle_advice", oracle_hold),
    ):
        out.update({f"{name}_{k}": v for k, v in policy_outcomes(hold, *arms).items()})
    out["spearman_churn"] = float(spearmanr(c, true_c).statistic)
    out["spearman_spend"] = float(spearmanr(s, true_s).statistic)
    gain = out["push_all_churn"] - out["oracle_advice_churn"]
    out["share_of_oracle_churn_reduction"] = (out["push_all_churn"] - out["advice_churn"]) / gain if gain else np.nan
    base = out["push_all_spend"]
    out["spend_change_vs_push_all"] = out["advice_spend"] / base - 1.0 if base else np.nan
    return out
