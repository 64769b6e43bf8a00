"""Console summary of a training: per label the model against baselines and oracle, and the gate."""

from __future__ import annotations

from training.train import TrainResult


def print_train_result(result: TrainResult, console) -> None:
    """Print a TrainResult as a table plus loud warnings (rich Console)."""
    from rich.table import Table

    table = Table(title=f"training (validation cutoff {result.cutoffs[-1]:%Y-%m-%d}, rows {result.rows})")
    for col in ("label", "scorer", "ROC AUC", "PR AUC", "Brier", "note"):
        table.add_column(col)
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for r in result.labels.values():
        if not r.trained:
            table.add_row(r.label, "-", "-", "-", "-", r.message)
            continue
        g = r.gate
        note = f"v{r.version} {'champion' if g.promoted else 'challenger'}: {g.reason}"
        table.add_row(r.label, "model", f(r.metrics["roc_auc"]), f(r.metrics["pr_auc"]), f(r.metrics["brier"]), note)
        for b, m in r.baselines.items():
            table.add_row("", b, f(m["roc_auc"]), f(m["pr_auc"]), f(m.get("brier")), "")
        if r.oracle:
            o = r.oracle
            table.add_row(
                "",
                "oracle",
                f(o["oracle_roc_auc"]),
                f(o["oracle_pr_auc"]),
                f(o["oracle_brier"]),
                f"model/oracle AUC {o['auc_ratio_to_oracle']:.3f} on {o['oracle_users']} users",
            )
    console.print(table)
    for n in result.notes:
        console.print(f"[bold]NOTE[/bold] {n}", highlight=False, soft_wrap=True)
    for w in result.warnings():
        console.print(f"[bold red]WARNING[/bold red] {w}", highlight=False, soft_wrap=True)
    console.print(
        f"MLflow: {result.tracking_uri} experiment '{result.experiment}' run {result.parent_run_id}",
        highlight=False,
        soft_wrap=True,
    )
