"""Do BG/NBD outputs help LightGBM as features? Walk-forward, with and without them, on order logs (#14 item 3).

    .venv/bin/python benchmarks/bench_btyd_features.py                     # cdnow_real, bgnbd_retail, purchases_only_90
    .venv/bin/python benchmarks/bench_btyd_features.py --worlds seed42 --users 8000

Per world of the robustness suite (benchmarks/bench_robustness.py: the same log, config and training
table as `siyu train`) and label (churn, promotion): for each of the latest `--folds` cutoffs with
complete labels, LightGBM with the config's parameters is fitted on the cutoffs whose labels end
before it (early-stopped on the latest of them), once on siyu's features and once with three BG/NBD
columns added: expected purchases in H, P(at least one) and P(at least two) purchases in H, under
parameters fitted on the fit cutoffs' users (training.btyd). Both are judged by ROC AUC on the fold's
cutoff, averaged over `--seeds` LightGBM seeds. Writes results/<date>-btyd-features.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def btyd_columns(frame, params, horizon: float) -> np.ndarray:
    """The three BG/NBD columns of a feature table's rows (n x 3)."""
    from training import btyd

    x, tx, T = btyd.inputs(frame)
    return np.c_[
        btyd.expected_purchases(params, x, tx, T, horizon),
        btyd.p_at_least(params, x, tx, T, horizon, 1),
        btyd.p_at_least(params, x, tx, T, horizon, 2),
    ]


def world_table(name: str, users: int, days: int, folder: Path):
    """(training table, resolved config, feature list) of a robustness world, built as `siyu train` builds it."""
    from bench_robustness import WORLDS, simulate, world_config

    from events.loader import connect
    from events.validate import load_valid_events
    from features.catalog import features_of
    from features.windows import resolve
    from training.table import training_cutoffs, training_table

    spec = WORLDS[name]
    cfg = world_config(spec, folder / "home")
    events, _ = simulate(name, spec, cfg, users * spec.get("users_scale", 1), days, 4, folder)
    con = connect(cfg=cfg)
    load_valid_events(con, events, cfg)
    cfg = resolve(cfg, con)
    table = training_table(con, training_cutoffs(con, cfg), cfg)
    con.close()
    return table, cfg, features_of(cfg)


def compare(table, cfg, features, label: str, n_folds: int, seeds: int) -> list[dict]:
    """One row per fold: LightGBM's ROC AUC without and with the BG/NBD columns."""
    import lightgbm as lgb
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from training import btyd
    from training.fit import lgbm_params

    H = cfg.windows.horizon_days
    names = [f.name for f in features]
    pop = table[table[f"in_{label}_pop"].fillna(False).astype(bool) & table[label].notna()]
    cuts = sorted(pd.to_datetime(pop["cutoff"]).unique())
    ts = pd.to_datetime(pop["cutoff"])
    rows = []
    for c in cuts[::-1][:n_folds]:
        before = [k for k in cuts if k + pd.Timedelta(days=H) <= c]  # labels end before the fold's cutoff
        if len(before) < 2:
            continue
        fit, es, ev = pop[ts.isin(before[:-1])], pop[ts == before[-1]], pop[ts == c]
        known = table[pd.to_datetime(table["cutoff"]).isin(before)]
        params = btyd.fit_params(*btyd.inputs(known), seed=cfg.training.seed)
        y = [d[label].astype(int).to_numpy() for d in (fit, es, ev)]
        base = lgbm_params(label, cfg, features, int(y[0].sum()), int(len(y[0]) - y[0].sum()))
        row = {"label": label, "cutoff": str(c.date()), "rows_fit": len(fit), "rows_eval": len(ev)}
        for tag, extra in (("without", False), ("with", True)):
            X = [d[names].to_numpy(float) for d in (fit, es, ev)]
            p = dict(base)
            if extra:
                X = [np.c_[x, btyd_columns(d, params, H)] for x, d in zip(X, (fit, es, ev))]
                if "monotone_constraints" in p:
                    p["monotone_constraints"] = [*p["monotone_constraints"], 0, 0, 0]
            aucs = []
            for s in range(seeds):
                b = lgb.train(
                    {**p, "seed": cfg.training.seed + s},
                    lgb.Dataset(X[0], y[0]),
                    cfg.training.num_boost_round,
                    valid_sets=[lgb.Dataset(X[1], y[1])],
                    callbacks=[lgb.early_stopping(cfg.training.early_stopping_rounds, verbose=False)],
                )
                aucs.append(roc_auc_score(y[2], b.predict(X[2], num_iteration=b.best_iteration)))
            row[tag] = float(np.mean(aucs))
        row["delta"] = row["with"] - row["without"]
        rows.append(row)
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    """The table and its summary."""
    head = "| world | label | fold cutoff | fit rows | eval rows | without | with | delta |"
    out = [f"# BG/NBD outputs as LightGBM features — {date.today()}", "",
           ", ".join(f"{k} {v}" for k, v in meta.items()), "", head, "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        out.append(f"| {r['world']} | {r['label']} | {r['cutoff']} | {r['rows_fit']:,} | {r['rows_eval']:,} | "
                   f"{r['without']:.4f} | {r['with']:.4f} | {r['delta']:+.4f} |")  # fmt: skip
    out += ["", "Mean delta per world and label:", ""]
    for key in dict.fromkeys((r["world"], r["label"]) for r in rows):
        d = [r["delta"] for r in rows if (r["world"], r["label"]) == key]
        out.append(f"- {key[0]} / {key[1]}: {np.mean(d):+.4f} over {len(d)} folds")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", nargs="*", default=["cdnow_real", "bgnbd_retail", "purchases_only_90"])
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    a = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    rows = []
    for name in a.worlds:
        print(f"== {name}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix=f"siyu-btyd-{name}-") as d:
            table, cfg, features = world_table(name, a.users, a.days, Path(d) / "world")
        for label in ("churn", "promotion"):
            for r in compare(table, cfg, features, label, a.folds, a.seeds):
                rows.append({"world": name, **r})
                print(json.dumps({"benchmark": "btyd_features", **rows[-1]}), flush=True)
    meta = {"users": a.users, "days": a.days, "folds": a.folds, "seeds": a.seeds}
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"{date.today()}-btyd-features"
    stem.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    stem.with_suffix(".md").write_text(md := markdown(rows, meta))
    print(md, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
