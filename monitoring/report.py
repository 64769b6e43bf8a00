"""The monitor report: monitor.json, a few PNG plots and one self-contained HTML page beside them."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from siyu.config import Config

COLORS = {"ok": "#2e7d32", "watch": "#ef6c00", "alert": "#c62828"}


def _clean(v):
    """JSON-safe: NaN and infinities become null (monitor.json is read by schedulers, not only Python)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def _plots(report: dict, out: Path, cfg: Config) -> list[str]:
    from training.evaluate import _figure

    plt = _figure()
    files = []
    feats = sorted(report["drift"]["features"].items(), key=lambda kv: -(kv[1]["psi"] or 0))[: cfg.monitoring.plot_top]
    if feats:
        fig, ax = plt.subplots(figsize=(8, 0.3 * len(feats) + 1.4))
        names = [k for k, _ in feats][::-1]
        vals = [v["psi"] or 0 for _, v in feats][::-1]
        ax.barh(names, vals, color=[COLORS[v["status"]] for _, v in feats][::-1])
        for lvl in ("watch", "alert"):
            ax.axvline(getattr(cfg.monitoring.psi, lvl), color=COLORS[lvl], ls=":", lw=1)
        ax.set(xlabel="PSI (old -> new)", title="Feature drift: largest PSI")
        ax.tick_params(axis="y", labelsize=8)
        fig.tight_layout(), fig.savefig(out / "drift_features.png", dpi=90), plt.close(fig)
        files.append("drift_features.png")
    mix = report["drift"]["tiers"]["mix"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    xs = range(len(mix))
    ax.bar([x - 0.2 for x in xs], [m["old"] for m in mix.values()], 0.4, label=report["old"]["asof"][:10])
    ax.bar([x + 0.2 for x in xs], [m["new"] for m in mix.values()], 0.4, label=report["new"]["asof"][:10])
    ax.set_xticks(list(xs), list(mix), fontsize=8)
    ax.set(ylabel="share of users", title=f"Tier mix (PSI {report['drift']['tiers']['psi']:.3f})")
    ax.legend(fontsize=8)
    fig.tight_layout(), fig.savefig(out / "tier_mix.png", dpi=90), plt.close(fig)
    files.append("tier_mix.png")
    graded = {k: v for k, v in report["realised"].items() if isinstance(v, dict) and v.get("calibration")}
    if graded:
        fig, ax = plt.subplots(figsize=(5.5, 5))
        for lab, m in graded.items():
            cal = m["calibration"]
            ax.plot([c["mean_predicted"] for c in cal], [c["observed"] for c in cal], "o-", label=lab)
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlabel="mean predicted", ylabel="observed rate", title="Realised calibration (old snapshot)")
        ax.legend(fontsize=8)
        fig.tight_layout(), fig.savefig(out / "calibration.png", dpi=90), plt.close(fig)
        files.append("calibration.png")
    return files


def _table(rows: list[list], head: list[str]) -> str:
    def cell(v):
        if isinstance(v, float):
            v = f"{v:.4f}"
        s = html.escape("" if v is None else str(v))
        return f'<td style="color:{COLORS[s]}"><b>{s}</b></td>' if s in COLORS else f"<td>{s}</td>"

    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table><tr>{th}</tr>" + "".join("<tr>" + "".join(map(cell, r)) + "</tr>" for r in rows) + "</table>"


def _html(report: dict, images: list[str]) -> str:
    d, r = report["drift"], report["realised"]
    parts = [
        f"<h1>siyu monitor: <span style='color:{COLORS[report['status']]}'>{report['status']}</span></h1>",
        f"<p>old {html.escape(report['old']['asof'])} ({report['old']['users']:,} users, models "
        f"{html.escape(str(report['old']['versions']))}) &rarr; new {html.escape(report['new']['asof'])} "
        f"({report['new']['users']:,} users, models {html.escape(str(report['new']['versions']))})</p>",
        "<ul>" + "".join(f"<li>{html.escape(a)}</li>" for a in report["alerts"] + report["watch"]) + "</ul>",
        "<h2>Scores</h2>",
        _table(
            [[k, v["psi"], v["ks"], v["mean_old"], v["mean_new"], v["status"]] for k, v in d["scores"].items()],
            ["score", "PSI", "KS", "mean old", "mean new", "status"],
        ),
        "<h2>Users and tiers</h2>",
        _table([[k, v] for k, v in d["users"].items()], ["users", "value"]),
        _table([[t, m["old"], m["new"]] for t, m in d["tiers"]["mix"].items()], ["tier", "old share", "new share"]),
        "<h3>Transitions (row: old tier, share of its users)</h3>",
        _table(
            [[a, *(f"{b} {s:.1%}" for b, s in row.items())] for a, row in d["tiers"]["transitions"].items()],
            ["from", "to ..."],
        ),
        "<h2>Realised outcomes of the old snapshot</h2>",
        f"<p>{html.escape(r['message'])}</p>",
    ]
    graded = {k: v for k, v in r.items() if isinstance(v, dict)}
    if graded:
        keys = [k for k in next(iter(graded.values())) if k != "calibration"]
        parts.append(_table([[lab, *(m.get(k) for k in keys)] for lab, m in graded.items()], ["label", *keys]))
    sections = (("Expected (CBPE), old", report["estimate"]), ("Expected, new snapshot", report["estimate_new"]))
    for title, est in sections:
        if est:
            keys = list(next(iter(est.values())))
            parts += [
                f"<h2>{title}</h2>",
                _table([[lab, *(e.get(k) for k in keys)] for lab, e in est.items()], ["label", *keys]),
            ]
    parts += [f'<p><img src="{html.escape(f)}"></p>' for f in images]
    parts += [
        "<h2>Features</h2>",
        _table(
            [
                [k, v["psi"], v["ks"], v["missing_old"], v["missing_new"], v["mean_old"], v["mean_new"], v["status"]]
                for k, v in sorted(d["features"].items(), key=lambda kv: -(kv[1]["psi"] or 0))
            ],
            ["feature", "PSI", "KS", "missing old", "missing new", "mean old", "mean new", "status"],
        ),
    ]
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>siyu monitor</title><style>{style}</style>"
        f"</head><body>{''.join(parts)}</body></html>"
    )


def write_report(report: dict, out: Path, cfg: Config, plots: bool = True) -> None:
    """Write monitor.json (and, with `plots`, the PNGs and monitor.html) into `out` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "monitor.json").write_text(json.dumps(_clean(report), indent=1, allow_nan=False))
    if plots:
        images = _plots(report, out, cfg)
        (out / "monitor.html").write_text(_html(_clean(report), images), encoding="utf-8")


def print_summary(result, console) -> None:
    """What `siyu monitor` prints: status, the flagged measures, realised and expected AUCs, where."""
    rep = result.report
    console.print(
        f"monitor {rep['old']['asof'][:10]} -> {rep['new']['asof'][:10]}: {result.status} "
        f"({len(result.alerts)} alert, {len(result.watch)} watch) in {result.seconds:.1f} s",
        highlight=False,
    )
    for line in result.alerts[:15]:
        console.print(f"  alert  {line}", highlight=False)
    for line in result.watch[:10]:
        console.print(f"  watch  {line}", highlight=False)
    console.print(f"  realised: {rep['realised']['message']}", highlight=False)
    for lab, e in rep["estimate"].items():
        real = rep["realised"].get(lab, {}).get("roc_auc") if isinstance(rep["realised"].get(lab), dict) else None
        console.print(
            f"  {lab}: expected AUC {e['roc_auc']:.3f}" + (f", realised {real:.3f}" if real else ""), highlight=False
        )
    console.print(f"  wrote {result.out / 'monitor.json'}, {result.out / 'monitor.html'}", highlight=False)
