"""Benchmark the push effect and the contact advice against the simulator's counterfactual (issue #17).

    .venv/bin/python benchmarks/bench_contact_policy.py --events out/world/events.parquet
    .venv/bin/python benchmarks/bench_contact_policy.py --events out/world/events.parquet --learners t,s,x --seeds 1,2

Builds the push effect's rows as `siyu train` does (the labels' cutoffs plus `uplift.extra_cutoffs`
earlier ones; the validation cutoff judges), fits each learner with each seed and prints one
Markdown row per fit: fit seconds, Qini on the validation cutoff's control groups, Spearman of the
estimate with the oracle's true effect, expected churn and spend under the oracle for the advice,
push-everyone, hold-everyone and the oracle's advice (chosen on one half of the oracle's replicas,
judged on the other), the share of the oracle advice's churn reduction achieved, the spend change.
Needs `oracle.parquet` beside the events (`siyu simulate`).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=Path, required=True)
    ap.add_argument("--learners", default="")
    ap.add_argument("--seeds", default="")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import pandas as pd

    from events.loader import connect
    from events.validate import load_valid_events
    from features.catalog import features_of
    from features.windows import resolve
    from siyu.config import load_config
    from training.baselines import load_oracle
    from training.fit import matrix
    from training.table import training_cutoffs, training_table
    from training.uplift import arms_frame, attach_arms, earlier_cutoffs, fit_push_effect
    from training.uplift_eval import compare_policies, oracle_contrast, qini

    cfg = load_config()
    con = connect(cfg=cfg)
    load_valid_events(con, args.events, cfg)
    cfg = resolve(cfg, con)
    cutoffs = training_cutoffs(con, cfg)
    extra = earlier_cutoffs(cutoffs, con.execute("SELECT min(ts) FROM events").fetchone()[0], cfg)
    allc = [*extra, *cutoffs]
    t0 = time.perf_counter()
    d = attach_arms(training_table(con, allc, cfg), arms_frame(con, allc, cfg), cfg.uplift.min_held_share)
    table_s = time.perf_counter() - t0
    names = [f.name for f in features_of(cfg)]
    cut, val = pd.to_datetime(d["cutoff"]), pd.Timestamp(cutoffs[-1])
    fit, va = d[cut < val], d[cut == val]
    truth = oracle_contrast(load_oracle(args.events), val, va["user_id"])
    if truth is None:
        raise SystemExit("no push contrast in oracle.parquet beside the events: simulate with the oracle on")
    print(
        f"rows: {len(fit)} on {len(extra) + len(cutoffs) - 1} training cutoffs ({int(fit['arm'].sum())} held), "
        f"{len(va)} at {val:%Y-%m-%d} ({int(va['arm'].sum())} held); table {table_s:.1f} s\n"
    )
    print(
        "| learner | seed | fit s | Qini | Spearman | churn: advice / push-all / hold-all / oracle advice "
        "| spend: advice / push-all / hold-all / oracle advice | held by advice | share of oracle's reduction "
        "| spend vs push-all |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    X_fit, X_val = matrix(fit, names), matrix(va, names)
    for learner in (args.learners or cfg.uplift.learner).split(","):
        for seed in [int(s) for s in (args.seeds or str(cfg.training.seed)).split(",")]:
            c = cfg.model_copy(
                update={
                    "uplift": cfg.uplift.model_copy(update={"learner": learner}),
                    "training": cfg.training.model_copy(update={"seed": seed}),
                }
            )
            t0 = time.perf_counter()
            m = fit_push_effect(
                X_fit, fit["churn"].to_numpy(float), fit["spend"].to_numpy(float), fit["arm"] == 1, c, names, "b"
            )
            fit_s = time.perf_counter() - t0
            eff = m.effects(X_val)
            q = qini(eff["churn"], va["arm"].to_numpy() == 1, va["churn"].to_numpy(float))["qini"]
            r = compare_policies(eff["churn"], eff["spend"], truth, cfg.uplift.policy)
            arms = ("advice", "push_all", "hold_all", "oracle_advice")
            print(
                f"| {learner} | {seed} | {fit_s:.1f} | {q:+.4f} | {r['spearman_churn']:.3f} | "
                + " / ".join(f"{r[f'{a}_churn']:.4f}" for a in arms)
                + " | "
                + " / ".join(f"{r[f'{a}_spend']:.2f}" for a in arms)
                + f" | {r['advice_held_share']:.2%} | {r['share_of_oracle_churn_reduction']:.0%} "
                f"| {r['spend_change_vs_push_all']:+.2%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
