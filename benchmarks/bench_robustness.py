"""Robustness suite: the built-in world on several seeds and brand-like variants, trained and judged in one table.

    .venv/bin/python benchmarks/bench_robustness.py                       # 5 seeds + 4 variants, ~15 min
    .venv/bin/python benchmarks/bench_robustness.py --worlds seed11 rare_purchase_90 --users 4000

Each world is a config overlay on mlproject.yaml (WORLDS below; every world derives its feature
windows with `windows.feature_windows: auto`), simulated with a small oracle, trained with
`training.train.train_all` into its own throwaway MLflow store, and judged per label: the model
(ROC AUC with a 95% CI, PR AUC, Brier), each baseline's ROC AUC, the oracle's, model / oracle,
and which candidate became champion. Writes benchmarks/results/<date>-robustness.json and .md,
prints one JSON line per (world, label) for benchmarks/run.py.

`bgnbd_retail` is not the built-in world at all: a textbook BG/NBD order log (benchmarks/bgnbd_world.py)
whose oracle is the BG/NBD posterior of each history under the true parameters. `cdnow_real` is not
simulated: it is CDNOW's real order log (benchmarks/real_logs.py, downloaded once from PyPI), judged
against the baselines only, as a real log has no oracle.

The purchases-only world writes purchases and refunds only (`simulation.export: orders`, what a shop's
order table gives); its oracle still knows the hidden state but scores the labels as that log defines
them (tiers from orders alone, churn = no order in the horizon).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

AUTO = {"windows": {"feature_windows": "auto"}}
RARE = {"purchase_logit": [-10.4, 3.0, 2.5, 0.8], "visit_rate": 0.01, "like_rate": 0.005, "group_message_rate": 0.01,
        "pushes_per_week": {"official_account": 1.0, "wecom": 0.5, "group": 1.0}, "need_recovery": 0.008}  # fmt: skip
WORLDS: dict[str, dict] = {
    **{f"seed{s}": {"seed": s} for s in (1, 7, 11, 23, 42)},
    # a shop's order export: purchases and refunds only, slow buyers judged over a quarter
    "purchases_only_90": {
        "seed": 5,
        "cfg": {"windows": {"period_days": 90, "horizon_days": 90}, "simulation": {"export": "orders"}},
    },  # fmt: skip
    # low engagement, rare purchases, P = H = 90
    "rare_purchase_90": {"seed": 6, "cfg": {"windows": {"period_days": 90, "horizon_days": 90}, "simulation": RARE}},
    # campaign-driven brand: frequent campaigns, many coupon hunters
    "campaign_hunters": {
        "seed": 8,
        "cfg": {
            "simulation": {
                "campaign_day_rate": 0.2,
                "hunter_share_public": 0.3,
                "hunter_share_campaign": 0.6,
                "coupon_claim_other": 0.5,
            }
        },
    },  # fmt: skip
    # subscription-like: daily activity, monthly purchases, P = H = 30
    "subscription_daily": {
        "seed": 9,
        "cfg": {
            "windows": {"period_days": 30, "horizon_days": 30},
            "simulation": {
                "visit_rate": 0.35,
                "like_rate": 0.1,
                "purchase_logit": [-8.0, 3.0, 2.5, 0.4],
                "need_recovery": 0.06,
                "need_satiation": 0.9,
            },
        },
    },  # fmt: skip
    # a shop's order export from a textbook BG/NBD + Gamma-Gamma process (CDNOW's estimates), not the built-in
    # world: three customers for every user of the others (an order log is sparse), P = H = 90
    "bgnbd_retail": {
        "seed": 12,
        "generator": "bgnbd",
        "users_scale": 3,
        "cfg": {"windows": {"period_days": 90, "horizon_days": 90}},
    },  # fmt: skip
    # a real shop's order log (benchmarks/real_logs.py): CDNOW's 1997 cohort over 18 months, no oracle
    "cdnow_real": {"generator": "cdnow", "cfg": {"windows": {"period_days": 90, "horizon_days": 90}}},
}


def merged(base: dict, over: dict) -> dict:
    """`base` with `over` merged in, key by key (nested mappings merged, everything else replaced)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def world_config(spec: dict, home: Path | None = None):
    """The project config with the world's overlay (and auto windows); `home`: its local state (MLflow store)."""
    from siyu.config import Config, load_config

    cfg = load_config()
    data = merged(merged(cfg.model_dump(mode="json"), AUTO), spec.get("cfg", {}))
    data["serving"]["api_token"] = None  # a secret: never dumped, only read from the environment
    if home is not None:  # the world's own store: SIYU_HOME is read when the config loads, not later
        data["runtime"]["home"] = str(home)
    return Config.model_validate(data).model_copy(update={"source": cfg.source})


def simulate(name: str, spec: dict, cfg, users: int, days: int, replicas: int, folder: Path) -> tuple[Path, int]:
    """Simulate (or, for a real log, write) the world into `folder`; returns (events path, days of the log)."""
    from simulation.simulator import simulate_world

    if spec.get("generator") == "cdnow":
        from real_logs import write_cdnow

        return write_cdnow(folder)
    if spec.get("generator") == "bgnbd":
        from bgnbd_world import simulate as simulate_bgnbd

        w = cfg.windows
        args = (users, days, spec["seed"], folder, w.horizon_days, w.period_days, cfg.ltv.horizon_days)
        return simulate_bgnbd(*args), days
    sim_cfg = cfg.model_copy(update={"windows": cfg.windows.model_copy(update={"feature_windows": (7, 30, 90)})})
    simulate_world(sim_cfg, users, days, seed=spec["seed"], out_dir=folder, replicas=replicas)
    return folder / "events.parquet", days


def auc_ci(auc: float, pos: int, neg: int) -> tuple[float, float]:
    """95% CI of a ROC AUC (Hanley & McNeil 1982 standard error) from the class counts."""
    if not (pos and neg) or math.isnan(auc):
        return (float("nan"), float("nan"))
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    se = math.sqrt((auc * (1 - auc) + (pos - 1) * (q1 - auc * auc) + (neg - 1) * (q2 - auc * auc)) / (pos * neg))
    return (auc - 1.96 * se, auc + 1.96 * se)


def rows_of(name: str, res, windows) -> list[dict]:
    """One row per label of a TrainResult."""
    out = []
    for lab, r in res.labels.items():
        row = {"world": name, "label": lab, "windows": list(windows)}
        if not r.trained:
            out.append({**row, "skipped": r.message})
            continue
        m, pos, neg = r.metrics, r.counts.get("validation_pos", 0), r.counts.get("validation_neg", 0)
        lo, hi = (m["roc_auc_lo"], m["roc_auc_hi"]) if "roc_auc_lo" in m else auc_ci(m["roc_auc"], pos, neg)
        o = r.oracle or {}
        best_base = max((b["roc_auc"] for b in r.baselines.values()), default=float("nan"))
        champion = getattr(r, "scorer", None) or "lightgbm"  # what serves: the chosen candidate or the best baseline
        out.append(
            {
                **row,
                "val_pos": pos,
                "val_neg": neg,
                "model_roc_auc": m["roc_auc"],
                "model_roc_auc_ci": [lo, hi],
                "model_pr_auc": m["pr_auc"],
                "model_brier": m.get("brier"),
                **{f"{b}_roc_auc": v["roc_auc"] for b, v in r.baselines.items()},
                "oracle_roc_auc": o.get("oracle_roc_auc"),
                "ratio_to_oracle": o.get("auc_ratio_to_oracle"),
                "champion": champion,
                "promoted": bool(r.gate and r.gate.promoted),
                "beats_baselines": bool(m["roc_auc"] > best_base),
                # a baseline that serves scores as that baseline
                "served_roc_auc": r.baselines[champion]["roc_auc"] if champion in r.baselines else m["roc_auc"],
            }
        )
    return out


def ltv_row(name: str, ltv) -> dict:
    """The LTV label's row: Gini of the model (cross-fitted), of each baseline and of the oracle (#16)."""
    if ltv is None or not ltv.trained:
        return {"world": name, "label": "ltv", "skipped": getattr(ltv, "message", "no LTV result")}
    from training.ltv_baselines import BASELINES

    m, o = ltv.metrics, ltv.oracle or {}
    bases = {b: m[b]["gini"] for b in BASELINES if b in m}
    # what serves: the model, or (no model beat the baselines) BG/NBD + Gamma-Gamma in its place
    lost = "champion unchanged" if ltv.scorer == "lightgbm" else ltv.scorer
    served = "lightgbm" if ltv.beats_baselines else f"{lost} (folds chose {ltv.chosen}; no model beat the baselines)"
    return {
        "world": name,
        "label": "ltv",
        "referral": ltv.referral,
        "model_gini": m["model"]["gini"],
        "model_gini_ci": [m["model"]["gini_lo"], m["model"]["gini_hi"]],
        **{f"{b}_gini": g for b, g in bases.items()},
        "oracle_gini": o.get("oracle_gini"),
        "ratio_to_oracle": o.get("gini_ratio_to_oracle"),
        "champion": served,
        "margin_over_best_baseline": m["model"]["gini"] - max(bases.values(), default=float("nan")),
    }


def run_world(name: str, spec: dict, users: int, days: int, replicas: int) -> list[dict]:
    """Simulate, train and judge one world in a throwaway folder and MLflow store."""
    from features.windows import auto_windows
    from training.train import train_all

    with tempfile.TemporaryDirectory(prefix=f"siyu-rob-{name}-") as d:
        cfg = world_config(spec, Path(d) / "home")
        t0 = time.perf_counter()
        users = users * spec.get("users_scale", 1)
        events, days = simulate(name, spec, cfg, users, days, replicas, Path(d) / "world")
        t1 = time.perf_counter()
        res = train_all(events, cfg, experiment=f"robustness-{name}")
        t2 = time.perf_counter()
    w = cfg.windows
    windows = auto_windows(w.period_days, w.horizon_days, days + 1 - w.horizon_days)
    rows = [*rows_of(name, res, windows), ltv_row(name, res.ltv)]
    for r in rows:
        r.update(simulate_s=round(t1 - t0, 1), train_s=round(t2 - t1, 1), P=w.period_days, H=w.horizon_days)
    return rows


def _f(v, nd: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def markdown(rows: list[dict], meta: dict) -> str:
    """The one table (and the goals' verdict) as Markdown."""
    bases = sorted(
        {k[: -len("_roc_auc")] for r in rows for k in r if k.endswith("_roc_auc")} - {"model", "oracle", "served"}
    )
    head = ["world", "P/H", "label", "model ROC AUC [95% CI]", "PR AUC", "Brier", *bases, "served", "oracle",
            "model/oracle", "champion"]  # fmt: skip
    lines = [f"# Robustness suite — {date.today()}", "", ", ".join(f"{k} {v}" for k, v in meta.items()), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    ltv = [r for r in rows if r["label"] == "ltv"]
    rows = [r for r in rows if r["label"] != "ltv"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['world']} | | {r['label']} | skipped: {r['skipped'][:80]} |" + " |" * (len(head) - 4))
            continue
        lo, hi = r["model_roc_auc_ci"]
        cells = [r["world"], f"{r['P']}/{r['H']}", r["label"], f"{_f(r['model_roc_auc'])} [{_f(lo)}, {_f(hi)}]",
                 _f(r["model_pr_auc"]), _f(r["model_brier"]), *(_f(r.get(f"{b}_roc_auc")) for b in bases),
                 _f(r.get("served_roc_auc")), _f(r["oracle_roc_auc"]), _f(r["ratio_to_oracle"]),
                 r["champion"]]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    ratios = sorted(r["ratio_to_oracle"] for r in rows if r.get("ratio_to_oracle") is not None)
    done = [r for r in rows if "skipped" not in r]
    lost = [
        f"{r['world']}/{r['label']}"
        for r in done  # older JSON has no served_roc_auc
        if r.get("served_roc_auc", r["model_roc_auc"]) < max(r.get(f"{b}_roc_auc") or 0.0 for b in bases)
    ]
    served = [f"{r['world']}/{r['label']} ({r['champion']})" for r in done if not r["beats_baselines"]]
    verdict = (f"champion below a baseline on ROC AUC: {', '.join(lost) or 'none'}; "
               f"a baseline serves (no model beat them beyond noise): {', '.join(served) or 'none'}")  # fmt: skip
    if ratios:
        med = ratios[len(ratios) // 2] if len(ratios) % 2 else sum(ratios[len(ratios) // 2 - 1 :][:2]) / 2
        verdict = f"model/oracle: min {ratios[0]:.3f} (goal >= 0.95), median {med:.3f} (goal >= 0.97); " + verdict
    lines += ["", verdict] if done else []
    return "\n".join(lines + ltv_markdown(ltv)) + "\n"


def ltv_markdown(rows: list[dict]) -> list[str]:
    """The LTV table: Gini against each baseline and the oracle (#16: >= 0.95 x oracle, >= baselines + 0.02)."""
    if not rows:
        return []
    bases = sorted({k[: -len("_gini")] for r in rows for k in r if k.endswith("_gini")} - {"model", "oracle"})
    head = ["world", "value", "model Gini [95% CI]", *bases, "oracle", "model/oracle", "margin", "champion"]
    out = ["", "LTV (ltv.horizon_days; model cross-fitted, judged on users it did not see):", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for r in rows:
        if "skipped" in r:
            out.append(f"| {r['world']} | skipped: {r['skipped'][:80]} |" + " |" * (len(head) - 2))
            continue
        lo, hi = r["model_gini_ci"]
        value = "own + referral" if r["referral"] else "own"
        cells = [r["world"], value, f"{_f(r['model_gini'])} [{_f(lo)}, {_f(hi)}]",
                 *(_f(r.get(f"{b}_gini")) for b in bases), _f(r["oracle_gini"]), _f(r["ratio_to_oracle"]),
                 _f(r["margin_over_best_baseline"]), r["champion"]]  # fmt: skip
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", nargs="*", choices=list(WORLDS), help="default: all")
    ap.add_argument("--users", type=int, default=8000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--replicas", type=int, default=16, help="oracle re-simulations per user")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--from-json", nargs="*", type=Path, help="only tabulate the rows of earlier runs' JSON (shards)")
    a = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from siyu.config import load_config

    load_config()  # fail fast on a broken config
    rows: list[dict] = []
    meta = {"users": a.users, "days": a.days, "oracle_replicas": a.replicas}
    if a.from_json:
        done = [json.loads(p.read_text()) for p in a.from_json]
        meta = {k: done[0][k] for k in meta}
        rows = sorted((r for d in done for r in d["rows"]), key=lambda r: list(WORLDS).index(r["world"]))
    for name in [] if a.from_json else a.worlds or list(WORLDS):
        print(f"== {name}", file=sys.stderr, flush=True)
        for r in run_world(name, WORLDS[name], a.users, a.days, a.replicas):
            rows.append(r)
            print(json.dumps({"benchmark": "robustness", **r}, default=str), flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"{date.today()}-robustness"
    stem.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2, default=str))
    stem.with_suffix(".md").write_text(md := markdown(rows, meta))
    print(md, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
