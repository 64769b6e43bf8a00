"""Benchmark the event store: a nightly `siyu score` over the whole log against ingest one day + score from the store.

    .venv/bin/python benchmarks/bench_store.py --users 1000000     # the issue's figure (1M users x 365 days)
    .venv/bin/python benchmarks/bench_store.py --users 20000       # minutes

The simulated world's last day is the new day's export; everything before it is backfilled
into a store once, month by month (one `siyu ingest` per calendar month of history, as a
history would be loaded: each batch's validation and write stay bounded in memory; timed, and
cached under benchmarks/data/).
Then, in the same run and each in its own process (so peak memory is its own):

  full     `siyu score EVENTS --asof D`: validate the whole log, features + tiers, history, score;
  nightly  `siyu ingest DAY --store S` (on a copy of the backfilled store) + `siyu score --store S --asof D`.

Both snapshots are compared: max |p_full - p_store| per label, tiers and reasons. One JSON object
per figure on stdout; with --results the markdown table goes to that file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_setup import CACHE, asof_of, log, world  # noqa: E402

# Champions the benchmark scores with: plain LightGBM, briefly tuned. The scoring step (probabilities
# and TreeSHAP reasons) is the same in both paths; with the default config's tuned blends it costs
# more than everything else at 1M users, so it would hide what the store changes. --default-champions
# scores with those instead.
LIGHT = {
    "training": {
        "candidates": ["lightgbm"],
        "serve_best_baseline": False,
        "num_boost_round": 100,
        "tuning": {"n_trials": 2, "timeout_s": 0},
    }
}


def champions(train_users: int, default: bool):
    """The config pointed at a benchmark MLflow store with champions trained on `train_users` (once)."""
    if default:
        from serving_setup import trained

        return trained(train_users)
    import yaml

    from siyu.config import load_config
    from training.model_registry import resolve_alias

    home = CACHE / f"serving_home_store_{train_users}"
    home.mkdir(parents=True, exist_ok=True)
    (home / "light.yaml").write_text(yaml.safe_dump(LIGHT))
    os.environ["SIYU_HOME"] = str(home)
    os.environ["SIYU_CONFIG"] = str(home / "light.yaml")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    cfg = load_config()
    try:
        resolve_alias(cfg, "churn")
    except Exception:  # noqa: BLE001 - no champion yet: train once
        from training.train import train_all

        t = time.perf_counter()
        train_all(world(train_users), cfg)
        log(f"trained light champions on {train_users:,} users in {time.perf_counter() - t:.1f} s")
    return cfg


def split(events: Path, users: int) -> tuple[list[Path], Path]:
    """(the history before the last day as one Parquet file per month, the last day), cached."""
    import duckdb

    d = CACHE / f"store_{users}"
    hist, day = d / "history_months", d / "new_day.parquet"
    if not day.exists():
        shutil.rmtree(hist, ignore_errors=True)
        hist.mkdir(parents=True)
        last = asof_of(events).date().isoformat()
        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")
        cut = f"DATE '{last}' - 1"
        months = [
            r[0]
            for r in con.execute(
                f"SELECT DISTINCT strftime(ts, '%Y-%m') FROM '{events}' WHERE ts < {cut} ORDER BY 1"
            ).fetchall()
        ]
        for mo in months:
            con.execute(
                f"COPY (SELECT * FROM '{events}' WHERE ts < {cut} AND strftime(ts, '%Y-%m') = '{mo}') "
                f"TO '{hist / f'{mo}.parquet'}' (FORMAT parquet)"
            )
        con.execute(f"COPY (SELECT * FROM '{events}' WHERE ts >= {cut}) TO '{day}' (FORMAT parquet)")
    return sorted(hist.glob("*.parquet")), day


def child(kind: str, a: argparse.Namespace) -> None:
    """One timed step in this process; prints its JSON (seconds, peak RSS)."""
    from features.ingest import ingest_file
    from serving.batch import score_pool

    cfg = champions(a.train_users, a.default_champions)
    events = world(a.users)
    asof = asof_of(events)
    hist, day = split(events, a.users)
    d = CACHE / f"store_{a.users}"
    out: dict = {"step": kind}
    t0 = time.perf_counter()
    if kind == "backfill":  # a month per batch: the slowest one and the peak are what a backfill costs
        rows, dates, slowest = 0, 0, 0.0
        for f in hist:
            s = ingest_file(f, d / "backfill", cfg)
            rows, dates, slowest = rows + s.new_rows, dates + len(s.dates), max(slowest, s.seconds)
            log(f"backfill {f.stem}: {s.new_rows:,} rows in {s.seconds:.1f} s")
        out.update(batches=len(hist), rows=rows, dates=dates, slowest_batch_s=round(slowest, 2))
    elif kind == "full":
        score_pool(events, asof, d / "full" / "scores.parquet", cfg, record=False, show_progress=False)
    elif kind == "nightly":
        s = ingest_file(day, d / "nightly", cfg)
        out["ingest_s"] = round(time.perf_counter() - t0, 2)
        out.update(day_rows=s.rows_read, new_rows=s.new_rows)
        t1 = time.perf_counter()
        score_pool(d / "nightly", asof, d / "nightly_scores" / "scores.parquet", cfg, record=False, show_progress=False)
        out["score_s"] = round(time.perf_counter() - t1, 2)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    print(json.dumps(out))


def run_child(kind: str, a: argparse.Namespace) -> dict:
    argv = [sys.executable, __file__, "--child", kind, "--users", str(a.users), "--train-users", str(a.train_users)]
    argv += ["--default-champions"] if a.default_champions else []
    res = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy())
    if res.returncode:
        sys.stderr.write(res.stderr[-4000:])
        raise SystemExit(f"{kind} failed")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    log(f"{kind}: {r}")
    return r


def compare(full: Path, store: Path) -> dict:
    """Max |dp| per label, and whether users, tiers and reasons agree."""
    import numpy as np
    import pandas as pd

    from siyu.contract import LABELS

    a, b = pd.read_parquet(full), pd.read_parquet(store)
    out = {"users": len(a), "same_users": bool((a.user_id.values == b.user_id.values).all())}
    out["same_tiers"] = bool((a.tier.values == b.tier.values).all())
    for lab in LABELS:
        pa_, pb = a[f"p_{lab}"].to_numpy(float), b[f"p_{lab}"].to_numpy(float)
        out[f"max_dp_{lab}"] = float(np.nanmax(np.abs(pa_ - pb))) if np.isfinite(pa_).any() else 0.0
        same = all(
            (x is None and y is None)
            or (x is not None and y is not None and [r["feature"] for r in x] == [r["feature"] for r in y])
            for x, y in zip(a[f"reasons_{lab}"], b[f"reasons_{lab}"])
        )
        out[f"same_reasons_{lab}"] = bool(same)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--train-users", type=int, default=20_000, help="world the champions are trained on")
    ap.add_argument("--results", type=Path, help="write the markdown table here")
    ap.add_argument("--default-champions", action="store_true", help="score with the default config's champions")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a)
        return
    champions(a.train_users, a.default_champions)
    events = world(a.users)
    split(events, a.users)
    d = CACHE / f"store_{a.users}"
    backfill = {"step": "backfill", "cached": True}
    if not (d / "backfill" / "siyu-store.json").exists():
        shutil.rmtree(d / "backfill", ignore_errors=True)
        backfill = run_child("backfill", a)
    shutil.rmtree(d / "nightly", ignore_errors=True)
    shutil.copytree(d / "backfill", d / "nightly")  # each run ingests the same new day into the same store
    full = run_child("full", a)
    nightly = run_child("nightly", a)
    cmp = compare(d / "full" / "scores.parquet", d / "nightly_scores" / "scores.parquet")
    figures = [
        {"figure": "store_backfill", **backfill},
        {"figure": "full_recompute", **full},
        {"figure": "ingest_day_and_score_from_store", **nightly},
        {
            "figure": "store_vs_full",
            "speedup": round(full["seconds"] / nightly["seconds"], 2),
            "goal": ">= 5x, identical scores, peak < 8 GiB",
            **cmp,
        },
    ]
    for f in figures:
        print(json.dumps(f))
    if a.results:
        flag = " --default-champions" if a.default_champions else ""
        cmd = f"`.venv/bin/python benchmarks/bench_store.py --users {a.users}{flag}`"
        lines = ["| figure | values |", "|---|---|"]
        lines += [
            f"| {f['figure']} | " + ", ".join(f"{k}={v}" for k, v in f.items() if k != "figure") + " |" for f in figures
        ]
        a.results.parent.mkdir(parents=True, exist_ok=True)
        a.results.write_text(
            f"# Event store vs full recompute, {a.users:,} users x 365 days\n\nCommand: {cmd}"
            f" (environment: SIYU_DUCKDB_MEMORY_LIMIT={os.environ.get('SIYU_DUCKDB_MEMORY_LIMIT', 'default')})\n\n"
            + "\n".join(lines)
            + "\n"
        )


if __name__ == "__main__":
    main()
