"""Benchmark: the built-in world — simulation and oracle wall time, peak memory.

    .venv/bin/python benchmarks/bench_simulate.py                 # default world 20,000 x 365 with oracle
    .venv/bin/python benchmarks/bench_simulate.py --scale large   # 1,000,000 x 365, no oracle
    .venv/bin/python benchmarks/bench_simulate.py --users 100000 --days 365 --replicas 0

Each case runs `simulate_world` in a fresh child process and prints one JSON
line: users, events, events per user-year, world seconds (without the oracle),
oracle seconds, total seconds and peak RSS. Targets (issue 3): default world
< 30 s, oracle for 20,000 users < 60 s, 1M x 365 < 600 s and < 8 GiB.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCALES = {"default": (20_000, 365, None), "large": (1_000_000, 365, 0)}


def child(users: int, days: int, replicas: int | None) -> None:
    from simulation.simulator import simulate_world
    from siyu.config import load_config

    out = tempfile.mkdtemp(prefix="bench-simulate-")
    t0 = time.perf_counter()
    s = simulate_world(load_config(), users, days, out_dir=out, replicas=replicas)
    secs = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "users": s.users,
                "days": days,
                "events": s.events,
                "events_per_user_year": round(s.realism["events per user-year"], 1),
                "world_seconds": round(secs - s.oracle_seconds, 1),
                "oracle_seconds": round(s.oracle_seconds, 1),
                "oracle_replicas": s.n_replicas if s.auc else 0,
                "total_seconds": round(secs, 1),
                "peak_rss_mib": round(peak_mib),
                "oracle_auc": {k: round(v, 3) for k, v in s.auc.items()},
                "events_parquet_mib": round((Path(out) / "events.parquet").stat().st_size / 2**20),
            }
        )
    )
    shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="default")
    ap.add_argument("--users", type=int)
    ap.add_argument("--days", type=int)
    ap.add_argument("--replicas", type=int, help="oracle replicas; 0: no oracle")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    users, days, replicas = SCALES[a.scale]
    users, days = a.users or users, a.days or days
    replicas = a.replicas if a.replicas is not None else replicas
    if a.child:
        child(users, days, replicas)
        return
    cmd = [sys.executable, __file__, "--child", "--users", str(users), "--days", str(days)]
    if replicas is not None:
        cmd += ["--replicas", str(replicas)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(res.stderr)
    print(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
