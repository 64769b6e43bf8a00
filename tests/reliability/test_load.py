"""Load: single-user /predict at 70% of the measured max throughput against a real `bentoml serve`.

Proves: 0 errors, p99 steady (last window vs first window), server RSS growth under 10%.
The CI version runs 20 s; the slow one 5 minutes (first vs last minute).
"""

from __future__ import annotations

import threading

import pytest

from reliability.load import have_wrk, max_throughput, run_load, wrk_paced, wrk_run
from reliability.results import env_float, record

LOAD_FRACTION = 0.7
RSS_GROWTH_MAX = 0.10


def _p99_steady(first: float, last: float, ratio: float, slack_s: float) -> bool:
    """Last-window p99 within `ratio` x the first window's, or within `slack_s` of it (shared-machine noise)."""
    return last <= first * ratio or last - first <= slack_s


def _python_load(api, user_ids, rate: float, seconds: float, window: float) -> dict:
    """The load from the asyncio open-loop client (latency timed from each scheduled send)."""
    res = run_load(api.url, user_ids, api.headers, rate, seconds)
    errors = res.errors()
    return {
        "achieved": res.achieved_rps(),
        "requests": len(res.samples),
        "errors": len(errors),
        "error_examples": errors[:3],
        "p99_first": res.p99(0, window),
        "p99_last": res.p99(seconds - window, seconds),
        "figures": {},
    }


def _wrk_load(api, user_ids, rate: float, seconds: float, window: float) -> dict:
    """The load from wrk, paced in windows of `window` seconds (one p99 each)."""
    wins = wrk_paced(api.url, user_ids, api.headers, rate, seconds, window)
    # The first window also tunes the pacing: steadiness compares the second window with the last.
    first = wins[1] if len(wins) > 2 else wins[0]
    return {
        "achieved": sum(w.requests for w in wins) / sum(w.seconds for w in wins),
        "requests": sum(w.requests for w in wins),
        "errors": sum(w.errors for w in wins),
        "error_examples": [],
        "p99_first": first.p99_ms / 1000,
        "p99_last": wins[-1].p99_ms / 1000,
        "figures": {
            "client": "wrk",
            "p99_per_window_ms": [round(w.p99_ms, 1) for w in wins],
            "rps_per_window": [round(w.rps) for w in wins],
        },
    }


def _load_check(
    api,
    user_ids,
    seconds: float,
    window: float,
    ratio: float,
    slack_s: float,
    name: str,
    fraction: float = LOAD_FRACTION,
) -> None:
    """Max throughput, then `fraction` of it for `seconds`: 0 errors, steady p99, RSS growth, rate held.

    wrk is the client when installed: the Python client cannot hold 70% of max for minutes on
    2 shared cores (its backlog, not the server, then sets the latency; once p99 5.6 ms -> 12 s
    in a 20 s run while the server was idle-fast).
    """
    wrk, max_s = have_wrk(), env_float("SIYU_REL_MAX_SECONDS", 8)
    peak = (
        wrk_run(api.url, user_ids, api.headers, max_s).rps
        if wrk
        else max_throughput(api.url, user_ids, api.headers, seconds=max_s)
    )
    assert peak > 5, f"max throughput {peak:.1f} req/s: the server barely answers"
    rate = fraction * peak
    rss: list[int] = []
    done = threading.Event()

    def sample_rss():
        while not done.is_set():
            rss.append(api.rss_bytes())
            done.wait(1.0)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    try:
        run = (_wrk_load if wrk else _python_load)(api, user_ids, rate, seconds, window)
    finally:
        done.set()
        sampler.join()
    growth = rss[-1] / rss[0] - 1
    first, last, errors = run["p99_first"], run["p99_last"], run["errors"]
    steady = _p99_steady(first, last, ratio, slack_s)
    ok = not errors and steady and growth < RSS_GROWTH_MAX and run["achieved"] > 0.8 * rate
    record(
        name,
        ok,
        seconds=seconds,
        max_rps=round(peak, 1),
        target_rps=round(rate, 1),
        achieved_rps=round(run["achieved"], 1),
        requests=run["requests"],
        errors=errors,
        p99_first_ms=round(first * 1000, 1),
        p99_last_ms=round(last * 1000, 1),
        **run["figures"],
        window_s=window,
        rss_start_mb=round(rss[0] / 2**20, 1),
        rss_end_mb=round(rss[-1] / 2**20, 1),
        rss_growth_pct=round(100 * growth, 2),
    )
    assert not errors, f"{errors} failed requests, e.g. {run['error_examples']}"
    assert steady, f"p99 drifted: first {first * 1000:.1f} ms -> last {last * 1000:.1f} ms"
    assert growth < RSS_GROWTH_MAX, f"server RSS grew {100 * growth:.1f}% ({rss[0]} -> {rss[-1]} bytes)"
    assert run["achieved"] > 0.8 * rate, f"offered {rate:.1f} req/s, achieved {run['achieved']:.1f}"


def test_load_short(api, user_ids):
    """20 s at 50% of max: no errors, steady p99 (first vs last 5 s), RSS growth < 10%.

    The CI smoke version offers half the max, not 70%: the load generator shares the
    2 cores with the server, and at 70% a short run on a busy machine builds a queue
    that says more about the machine than the service (the 5-minute run keeps 70%).
    """
    _load_check(api, user_ids, seconds=20, window=5, ratio=3.0, slack_s=0.25, name="load_short", fraction=0.5)


@pytest.mark.slow
@pytest.mark.reliability
@pytest.mark.timeout(900)
def test_load_5_minutes(api, user_ids):
    """5 minutes at 70% of max: no errors, p99 of the last minute vs the first, RSS growth < 10%."""
    seconds = env_float("SIYU_REL_LOAD_SECONDS", 300)
    _load_check(api, user_ids, seconds=seconds, window=min(60, seconds / 5), ratio=2.0, slack_s=0.025, name="load_5min")
