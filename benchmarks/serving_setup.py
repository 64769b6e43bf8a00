"""Shared set-up of the serving benchmarks: a simulated world, champions trained on it, a scores snapshot.

Everything is cached under benchmarks/data/ (the world folder is shared with
bench_features.py / bench_train.py), so a second run starts serving at once.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / "data"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def world(users: int, days: int = 365) -> Path:
    """events.parquet of a simulated world (no oracle), generated once."""
    from simulation.simulator import simulate_world
    from siyu.config import load_config

    out = CACHE / f"world_{users}_{days}"
    if not (out / "events.parquet").exists():
        t = time.perf_counter()
        simulate_world(load_config(), users, days, out_dir=out, oracle_cutoffs=[], replicas=0)
        log(f"simulated {users:,} users x {days} days in {time.perf_counter() - t:.1f} s")
    return out / "events.parquet"


def trained(train_users: int):
    """The default config pointed at a benchmark MLflow store holding champions trained on `train_users`."""
    from features.catalog import feature_names
    from siyu.config import load_config
    from training.model_registry import resolve_alias

    # Keyed by the feature list: champions and snapshots of another feature list do not fit this code.
    key = hashlib.sha256(",".join(feature_names(load_config())).encode()).hexdigest()[:8]
    home = CACHE / f"serving_home_{train_users}_{key}"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["SIYU_HOME"] = str(home)  # before the config is loaded: it resolves SIYU_HOME then
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    cfg = load_config()
    try:
        resolve_alias(cfg, "churn")
    except Exception:  # noqa: BLE001 - no champion yet: train once
        from training.train import train_all

        t = time.perf_counter()
        train_all(world(train_users), cfg)
        log(f"trained on {train_users:,} users in {time.perf_counter() - t:.1f} s")
    return cfg


def asof_of(events: Path) -> datetime:
    """The day after the last event (00:00 UTC): a nightly batch's cutoff."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    last = pc.max(pq.read_table(events, columns=["ts"]).column("ts")).as_py()
    return datetime(last.year, last.month, last.day) + timedelta(days=1)


def snapshot(cfg, users: int) -> Path:
    """A scores snapshot of the `users` world scored with the benchmark champions (written once)."""
    from serving.batch import score_pool

    events = world(users)
    out = Path(os.environ["SIYU_HOME"]) / f"scores_{users}.parquet"
    if not out.exists():
        score_pool(events, asof_of(events), out, cfg, show_progress=False)
    return out
