"""Where one cutoff's feature time goes, each step as a multiple of the bare DuckDB floor.

    .venv/bin/python benchmarks/bench_feature_stages.py --users 1000000
    .venv/bin/python benchmarks/bench_feature_stages.py --events out/world/events.parquet

Two parts, both beside the floor (`SELECT user_id, count(*), sum(amount) ... GROUP BY user_id`
over the same file, best of --runs):

- lower bounds: queries any per-user, per-event feature pipeline on this engine has to pay at
  least: one scan that computes each event's code and day bucket (no grouping), grouping by
  (user, event) with a count only, grouping by (user, interval, event) with a count only, and
  the fact tables siyu builds (that grouping with its measures, plus channel states, orders
  and users; the stages below time the same tables one by one);
- stages: `feature_table` at the validation cutoff with every engine step timed (fact tables,
  tiers, per-cutoff tables, the feature query with its fetch) and the Python side (sorting the
  rows by user, NaN for absent families, the frame) as the rest.

This says which targets a design can meet: a step whose lower bound is already k x the floor
leaves (4 - k) x the floor for everything else.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_features import floor_sql, timed, world, world_args  # noqa: E402

from features.facts import Runner  # noqa: E402


class TimedRunner(Runner):
    """A DuckDB runner that adds up the wall time of each step, by table-name suffix."""

    def __init__(self, con) -> None:
        super().__init__(con)
        self.steps: dict[str, float] = defaultdict(float)

    def table(self, name: str, sql: str) -> None:
        step = name.rsplit("_", 1)[-1].rstrip("0123456789")
        t = time.perf_counter()
        super().table(name, sql)
        self.steps[step] += time.perf_counter() - t

    def arrays(self, sql: str):
        t = time.perf_counter()
        out = super().arrays(sql)
        self.steps["query+fetch"] += time.perf_counter() - t
        return out


def lower_bound_sql(events: str, cutoff, cfg) -> dict[str, str]:
    """The lower-bound queries, over the same buckets and intervals as the facts at `cutoff`."""
    from features.compute import feature_bounds
    from features.facts import bucket_sql, event_code, interval_sql, split_instant

    day, offset = split_instant(cutoff)
    bs = sorted(feature_bounds([day], cfg) | {day})
    rows = (
        f"(SELECT user_id, ev, b, {interval_sql(bs)} AS e FROM (SELECT user_id, {event_code('event')} AS ev, "
        f"CAST({bucket_sql(offset)} AS INTEGER) AS b FROM {events}) y WHERE b <= {bs[-1]}) x"
    )
    return {
        "scan_codes_buckets": f"SELECT count(*), sum(ev), sum(e) FROM {rows}",
        "group_user_event_count": f"SELECT user_id, ev, count(*) FROM {rows} GROUP BY user_id, ev",
        "group_user_interval_event_count": f"SELECT user_id, e, ev, count(*) FROM {rows} GROUP BY user_id, e, ev",
    }


def main(argv: list[str]) -> int:
    ap = world_args(__doc__)
    ap.add_argument("--runs", type=int, default=2, help="every figure is the best of this many runs")
    a = ap.parse_args(argv)

    from events.loader import connect
    from features.compute import feature_bounds, features_on
    from features.facts import build_facts, split_instant
    from siyu.config import load_config
    from training.table import training_cutoffs

    cfg = load_config()
    path = a.events or world(a.users, a.days, a.cache)
    con = connect()
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{path}')")
    n_events, n_users = con.execute("SELECT count(*), count(DISTINCT user_id) FROM events").fetchone()
    print(f"log: {path} ({n_events:,} events, {n_users:,} users)")
    cutoff = training_cutoffs(con, cfg)[-1]

    def best(label: str, fn) -> float:
        runs = [timed(fn)[1] for _ in range(a.runs)]
        print(f"{label:34s} {min(runs):7.2f} s  (runs {', '.join(f'{x:.2f}' for x in runs)})", flush=True)
        return min(runs)

    fig: dict = {"figure": "feature_stages", "events": n_events, "users": n_users}
    floor = best("floor (bare GROUP BY user_id)", lambda: con.execute(floor_sql(path)).fetchall())
    fig["floor_s"] = round(floor, 2)
    for name, sql in lower_bound_sql("events", cutoff, cfg).items():
        fig[f"{name}_x_floor"] = round(
            best(name, lambda sql=sql: con.execute(f"CREATE OR REPLACE TEMP TABLE lb AS {sql}")) / floor, 2
        )
    run = Runner(con)
    days = [split_instant(cutoff)[0]]

    def facts_only():
        f = build_facts(run, "events", [cutoff], feature_bounds(days, cfg))
        run.drop(f.names())

    fig["interval_facts_and_side_tables_x_floor"] = round(best("siyu fact tables", facts_only) / floor, 2)

    stages: dict[str, float] | None = None
    for _ in range(a.runs):
        timer = TimedRunner(con)
        _, total = timed(lambda timer=timer: features_on(timer, [cutoff], cfg))
        steps = dict(timer.steps)
        steps["python (sort, NaN, frame)"] = total - sum(steps.values())
        if stages is None or total < stages["total"]:
            stages = {**steps, "total": total}
    print("one cutoff, by step (the fastest run):")
    for name, sec in stages.items():
        print(f"  {name:32s} {sec:7.2f} s  {sec / floor:5.2f}x floor")
        fig[f"stage_{name.split(' ')[0].replace('+', '_')}_x_floor"] = round(sec / floor, 2)
    fig["one_cutoff_s"] = round(stages["total"], 2)
    print(json.dumps(fig), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
