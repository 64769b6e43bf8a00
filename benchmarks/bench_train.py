"""Benchmark `siyu train` on a simulated world: wall time and model quality against baselines and oracle.

    .venv/bin/python benchmarks/bench_train.py --users 20000            # the default world; target < 120 s
    .venv/bin/python benchmarks/bench_train.py --users 1000000 --no-oracle   # target < 20 min (6 cutoffs)
    .venv/bin/python benchmarks/bench_train.py --events out/world/events.parquet

Runs `training.train.train_all` (what `siyu train` runs) and prints its steps' wall time:
validate + load the log, build the tables (labels, push effect, LTV), train the three labels
(choice on the folds, fit, calibration, baselines, MLflow, gate; the push effect), LTV, and the
total, with the peak RSS; then per label the model against both baselines
and the oracle (ROC AUC, PR AUC, Brier, model/oracle AUC ratio). One JSON object
per figure on stdout (for benchmarks/run.py). MLflow goes to a throwaway store.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def world(users: int, days: int, cache: Path, oracle: bool) -> Path:
    """The simulator's events (and oracle) for `users`, generated once into the cache folder."""
    from simulation.simulator import simulate_world
    from siyu.config import load_config

    # Same folder name as bench_features.py for the oracle-free world, so both share one simulation.
    out = cache / f"world_{users}_{days}{'_oracle' if oracle else ''}"
    path = out / "events.parquet"
    if not path.exists():
        t = time.perf_counter()
        simulate_world(
            load_config(),
            users,
            days,
            out_dir=out,
            oracle_cutoffs=None if oracle else [],
            replicas=None if oracle else 0,
        )
        print(f"simulated {users:,} users x {days} days in {time.perf_counter() - t:.1f} s -> {path}", file=sys.stderr)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--events", type=Path, help="use this log instead of simulating")
    ap.add_argument("--config", type=Path, help="config file (default: the project's)")
    ap.add_argument("--min-class-count", type=int, help="override training.min_class_count")
    ap.add_argument("--no-oracle", action="store_true", help="simulate without the oracle (large worlds)")
    ap.add_argument("--cache", type=Path, default=Path(__file__).resolve().parent / "data")
    a = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from siyu.config import load_config
    from training.train import train_all

    events = a.events or world(a.users, a.days, a.cache, not a.no_oracle)
    cfg = load_config(a.config)
    if a.min_class_count:
        cfg = cfg.model_copy(
            update={"training": cfg.training.model_copy(update={"min_class_count": a.min_class_count})}
        )
    with tempfile.TemporaryDirectory() as store:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
        t0 = time.perf_counter()
        result = train_all(events, cfg, "bench")  # what `siyu train` runs: every label, LTV, push effect
        total = time.perf_counter() - t0
    rows = sum(result.rows.values())
    target = 120 if rows < 2_000_000 else 1200
    ltv = result.ltv
    print(
        json.dumps(
            {
                "figure": "train_wall_time",
                "events": str(events),
                "rows": rows,
                "cutoffs": len(result.cutoffs),
                **result.timings,
                "total_s": round(total, 1),
                "target_s": target,
                "within_target": total < target,
                "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                "ltv": ltv.message if ltv is not None else None,
                "push_effect": result.push_effect.message if result.push_effect is not None else None,
            }
        )
    )
    for r in result.labels.values():
        row = {"figure": "quality", "label": r.label, "trained": r.trained}
        if not r.trained:
            row["message"] = r.message
        else:
            for name, m in (("model", r.metrics), *r.baselines.items()):
                row.update({f"{name}_{k}": round(m[k], 4) for k in ("roc_auc", "pr_auc", "brier") if k in m})
            if r.oracle:
                o = r.oracle
                row.update(
                    {
                        k: round(o[k], 4)
                        for k in ("oracle_roc_auc", "oracle_pr_auc", "oracle_brier", "auc_ratio_to_oracle")
                    }
                )
                row["goal_0.95_oracle_met"] = o["auc_ratio_to_oracle"] >= 0.95
            row["beats_baselines"] = r.beats_baselines
            row["candidate"], row["scorer"] = (r.selection.chosen if r.selection else None), r.scorer
            row["positives_validation"] = r.counts["validation_pos"]
            row["fit_rows"], row["best_iteration"] = r.counts["train_pos"] + r.counts["train_neg"], r.best_iteration
        print(json.dumps(row))


if __name__ == "__main__":
    main()
