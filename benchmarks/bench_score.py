"""Benchmark batch scoring: the scoring step on N users, and `siyu score` end to end on a simulated world.

    .venv/bin/python benchmarks/bench_score.py --users 1000000            # scoring step, 1M users (goal < 60 s)
    .venv/bin/python benchmarks/bench_score.py --users 20000 --end-to-end # plus validate + features + tiers

The scoring step is what batch scoring adds on top of the feature pipeline
(benchmarked in bench_features.py): calibrated probabilities for three models,
percentiles, buckets, top-3 reasons per score and the atomic Parquet write.
Its input is N feature rows resampled from a real snapshot (real feature
distributions, real champions trained by serving_setup.py). One JSON object per
figure on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_setup import asof_of, log, snapshot, trained, world  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000, help="users to score")
    ap.add_argument("--train-users", type=int, default=20_000, help="world the champions are trained on")
    ap.add_argument("--end-to-end", action="store_true", help="also time `siyu score` on a world of --users")
    a = ap.parse_args()
    from features.catalog import feature_names
    from serving.pool import load_champions, score_frame
    from serving.scoring import Scorer
    from serving.snapshot import FEATURE_PREFIX, write_table_atomic

    cfg = trained(a.train_users)
    base = pd.read_parquet(snapshot(cfg, a.train_users))
    names = feature_names(cfg)
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(base), a.users)
    rows = base.iloc[pick].reset_index(drop=True)
    feats = pd.DataFrame(
        {"user_id": [f"b{i}" for i in range(a.users)], **{f: rows[FEATURE_PREFIX + f].to_numpy() for f in names}}
    )
    pop = pd.DataFrame(
        {
            "user_id": feats.user_id,
            "tier": rows.tier,
            **{c: rows[c] for c in ("in_churn_pop", "in_promotion_pop", "in_koc_pop")},
        }
    )
    scorer = Scorer(load_champions(cfg), names, cfg.scoring.reasons)
    trees = {lab: m.booster.num_trees() for lab, m in scorer.models.items()}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        table = score_frame(feats, pop, scorer, cfg, asof_of(world(a.train_users)))
        t_score = time.perf_counter() - t
        write_table_atomic(table, Path(tmp) / "scores.parquet")
        total = time.perf_counter() - t
    log(
        f"scoring step, {a.users:,} users: {total:.1f} s ({t_score:.1f} s scoring, {total - t_score:.1f} s write); "
        f"trees {trees} (goal < 60 s at 1M)"
    )
    print(
        json.dumps(
            {
                "figure": "batch scoring step",
                "users": a.users,
                "seconds": round(total, 1),
                "score_s": round(t_score, 1),
                "write_s": round(total - t_score, 1),
                "trees": trees,
                "goal": "< 60 s at 1M users",
            }
        ),
        flush=True,
    )
    if a.end_to_end:
        from serving.batch import score_pool

        events = world(a.users)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            s = score_pool(events, asof_of(events), Path(tmp) / "s.parquet", cfg, record=False, show_progress=False)
            e2e = time.perf_counter() - t
        log(f"siyu score end to end, {s.users:,} users: {e2e:.1f} s")
        print(json.dumps({"figure": "siyu score end to end", "users": s.users, "seconds": round(e2e, 1)}), flush=True)


if __name__ == "__main__":
    main()
