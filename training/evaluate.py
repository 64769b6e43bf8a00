"""Model metrics (ranking, calibration, lift) and the plots logged beside them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

_EPS = 1e-7


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(np.sum(y)) < len(y)


def ranking_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC AUC and PR AUC (average precision); NaN when only one class is present."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y, dtype=int)
    if not _both_classes(y):
        return {"roc_auc": float("nan"), "pr_auc": float("nan")}
    return {"roc_auc": float(roc_auc_score(y, p)), "pr_auc": float(average_precision_score(y, p))}


def probability_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Log loss and Brier score of probabilities."""
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    log_loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    return {"log_loss": float(log_loss), "brier": float(np.mean((p - y) ** 2))}


def lift_metrics(y: np.ndarray, p: np.ndarray, fractions: Sequence[float]) -> dict[str, float]:
    """Lift and catch rate (share of all positives found) in the top fraction by score.

    Args:
        y: 0/1 outcomes.
        p: scores.
        fractions: e.g. (0.05, 0.1, 0.2).

    Returns:
        {"lift_top5": .., "catch_top5": .., ...}, keys use whole percents.
    """
    y = np.asarray(y, dtype=float)
    # Stable sort on -p: ties keep input order, so the numbers are reproducible.
    order = np.argsort(-np.asarray(p, dtype=float), kind="stable")
    base, total = y.mean() if len(y) else 0.0, y.sum()
    out = {}
    for f in fractions:
        k = max(1, int(round(f * len(y))))
        hits = y[order[:k]].sum()
        tag = f"top{round(f * 100):d}"
        out[f"lift_{tag}"] = float(hits / k / base) if base > 0 else float("nan")
        out[f"catch_{tag}"] = float(hits / total) if total > 0 else float("nan")
    return out


def per_tier_auc(y: np.ndarray, p: np.ndarray, tiers: np.ndarray) -> dict[str, float]:
    """ROC AUC within each tier that has both classes."""
    y, p, tiers = np.asarray(y), np.asarray(p), np.asarray(tiers)
    out = {}
    for t in sorted(set(tiers.tolist())):
        m = tiers == t
        if _both_classes(y[m]):
            out[f"auc_tier_{t}"] = ranking_metrics(y[m], p[m])["roc_auc"]
    return out


def all_metrics(y, p, fractions: Sequence[float], tiers=None) -> dict[str, float]:
    """Every headline metric of one set of probabilities (tiers: add per-tier AUC)."""
    out = {**ranking_metrics(y, p), **probability_metrics(y, p), **lift_metrics(y, p, fractions)}
    if tiers is not None:
        out.update(per_tier_auc(y, p, tiers))
    return out


def reliability(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Reliability curve on quantile bins: (mean predicted, observed rate) per bin."""
    from sklearn.calibration import calibration_curve

    frac, mean_pred = calibration_curve(y, p, n_bins=n_bins, strategy="quantile")
    return mean_pred, frac


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # headless; the training run never opens a window
    import matplotlib.pyplot as plt

    return plt


def plot_roc_pr(y: np.ndarray, scores: dict[str, np.ndarray], title: str, path: Path) -> None:
    """ROC and PR curves of several scorers (model, baselines, oracle) side by side."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _figure()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s)
        prec, rec, _ = precision_recall_curve(y, s)
        m = ranking_metrics(y, s)
        a1.plot(fpr, tpr, label=f"{name} (AUC {m['roc_auc']:.3f})")
        a2.plot(rec, prec, label=f"{name} (AP {m['pr_auc']:.3f})")
    a1.plot([0, 1], [0, 1], "k:", lw=0.8)
    a1.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: ROC")
    a2.axhline(float(np.mean(y)), color="k", ls=":", lw=0.8)
    a2.set(xlabel="recall", ylabel="precision", title=f"{title}: precision-recall")
    a1.legend(fontsize=8), a2.legend(fontsize=8)
    fig.tight_layout(), fig.savefig(path, dpi=90), plt.close(fig)


def plot_calibration(y: np.ndarray, before: np.ndarray, after: np.ndarray, title: str, path: Path) -> None:
    """Reliability curves of raw and calibrated probabilities."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, p in (("raw", before), ("calibrated", after)):
        x, f = reliability(y, p)
        pm = probability_metrics(y, p)
        ax.plot(x, f, "o-", label=f"{name} (Brier {pm['brier']:.4f}, log loss {pm['log_loss']:.4f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title=f"{title}: reliability")
    ax.legend(fontsize=8)
    fig.tight_layout(), fig.savefig(path, dpi=90), plt.close(fig)


def plot_bars(values: dict[str, float], title: str, xlabel: str, path: Path, top: int = 25) -> None:
    """Horizontal bar chart of the largest values (feature importance, mean |SHAP|)."""
    plt = _figure()
    items = sorted(values.items(), key=lambda kv: kv[1], reverse=True)[:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set(xlabel=xlabel, title=title)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout(), fig.savefig(path, dpi=90), plt.close(fig)


def shap_summary(contrib: np.ndarray, X: np.ndarray, names: Sequence[str]):
    """Global drivers from LightGBM pred_contrib: mean |contribution| and its direction per feature.

    Args:
        contrib: n x (features + 1) contributions (last column is the bias).
        X: the n x features inputs they explain.
        names: feature names.

    Returns:
        DataFrame (feature, mean_abs_shap, corr_with_value) sorted by mean_abs_shap.
    """
    import pandas as pd

    c = contrib[:, :-1]
    rows = []
    for j, name in enumerate(names):
        x, s = X[:, j], c[:, j]
        ok = ~np.isnan(x)
        corr = (
            float(np.corrcoef(x[ok], s[ok])[0, 1]) if ok.sum() > 2 and np.std(x[ok]) > 0 and np.std(s[ok]) > 0 else 0.0
        )
        rows.append((name, float(np.mean(np.abs(s))), corr))
    df = pd.DataFrame(rows, columns=["feature", "mean_abs_shap", "corr_with_value"])
    return df.sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(drop=True)


def write_label_artifacts(
    folder: Path,
    label: str,
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    raw: np.ndarray,
    booster,
    X_explain: np.ndarray,
    names: Sequence[str],
) -> None:
    """Write a label's plots and tables into `folder` (the run logs the folder).

    Args:
        folder: destination (exists).
        label: for titles.
        y: validation outcomes.
        scores: scorer name -> validation scores; "model" is the calibrated model.
        raw: the model's uncalibrated validation probabilities.
        booster: the chosen scorer: a LightGBM booster (importance, pred_contrib) or a candidate (pred_contrib).
        X_explain: a sample of validation rows to explain.
        names: feature names.
    """
    import pandas as pd

    folder = Path(folder)
    ok = {k: v for k, v in scores.items() if v is not None and not np.isnan(v).any()}
    plot_roc_pr(y, ok, label, folder / f"{label}_roc_pr.png")
    plot_calibration(y, raw, scores["model"], label, folder / f"{label}_calibration.png")
    pd.DataFrame(dict(zip(("mean_predicted", "observed"), reliability(y, scores["model"])))).to_csv(
        folder / f"{label}_reliability.csv", index=False
    )
    contrib = booster.predict(X_explain, pred_contrib=True)
    # LightGBM's importance: the chosen booster, or the one inside a blend; others have contributions only.
    members = [getattr(m, "booster", m) for m, _ in getattr(booster, "members", [])]
    booster = next((b for b in (booster, *members) if hasattr(b, "feature_importance")), None)
    if booster is not None:
        gain = booster.feature_importance(importance_type="gain")
        split = booster.feature_importance(importance_type="split")
        imp = pd.DataFrame({"feature": list(names), "gain": gain, "split": split})
        imp = imp.sort_values("gain", ascending=False)
        imp.to_csv(folder / f"{label}_feature_importance.csv", index=False)
        plot_bars(
            dict(zip(imp.feature, imp.gain)),
            f"{label}: feature importance",
            "total gain",
            folder / f"{label}_feature_importance.png",
        )
    shap = shap_summary(contrib, X_explain, names)
    shap.to_csv(folder / f"{label}_shap_summary.csv", index=False)
    plot_bars(
        dict(zip(shap.feature, shap.mean_abs_shap)),
        f"{label}: SHAP summary (pred_contrib)",
        "mean |contribution| (log-odds)",
        folder / f"{label}_shap_summary.png",
    )
