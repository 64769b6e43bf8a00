"""Benchmark `/predict_events` for a known user: the stored-history lookup at N users, and the whole answer.

    .venv/bin/python benchmarks/bench_history.py --users 1000000 --events-per-user 30

Part 1 (lookup): a synthetic canonical log of N users x E events is written as the history
beside a snapshot (serving/history.py: memory-mapped Arrow IPC + an id -> slice index), then
one random known user's rows are fetched R times: load time, file size, p50 / p99.
Part 2 (answer): on the serving test world (a few hundred users, real champions), one known
user with 5 posted events through Predictor.predict_events (validation, history merge and
de-duplication, the batch feature SQL, scoring): p50 / p99 of wall time, and of the process's CPU
time (the machine may be shared: CPU time shows the work, wall time the wait too). Beyond the
lookup, its cost depends on the user's own rows, not on N. One JSON object per figure on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _pcts(times: list[float]) -> dict[str, float]:
    ms = np.asarray(times) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def lookup(users: int, per_user: int, reps: int) -> dict:
    from events.loader import connect
    from serving.history import History, history_paths, write_history

    con = connect()
    n = users * per_user
    con.execute(f"""CREATE TEMP TABLE events AS
        SELECT 'u' || lpad(CAST(i % {users} AS VARCHAR), 7, '0') AS user_id,
               TIMESTAMP '2025-01-01' + to_seconds(CAST(hash(i) % (365 * 86400) AS BIGINT)) AS ts,
               CASE i % 4 WHEN 0 THEN 'purchase' WHEN 1 THEN 'message_sent' WHEN 2 THEN 'message_open'
                    ELSE 'visit' END AS event,
               CASE WHEN i % 4 = 0 THEN 100.0 END AS amount, CAST(NULL AS VARCHAR) AS channel,
               CAST(NULL AS VARCHAR) AS ref_user_id, CAST(NULL AS INTEGER) AS rating,
               CASE WHEN i % 4 = 0 THEN false END AS coupon, CAST(NULL AS VARCHAR) AS content_id,
               CASE WHEN i % 4 = 0 THEN 'o' || i END AS order_id
        FROM range({n}) t(i)""")
    with tempfile.TemporaryDirectory(prefix="siyu-hist-") as d:
        scores = Path(d) / "scores.parquet"
        t0 = time.perf_counter()
        write_history(con, con.execute("SELECT max(ts) FROM events").fetchone()[0], scores)
        write_s = time.perf_counter() - t0
        con.close()
        t0 = time.perf_counter()
        h = History(scores)
        load_s = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        ids = [f"u{int(k):07d}" for k in rng.integers(0, users, reps)]
        times = []
        for u in ids:
            t0 = time.perf_counter()
            rows = h.rows([u])
            times.append(time.perf_counter() - t0)
            assert rows.num_rows == per_user
        size = history_paths(scores)[0].stat().st_size
        return {
            "figure": "history lookup, one known user",
            "users": users,
            "rows": n,
            "file_mb": round(size / 2**20, 1),
            "write_s": round(write_s, 2),
            "load_s": round(load_s, 2),
            "reps": reps,
            **_pcts(times),
        }


def answer(reps: int) -> dict:
    import pandas as pd
    from serving_world import serving_world

    from serving.predictor import Predictor

    w = serving_world()
    pred = Predictor.load(w.cfg, str(w.scores))
    uids = [u for u in pred.snap.user_ids if pred.snap.pops["churn"][pred.snap.index[u]]]
    rng = np.random.default_rng(1)
    kinds = ["message_open", "click", "visit", "like", "message_open"]
    times, alone, hist_rows, cpu = [], [], [], []
    for k in range(reps + 5):
        uid = uids[int(rng.integers(len(uids)))]
        posted = [
            {"user_id": uid, "ts": (w.asof + timedelta(hours=i + 1)).isoformat(), "event": kinds[i]} for i in range(5)
        ]
        t0, c0 = time.perf_counter(), time.process_time()
        items, _ = pred.predict_events(posted, None)
        t1, c1 = time.perf_counter(), time.process_time()
        pred.predict_events(posted, None, history=False)  # the same request without the history: its cost
        t2 = time.perf_counter()
        if k >= 5:  # warm-up
            times.append(t1 - t0)
            cpu.append(c1 - c0)
            alone.append(t2 - t1)
            hist_rows.append(pred.history.index[uid][1])
        assert items[0]["status"] == "ok"
    return {
        "figure": "/predict_events answer, one known user + 5 posted events (Predictor, in process)",
        "users_in_snapshot": len(pred.snap.user_ids),
        "history_rows_per_user_median": int(pd.Series(hist_rows).median()),
        "reps": reps,
        **_pcts(times),
        "cpu": _pcts(cpu),
        "without_history": _pcts(alone),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--events-per-user", type=int, default=30)
    ap.add_argument("--reps", type=int, default=2000, help="lookups timed")
    ap.add_argument("--answer-reps", type=int, default=200, help="whole answers timed")
    ap.add_argument("--answer-only", action="store_true", help="skip the lookup at N users")
    a = ap.parse_args()
    if not a.answer_only:
        print(json.dumps(lookup(a.users, a.events_per_user, a.reps)), flush=True)
    print(json.dumps(answer(a.answer_reps)), flush=True)


if __name__ == "__main__":
    main()
