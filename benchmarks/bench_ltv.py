"""Benchmark the LTV label (issue 16): the model against each baseline and the oracle, two worlds.

    .venv/bin/python benchmarks/bench_ltv.py --out benchmarks/results/2026-12-01-ltv.md

1. The default world (20,000 users x 365 days, with the oracle): `train_all` with the four labels
   (wall time = what `siyu train` costs), then the LTV table (Gini with its paired-bootstrap CI,
   Spearman, top-10% share, MAE, predicted / realised) of the model, BG/NBD + Gamma-Gamma, recent
   spend, lifetime rate and the oracle (expected own + referral spend by re-simulation).
2. The same world as a purchases-only log (only `purchase` and `refund` rows): the LTV label alone
   (own value only; `ltv_referral` is missing), against the oracle's expected own spend.
MLflow goes to a throwaway store. Prints the Markdown and writes it to --out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def world(users: int, days: int, cache: Path) -> Path:
    """The simulator's events with both oracles, generated once into the cache folder."""
    from simulation.simulator import simulate_world
    from siyu.config import load_config

    out = cache / f"world_{users}_{days}_ltv"
    if not (out / "oracle_ltv.parquet").exists():
        t = time.perf_counter()
        simulate_world(load_config(), users, days, out_dir=out)
        print(f"simulated {users:,} x {days} in {time.perf_counter() - t:.1f} s -> {out}", file=sys.stderr)
    return out / "events.parquet"


def purchases_only(events: Path) -> Path:
    """The same log with only purchase and refund rows (a transaction export), oracles copied beside it."""
    import duckdb

    out = events.parent.with_name(events.parent.name + "_purchases")
    path = out / "events.parquet"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        duckdb.execute(
            f"COPY (SELECT * FROM read_parquet('{events}') WHERE event IN ('purchase', 'refund')) "
            f"TO '{path}' (FORMAT parquet)"
        )
        shutil.copy(events.parent / "oracle_ltv.parquet", out / "oracle_ltv.parquet")
    return path


def ltv_only(events: Path, cfg):
    """The LTV label alone on a log (validation, LTV table, train_ltv), as train_all runs it."""
    from events.loader import connect
    from events.validate import load_valid_events
    from features.catalog import features_of
    from features.windows import resolve
    from training import model_registry
    from training.ltv_train import load_ltv_oracle, ltv_data, train_ltv

    con = connect(cfg=cfg)
    load_valid_events(con, events, cfg)
    cfg = resolve(cfg, con)
    table, cuts, why = ltv_data(con, cfg)
    con.close()
    model_registry.use_experiment(cfg, "bench-ltv")
    return train_ltv(table, cuts, why, cfg, features_of(cfg), load_ltv_oracle(events), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--cache", type=Path, default=Path(__file__).resolve().parent / "data")
    ap.add_argument("--out", type=Path, help="write the Markdown here")
    a = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    events = world(a.users, a.days, a.cache)
    with tempfile.TemporaryDirectory(prefix="siyu-bench-ltv-") as home:
        os.environ["SIYU_HOME"] = home
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from siyu.config import load_config
        from training.ltv_report import markdown
        from training.train import train_all

        cfg = load_config()
        t0, c0 = time.perf_counter(), time.process_time()
        result = train_all(events, cfg)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        labels = ", ".join(f"{k} ({'trained' if r.trained else 'skipped'})" for k, r in result.labels.items())
        parts = [
            "## Default world (own + referral value)",
            f"`train_all` with four labels ({labels}, ltv): **{wall:.1f} s wall**, {cpu:.1f} s CPU of this "
            f"process (load average at the start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores).",
            "",
            markdown(result.ltv),
        ]
        os.environ["SIYU_HOME"] = str(Path(home) / "purchases")
        po = ltv_only(purchases_only(events), load_config())
        parts += ["", "## Purchases-only variant (own value only)", "", markdown(po)]
    text = "\n".join(parts)
    print(text)
    if a.out:
        cmd = "OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_ltv.py " + " ".join(sys.argv[1:])
        a.out.write_text(f"# LTV with referral value (issue 16)\n\nCommand: `{cmd}`\n\n{text}\n")


if __name__ == "__main__":
    main()
