"""The main job (`siyu demo`): the whole pipeline on the built-in world, end to end.

simulate → validate → features + training (MLflow, registry gate) → batch score
→ start the API (`bentoml serve`) → one real HTTP request → where to look next.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
from rich.console import Console

from serving.launch import free_port, stop_server, wait_ready
from siyu.config import Config
from siyu.errors import SiyuError


@dataclass
class DemoResult:
    """What the demo produced and how long each step took."""

    out_dir: Path
    scores: Path
    api_url: str
    request: dict
    response: dict
    seconds: dict[str, float] = field(default_factory=dict)


def start_api(cfg: Config, scores: Path, port: int, log: Path) -> subprocess.Popen:
    """Start `siyu serve` (a real `bentoml serve`) on 127.0.0.1 in its own process group."""
    cmd = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port), "--scores", str(scores)]
    if cfg.source:
        cmd += ["--config", str(cfg.source)]
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def example_request(scores: Path, n: int = 2) -> dict:
    """A request for the pool's riskiest users (by churn score) in the snapshot."""
    df = pd.read_parquet(scores, columns=["user_id", "p_churn"])
    ids = df.sort_values("p_churn", ascending=False, na_position="last").user_id.head(n).tolist()
    return {"user_ids": ids}


def run_demo(
    cfg: Config,
    out_dir: Path,
    users: int = 20_000,
    days: int = 365,
    seed: int = 42,
    port: int = 3000,
    keep_serving: bool = False,
    console: Console | None = None,
) -> DemoResult:
    """Run the whole pipeline on a simulated world and call the API once.

    Args:
        cfg: configuration (its `.siyu/` home holds the MLflow store and snapshots).
        out_dir: where the world, validated events, scores and logs go.
        users: simulated users; days: simulated days; seed: simulation seed.
        port: preferred API port on 127.0.0.1 (another free one is used if taken).
        keep_serving: leave the API running after the demo (Ctrl-C stops it).
        console: where progress goes.

    Returns:
        DemoResult with paths, the request and response, and timings.
    """
    from events.validate import print_report, validate_file
    from serving.batch import score_pool
    from simulation.simulator import simulate_world
    from training.summary import print_train_result
    from training.train import train_all

    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    secs: dict[str, float] = {}

    def step(name: str) -> float:
        console.rule(f"[bold]{name}")
        return time.perf_counter()

    t = step(f"1/5 simulate {users:,} users x {days} days")
    world = out_dir / "world"
    summary = simulate_world(cfg, users=users, days=days, seed=seed, out_dir=world)
    from simulation.report import print_summary

    print_summary(summary, console)
    secs["simulate"] = time.perf_counter() - t

    t = step("2/5 validate the event log")
    report = validate_file(world / "events.parquet", cfg, out_dir / "validated")
    print_report(report, console)
    report.raise_if_over_threshold()
    # Training reads the simulator's folder so it finds the oracle beside the events.
    events = world / "events.parquet"
    secs["validate"] = time.perf_counter() - t

    t = step("3/5 features, training and registry (MLflow)")
    result = train_all(events, cfg)
    print_train_result(result, console)
    secs["train"] = time.perf_counter() - t

    t = step("4/5 batch-score the pool")
    asof = datetime.fromisoformat(report.ts_max).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    scores = out_dir / "scores.parquet"
    score_pool(events, asof, scores, cfg)
    secs["score"] = time.perf_counter() - t

    t = step("5/5 start the API and send one real request")
    port = free_port(port)
    url = f"http://127.0.0.1:{port}"
    log = out_dir / "api.log"
    proc = start_api(cfg, scores, port, log)
    try:
        wait_ready(url, proc, log)
        request = example_request(scores)
        token = cfg.serving.api_token
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
        resp = httpx.post(f"{url}/predict", json=request, headers=headers, timeout=30)
        if resp.status_code != 200:
            raise SiyuError(f"POST /predict answered {resp.status_code}: {resp.text[:300]}")
        answer = resp.json()
        console.print(f"$ curl -s -X POST {url}/predict -H 'Content-Type: application/json' -d '{json.dumps(request)}'")
        console.print_json(json.dumps(answer))
        secs["serve"] = time.perf_counter() - t
        _where_to_look(console, cfg, scores, url, keep_serving)
        if keep_serving:
            console.print("serving; Ctrl-C stops the API")
            proc.wait()
    finally:
        if not keep_serving or proc.poll() is None:
            stop_server(proc)
    total = sum(secs.values())
    console.print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in secs.items()) + f"; total {total:.1f} s")
    return DemoResult(out_dir=out_dir, scores=scores, api_url=url, request=request, response=answer, seconds=secs)


def _where_to_look(console: Console, cfg: Config, scores: Path, url: str, keep_serving: bool) -> None:
    console.rule("[bold]where to look")
    console.print(f"scores (the API's snapshot): {scores.resolve()}")
    console.print(
        f"MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {cfg.tracking_uri()} "
        "--host 127.0.0.1 --port 5000  → http://127.0.0.1:5000"
    )
    state = "" if keep_serving else " (stopped now; start it again with `.venv/bin/siyu serve`)"
    console.print(f"API docs:   {url}/docs{state}")
