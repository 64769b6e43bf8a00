"""Benchmark `siyu monitor` on a pair of N-user snapshots (drift, tiers, expected AUC, report).

    .venv/bin/python benchmarks/bench_monitor.py --users 1000000            # two synthetic 1M-row snapshots
    .venv/bin/python benchmarks/bench_monitor.py --old A.parquet --new B.parquet   # real snapshots

The synthetic snapshots have the real layout (`user_id`, `tier`, populations, `p_*`, one `x.<feature>`
column per registry feature, the `siyu` metadata) with count-, day-, share- and trend-shaped
values and 10% missing; the new one drops 1% of the users, adds 5% and moves a tenth of the
features. They are written by a child process so the peak RSS printed is the monitor's own.
Realised grading is not timed here: it is the label query, benchmarked with the features.
One JSON object per figure on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def _values(name: str, n: int, rng: np.random.Generator, moved: bool) -> np.ndarray:
    if "days_since" in name or "tenure" in name:
        v = rng.exponential(40.0 * (1.8 if moved else 1.0), n).round()
    elif "share" in name or "rate" in name:
        v = rng.beta(2.0 + 2 * moved, 5.0, n)
    elif "trend" in name:
        v = rng.normal(0.6 if moved else 0.0, 1.0, n)
    else:
        v = rng.poisson(3.5 if moved else 2.0, n).astype(float)
    v[rng.random(n) < 0.1] = np.nan
    return v


def make_snapshot(path: Path, users: int, asof: datetime, seed: int, moved: set[str], ids: np.ndarray) -> None:
    """Write one synthetic snapshot of `ids` (features in `moved` shifted)."""
    import pyarrow as pa

    from features.catalog import feature_names
    from serving.snapshot import FEATURE_PREFIX, with_meta, write_table_atomic
    from siyu.config import load_config
    from siyu.contract import LABELS, TIERS

    cfg = load_config()
    names = feature_names(cfg)
    rng = np.random.default_rng(seed)
    n = ids.size
    cols = {
        "user_id": pa.array(np.char.add("u", ids.astype(str)).astype(object), pa.string()),
        "tier": pa.array(rng.choice(list(TIERS), n, p=[0.1, 0.3, 0.3, 0.15, 0.1, 0.05]).astype(object), pa.string()),
    }
    for lab in LABELS:
        pop = rng.random(n) < 0.8
        cols[f"in_{lab}_pop"] = pa.array(pop)
        cols[f"p_{lab}"] = pa.array(np.where(pop, rng.beta(1.0, 8.0 - (lab in moved), n), np.nan), from_pandas=True)
    for f in names:
        cols[FEATURE_PREFIX + f] = pa.array(_values(f, n, rng, f in moved), from_pandas=True)
    write_table_atomic(with_meta(pa.table(cols), asof, dict.fromkeys(LABELS, 1), names), path)


def make_pair(folder: Path, users: int) -> None:
    """old.parquet and new.parquet: 1% of the users gone, 5% new, every 10th feature moved."""
    from features.catalog import feature_names
    from siyu.config import load_config

    names = feature_names(load_config())
    moved = {f for i, f in enumerate(names) if i % 10 == 0} | {"churn"}
    old_ids = np.arange(users)
    new_ids = np.concatenate([old_ids[users // 100 :], np.arange(users, users + users // 20)])
    make_snapshot(folder / "old.parquet", users, datetime(2026, 10, 1), 1, set(), old_ids)
    make_snapshot(folder / "new.parquet", users, datetime(2026, 11, 1), 2, moved, new_ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000, help="users per synthetic snapshot")
    ap.add_argument("--old", type=Path, help="a real old snapshot (with --new: no synthetic pair)")
    ap.add_argument("--new", type=Path, help="a real new snapshot")
    ap.add_argument("--dir", type=Path, help="keep the synthetic pair here (reused when present)")
    ap.add_argument("--make", type=Path, help=argparse.SUPPRESS)  # child process: write the pair here
    a = ap.parse_args()
    if a.make:
        make_pair(a.make, a.users)
        return
    import pandas  # noqa: F401 - imported once before the clocks start (pyarrow pulls it in on first read)

    from monitoring.drift import snapshot_drift
    from monitoring.population import population_drift
    from monitoring.run import monitor
    from serving.snapshot import read_meta
    from siyu.config import load_config

    cfg = load_config()
    with tempfile.TemporaryDirectory(prefix="siyu-bench-monitor-") as tmp:
        tmp = Path(tmp)
        if a.old and a.new:
            old, new = a.old, a.new
        else:
            where = a.dir or tmp
            where.mkdir(parents=True, exist_ok=True)
            old, new = where / "old.parquet", where / "new.parquet"
            if not (old.exists() and new.exists() and pq.ParquetFile(old).metadata.num_rows == a.users):
                t = time.perf_counter()
                subprocess.run([sys.executable, __file__, "--users", str(a.users), "--make", str(where)], check=True)
                print(f"wrote the synthetic pair in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        meta = read_meta(old)
        feats = [f for f in meta["feature_names"] if f in set(read_meta(new)["feature_names"])]
        t = time.perf_counter()
        fd, sd = snapshot_drift(old, new, feats, ["p_churn", "p_promotion", "p_koc"], cfg.monitoring)
        drift_s = time.perf_counter() - t
        t = time.perf_counter()
        population_drift(old, new, cfg.monitoring)
        pop_s = time.perf_counter() - t
        t = time.perf_counter()
        r = monitor(old, new, cfg, out=tmp / "report", log_mlflow=False, show_progress=False)
        total_s = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        moved = sum(v.status == "alert" for v in fd.values())
        print(
            f"monitor, {r.report['old']['users']:,} -> {r.report['new']['users']:,} users, {len(feats)} features: "
            f"{total_s:.1f} s end to end (drift {drift_s:.1f} s, tiers/users {pop_s:.1f} s), peak RSS {rss:.2f} GiB; "
            f"{moved} features alert",
            file=sys.stderr,
        )
        print(
            json.dumps(
                {
                    "figure": "siyu monitor (no events)",
                    "users_old": r.report["old"]["users"],
                    "users_new": r.report["new"]["users"],
                    "features": len(feats),
                    "seconds": round(total_s, 1),
                    "drift_s": round(drift_s, 1),
                    "population_s": round(pop_s, 1),
                    "peak_rss_gib": round(rss, 2),
                    "features_alert": int(moved),
                    "synthetic": not (a.old and a.new),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
