"""How close can any model on siyu's features come to the oracle? The features' ceiling, per world and label.

    .venv/bin/python benchmarks/bench_ceiling.py --worlds seed42 purchases_only_90 --users 20000

The oracle (simulation/oracle.py, ltv_oracle.py) reads each user's hidden state. A model reads the
log through the feature list. When model / oracle stays below 1, either the model is short of
what the features carry, or the features do not carry it. This benchmark tells the two apart on
the validation cutoff's rows (simulated world, 2-fold by user, the same LightGBM recipe for both):
- `realised`: fitted on the realised labels (what training sees);
- `ceiling`: fitted on the oracle's own expectation (p_oracle; expected own + referral spend for
  LTV), a target with no outcome noise: about the best the features allow;
- `oracle`: the oracle itself.
All three are judged on the realised labels of the half they were not fitted on (ROC AUC; Gini
for LTV). ceiling / oracle is the share of the oracle's ranking the features can give. If
`realised` is near `ceiling` while both are well below `oracle`, more data or tuning will not
close the gap; only signals the log does not yet carry will.
Prints the Markdown table (and writes it and the rows' JSON with --out); `--beside` a bench_robustness JSON
adds what `siyu train` reached on the same worlds and its share of the ceiling fit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

PARAMS = {"learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 50, "feature_fraction": 0.8, "verbose": -1}
ROUNDS = 300


def two_fold(X, target, objective: dict, groups: np.ndarray) -> np.ndarray:
    """Out-of-fold predictions: each half of the users predicted by a model fitted on the other."""
    import lightgbm as lgb

    out = np.zeros(len(X))
    for k in (0, 1):
        fit = lgb.Dataset(X[groups != k], target[groups != k])
        m = lgb.train({**PARAMS, **objective, "num_threads": 2}, fit, ROUNDS)
        out[groups == k] = m.predict(X[groups == k])
    return out


def judge(kind: str, y: np.ndarray, scores: dict[str, np.ndarray]) -> dict[str, float]:
    """ROC AUC (labels) or normalized Gini (LTV) of each score against the realised y."""
    from simulation.report import roc_auc
    from training import ltv_metrics as lm

    f = (lambda s: lm.gini(y, s)) if kind == "ltv" else (lambda s: roc_auc(y, s))
    return {k: float(f(s)) for k, s in scores.items()}


def world_rows(name: str, users: int, days: int, replicas: int, folder: Path, windows=None) -> dict:
    """Per label: (X, y, oracle target) on the validation cutoff's rows with an oracle value."""
    import pandas as pd
    from bench_robustness import WORLDS, merged, simulate, world_config

    from events.loader import connect
    from events.validate import load_valid_events
    from features.catalog import features_of
    from features.windows import resolve
    from training.baselines import load_oracle, oracle_scores
    from training.ltv_train import load_ltv_oracle, ltv_data, oracle_values
    from training.table import training_cutoffs, training_table

    spec = WORLDS[name]
    if windows:  # the features' windows instead of `auto`: does a finer grid raise the ceiling?
        spec = {**spec, "cfg": merged(spec.get("cfg", {}), {"windows": {"feature_windows": list(windows)}})}
    cfg = world_config(spec, folder / "home")
    events, _ = simulate(name, spec, cfg, users * spec.get("users_scale", 1), days, replicas, folder)
    con = connect(cfg=cfg)
    load_valid_events(con, events, cfg)
    cfg = resolve(cfg, con)
    names = [f.name for f in features_of(cfg)]
    val = training_cutoffs(con, cfg)[-1]
    table = training_table(con, [val], cfg)
    oracle = load_oracle(events)
    out = {}
    for lab in ("churn", "promotion", "koc"):
        rows = table[table[lab].notna()].reset_index(drop=True)
        p = oracle_scores(oracle, lab, val, rows)
        if p is None or rows[lab].sum() < 50:
            continue
        ok = ~np.isnan(p)
        out[lab] = (rows.loc[ok, names], rows.loc[ok, lab].to_numpy(dtype=float), p[ok], rows.loc[ok, "user_id"])
    ltv, cuts, _ = ltv_data(con, cfg)
    if ltv is not None:
        v = ltv[ltv["cutoff"] == pd.Timestamp(cuts[-1])].reset_index(drop=True)
        referral = bool(v["ltv_referral"].notna().any())
        po = oracle_values(load_ltv_oracle(events), cuts[-1], v, referral)
        if po is not None:
            ok = ~np.isnan(po)
            y = v["ltv_own"].to_numpy(dtype=float) + np.nan_to_num(v["ltv_referral"].to_numpy(dtype=float))
            out["ltv"] = (v.loc[ok, names], y[ok], po[ok], v.loc[ok, "user_id"])
    con.close()
    return out


def ceiling_rows(name: str, users: int, days: int, replicas: int, windows=None) -> list[dict]:
    """One row per label of world `name`: realised-target fit, oracle-target fit and the oracle, judged alike."""
    from training.fit import matrix
    from training.ltv_fit import user_groups

    with tempfile.TemporaryDirectory(prefix=f"siyu-ceiling-{name}-") as d:
        data = world_rows(name, users, days, replicas, Path(d), windows)
    rows = []
    for lab, (F, y, target, uid) in data.items():
        X = matrix(F.reset_index(drop=True), list(F.columns), np.arange(len(F)))
        g = user_groups(uid.reset_index(drop=True), 0)
        if lab == "ltv":
            obj = {"objective": "tweedie", "tweedie_variance_power": 1.5}
            fits = {"realised": two_fold(X, np.maximum(y, 0), obj, g),
                    "ceiling": two_fold(X, np.maximum(target, 0), obj, g)}  # fmt: skip
        else:
            fits = {"realised": two_fold(X, y, {"objective": "binary"}, g),
                    "ceiling": two_fold(X, target, {"objective": "cross_entropy"}, g)}  # fmt: skip
        s = judge(lab, y, {**fits, "oracle": target})
        ratios = {f"{k}_over_oracle": s[k] / s["oracle"] for k in ("realised", "ceiling")}
        rows.append({"world": name, "label": lab, "rows": len(y), **s, **ratios})
    return rows


def beside(rows: list[dict], robustness: dict) -> list[dict]:
    """The rows with what `siyu train` reached on the same world (bench_robustness JSON), its share of the ceiling."""
    trained = {(r["world"], r["label"]): r.get("model_gini", r.get("model_roc_auc")) for r in robustness["rows"]}
    out = []
    for r in rows:
        t = trained.get((r["world"], r["label"]))
        out.append({**r, "trained": t, "trained_over_ceiling": None if t is None else t / r["ceiling"]})
    return out


def markdown(rows: list[dict]) -> str:
    """The table, one line per (world, label); with `trained` columns when the rows were put `beside` a run."""
    keys = ["realised", "ceiling", "oracle", "realised_over_oracle", "ceiling_over_oracle"]
    head = ["world", "label", "rows", "realised fit", "ceiling fit", "oracle", "realised / oracle", "ceiling / oracle"]
    if any("trained" in r for r in rows):
        keys += ["trained", "trained_over_ceiling"]
        head += ["siyu train", "siyu train / ceiling fit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        nums = ("-" if r.get(k) is None else f"{r[k]:.3f}" for k in keys)
        lines.append(f"| {r['world']} | {r['label']} | {r['rows']:,} | " + " | ".join(nums) + " |")
    note = "ROC AUC for churn / promotion / koc, normalized Gini for ltv; judged on realised outcomes."
    if len(keys) > 5:
        note += " `siyu train`: the validation figure of the trained model (bench_robustness, all cutoffs and users)."
    return "\n".join(lines) + f"\n\n{note}\n"


def main() -> None:
    from bench_robustness import WORLDS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", nargs="*", choices=[w for w, s in WORLDS.items() if "generator" not in s])
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--replicas", type=int, default=32, help="oracle re-simulations per user")
    ap.add_argument("--out", type=Path, help="write the Markdown here (and the rows as JSON beside it)")
    ap.add_argument("--beside", type=Path, help="a bench_robustness JSON of the same worlds: add what training reached")
    ap.add_argument("--from-json", type=Path, help="only tabulate the rows of an earlier run's JSON")
    ap.add_argument("--feature-windows", nargs="*", type=int, help="feature windows in days (default: auto)")
    a = ap.parse_args()
    rows = json.loads(a.from_json.read_text())["rows"] if a.from_json else []
    for name in [] if a.from_json else a.worlds or ["seed42"]:
        rows.extend(ceiling_rows(name, a.users, a.days, a.replicas, a.feature_windows))
        print(markdown(rows), file=sys.stderr, flush=True)
    if a.beside:
        rows = beside(rows, json.loads(a.beside.read_text()))
    for r in rows:  # one JSON line per (world, label) for benchmarks/run.py
        print(json.dumps({"benchmark": "ceiling", **r}, default=str), flush=True)
    md = markdown(rows)
    print(md)
    if a.out:
        a.out.write_text(md)
        a.out.with_suffix(".json").write_text(json.dumps({"users": a.users, "days": a.days, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
