"""Console summary of a training: per label the model against baselines and oracle, and the gate."""

from __future__ import annotations

from training.train import TrainResult


def print_train_result(result: TrainResult, console) -> None:
    """Print a TrainResult as a table plus loud warnings (rich Console)."""
    from rich.table import Table

    table = Table(title=f"training (validation cutoff {result.cutoffs[-1]:%Y-%m-%d}, rows {result.rows})")
    for col in ("label", "scorer", "folds AUC", "ROC AUC [95% CI]", "PR AUC [95% CI]", "Brier", "note"):
        table.add_column(col)
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    ci = lambda m, k: f"{m[k]:.4f} [{m[k + '_lo']:.3f}, {m[k + '_hi']:.3f}]" if f"{k}_lo" in m else f(m.get(k))  # noqa: E731
    for r in result.labels.values():
        if not r.trained:
            table.add_row(r.label, "-", "-", "-", "-", "-", r.message)
            continue
        g, s = r.gate, r.selection
        cv = lambda k, s=s: f(s.mean_auc.get(k)) if s and k in s.mean_auc else "-"  # noqa: E731
        note = f"v{r.version} ({r.scorer}) {'champion' if g.promoted else 'challenger'}: {g.reason}"
        tuned = f"; {s.trials} trials" if s and s.trials else ""
        table.add_row(
            r.label,
            f"chosen: {s.chosen if s else '-'}",
            cv(s.chosen if s else ""),
            ci(r.metrics, "roc_auc"),
            ci(r.metrics, "pr_auc"),
            f(r.metrics["brier"]),
            note + tuned,
        )
        for b, m in r.baselines.items():
            lo, hi = r.versus.get(b, (float("nan"), float("nan")))
            table.add_row(
                "",
                b,
                cv(b),
                ci(m, "roc_auc"),
                ci(m, "pr_auc"),
                f(m.get("brier")),
                f"model - {b}: [{lo:+.4f}, {hi:+.4f}]",
            )
        for k in sorted(set(s.mean_auc) - {s.chosen, *r.baselines}) if s else ():
            table.add_row("", f"({k})", cv(k), "-", "-", "-", "fold candidate")
        if r.oracle:
            o = r.oracle
            table.add_row(
                "",
                "oracle",
                "-",
                f"{o['oracle_roc_auc']:.4f} [{o['oracle_roc_auc_lo']:.3f}, {o['oracle_roc_auc_hi']:.3f}]",
                f"{o['oracle_pr_auc']:.4f} [{o['oracle_pr_auc_lo']:.3f}, {o['oracle_pr_auc_hi']:.3f}]",
                f(o["oracle_brier"]),
                f"model/oracle AUC {o['auc_ratio_to_oracle']:.3f} on {o['oracle_users']} users",
            )
    console.print(table)
    from training.ltv_report import print_ltv

    print_ltv(result.ltv, console)
    push = getattr(result, "push_effect", None)
    if push is not None:
        console.print(f"[bold]push effect[/bold] {push.message}", highlight=False, soft_wrap=True)
        m = push.metrics
        if "oracle_advice_churn" in m:
            console.print(
                f"  expected churn under the oracle: advice {m['oracle_advice_churn']:.4f}, push everyone "
                f"{m['oracle_push_all_churn']:.4f}, hold everyone {m['oracle_hold_all_churn']:.4f}, oracle's advice "
                f"{m['oracle_oracle_advice_churn']:.4f} ({m['oracle_share_of_oracle_churn_reduction']:.0%} of its "
                f"reduction; spend {m['oracle_spend_change_vs_push_all']:+.2%}); Spearman with the true effect "
                f"{m['oracle_spearman_churn']:.3f}",
                highlight=False,
                soft_wrap=True,
            )
    for n in result.notes:
        console.print(f"[bold]NOTE[/bold] {n}", highlight=False, soft_wrap=True)
    for w in result.warnings():
        console.print(f"[bold red]WARNING[/bold red] {w}", highlight=False, soft_wrap=True)
    console.print(
        f"MLflow: {result.tracking_uri} experiment '{result.experiment}' run {result.parent_run_id}",
        highlight=False,
        soft_wrap=True,
    )
