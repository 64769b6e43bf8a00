"""The LTV results table: the model, each baseline and the oracle on the same validation rows."""

from __future__ import annotations

from training.ltv_train import LtvResult

COLUMNS = ("scorer", "Gini [95% CI]", "Spearman", "top-10% share", "MAE", "predicted / realised", "note")


def table_rows(res: LtvResult) -> list[tuple[str, ...]]:
    """One row per scorer (model, its parts, baselines, oracle) as formatted strings."""
    out = []
    for name, m in res.metrics.items():
        ci = f" [{m['gini_lo']:.3f}, {m['gini_hi']:.3f}]" if "gini_lo" in m else ""
        note = ""
        if name in res.versus:
            lo, hi = res.versus[name]
            note = f"model - {name}: [{lo:+.4f}, {hi:+.4f}]"
        elif name == "model":
            note = f"chosen on the folds: {res.chosen}; {res.trials} trials"
            if res.gate is not None:
                what = "" if res.scorer == "lightgbm" else f" = {res.scorer}, serving in its place,"
                note += f"; v{res.version}{what} {'champion' if res.gate.promoted else 'challenger'}"
        elif name == "oracle" and res.oracle:
            note = f"model / oracle Gini {res.oracle['gini_ratio_to_oracle']:.3f} on {res.oracle['oracle_users']} users"
        elif name.startswith("model_"):
            note = f"the {name[6:]} part alone, against realised {name[6:]} value"
        out.append(
            (
                name,
                f"{m['gini']:.4f}{ci}",
                f"{m['spearman']:.4f}",
                f"{m['top10_share']:.3f}",
                f"{m['mae']:.1f}",
                f"{m['total_ratio']:.3f}",
                note,
            )
        )
    return out


def title(res: LtvResult) -> str:
    """Caption: validation cutoff, horizon, rows and whether referral value is modelled."""
    what = "ltv = own + referral" if res.referral else "ltv = own only (no advocacy events: ltv_referral missing)"
    cut = f"{res.cutoffs[-1]:%Y-%m-%d}" if res.cutoffs else "-"
    unseen = f"; judged on users unseen by their model ({res.cross_fit_groups} groups)" if res.cross_fit_groups else ""
    return f"ltv (validation cutoff {cut}, rows {res.rows}; {what}{unseen})"


def print_ltv(res: LtvResult | None, console) -> None:
    """Print the LTV table (or why it was skipped) with rich."""
    from rich.table import Table

    if res is None:
        return
    if not res.trained:
        console.print(f"ltv: {res.message}", highlight=False)
        return
    table = Table(title=title(res))
    for c in COLUMNS:
        table.add_column(c)
    for row in table_rows(res):
        table.add_row(*row)
    console.print(table)
    if res.gate is not None:
        console.print(f"ltv gate: {res.gate.reason}", highlight=False, soft_wrap=True)


def markdown(res: LtvResult) -> str:
    """The LTV table as Markdown."""
    lines = [f"**{title(res)}**", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(res)]
    return "\n".join(lines)
