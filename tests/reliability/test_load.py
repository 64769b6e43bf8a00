"""Load: single-user /predict at 70% of the measured max throughput against a real `bentoml serve`.

Proves: 0 errors, p99 steady (last window vs first window), server RSS growth under 10%.
The CI version runs 20 s; the slow one 5 minutes (first vs last minute).
"""

from __future__ import annotations

import threading
import time

import pytest

from reliability.load import have_wrk, max_throughput, run_load, wrk_paced, wrk_run
from reliability.results import env_float, record

LOAD_FRACTION = 0.7
RSS_GROWTH_MAX = 0.10


def _p99_steady(first: float, last: float, ratio: float, slack_s: float) -> bool:
    """Last-window p99 within `ratio` x the first window's, or within `slack_s` of it (shared-machine noise)."""
    return last <= first * ratio or last - first <= slack_s


def _load_check(api, user_ids, seconds: float, window: float, ratio: float, slack_s: float, name: str,
                fraction: float = LOAD_FRACTION) -> None:
    peak = max_throughput(api.url, user_ids, api.headers, seconds=env_float("SIYU_REL_MAX_SECONDS", 8))
    assert peak > 5, f"max throughput {peak:.1f} req/s: the server barely answers"
    rate = fraction * peak
    rss: list[tuple[float, int]] = []
    done = threading.Event()

    def sample_rss():
        t0 = time.monotonic()
        while not done.is_set():
            rss.append((time.monotonic() - t0, api.rss_bytes()))
            done.wait(1.0)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    res = run_load(api.url, user_ids, api.headers, rate, seconds)
    done.set()
    sampler.join()
    rss_start, rss_end = rss[0][1], rss[-1][1]
    growth = rss_end / rss_start - 1
    p99_first, p99_last = res.p99(0, window), res.p99(seconds - window, seconds)
    errors = res.errors()
    ok = not errors and _p99_steady(p99_first, p99_last, ratio, slack_s) and growth < RSS_GROWTH_MAX
    record(name, ok, seconds=seconds, max_rps=round(peak, 1), target_rps=round(rate, 1),
           achieved_rps=round(res.achieved_rps(), 1), requests=len(res.samples), errors=len(errors),
           p99_first_ms=round(p99_first * 1000, 1), p99_last_ms=round(p99_last * 1000, 1),
           window_s=window, rss_start_mb=round(rss_start / 2**20, 1), rss_end_mb=round(rss_end / 2**20, 1),
           rss_growth_pct=round(100 * growth, 2))
    assert not errors, f"{len(errors)} failed requests, e.g. {errors[:3]}"
    assert _p99_steady(p99_first, p99_last, ratio, slack_s), \
        f"p99 drifted: first {p99_first * 1000:.1f} ms -> last {p99_last * 1000:.1f} ms"
    assert growth < RSS_GROWTH_MAX, f"server RSS grew {100 * growth:.1f}% ({rss_start} -> {rss_end} bytes)"
    assert res.achieved_rps() > 0.8 * rate, f"offered {rate:.1f} req/s, achieved {res.achieved_rps():.1f}"


def test_load_short(api, user_ids):
    """20 s at 50% of max: no errors, steady p99 (first vs last 5 s), RSS growth < 10%.

    The CI smoke version offers half the max, not 70%: the load generator shares the
    2 cores with the server, and at 70% a short run on a busy machine builds a queue
    that says more about the machine than the service (the 5-minute run keeps 70%).
    wrk is the client when installed; the Python client (no wrk) collapsed once in a full
    reliability run (p99 5.6 ms -> 12 s) while the server was idle-fast.
    """
    check = _load_check_wrk if have_wrk() else _load_check
    check(api, user_ids, seconds=20, window=5, ratio=3.0, slack_s=0.25, name="load_short", fraction=0.5)


def _load_check_wrk(api, user_ids, seconds: float, window: float, ratio: float, slack_s: float, name: str,
                    fraction: float = LOAD_FRACTION) -> None:
    """_load_check with wrk as the client: max closed loop, then `fraction` of it paced, one p99 per window."""
    peak = wrk_run(api.url, user_ids, api.headers, env_float("SIYU_REL_MAX_SECONDS", 8)).rps
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
        wins = wrk_paced(api.url, user_ids, api.headers, rate, seconds, window)
    finally:
        done.set()
        sampler.join()
    growth = rss[-1] / rss[0] - 1
    errors = sum(w.errors for w in wins)
    achieved = sum(w.requests for w in wins) / sum(w.seconds for w in wins)
    # The first window also tunes the pacing: steadiness compares the second window with the last.
    first, last = (wins[1] if len(wins) > 2 else wins[0]).p99_ms / 1000, wins[-1].p99_ms / 1000
    steady = _p99_steady(first, last, ratio, slack_s)
    ok = not errors and steady and growth < RSS_GROWTH_MAX and achieved > 0.8 * rate
    record(name, ok, client="wrk", seconds=seconds, max_rps=round(peak, 1), target_rps=round(rate, 1),
           achieved_rps=round(achieved, 1), requests=sum(w.requests for w in wins), errors=errors,
           p99_first_ms=round(first * 1000, 1), p99_last_ms=round(last * 1000, 1),
           p99_per_window_ms=[round(w.p99_ms, 1) for w in wins], rps_per_window=[round(w.rps) for w in wins],
           window_s=window, rss_start_mb=round(rss[0] / 2**20, 1), rss_end_mb=round(rss[-1] / 2**20, 1),
           rss_growth_pct=round(100 * growth, 2))
    assert not errors, f"{errors} failed requests"
    assert steady, f"p99 drifted: {first * 1000:.1f} ms -> {last * 1000:.1f} ms"
    assert growth < RSS_GROWTH_MAX, f"server RSS grew {100 * growth:.1f}% ({rss[0]} -> {rss[-1]} bytes)"
    assert achieved > 0.8 * rate, f"offered {rate:.1f} req/s, achieved {achieved:.1f}"


@pytest.mark.slow
@pytest.mark.reliability
@pytest.mark.timeout(900)
def test_load_5_minutes(api, user_ids):
    """5 minutes at 70% of max: no errors, p99 of the last minute vs the first, RSS growth < 10%.

    With wrk installed it is the client (the Python client cannot hold 70% of max for minutes
    on 2 shared cores: its backlog, not the server, then sets the latency).
    """
    seconds = env_float("SIYU_REL_LOAD_SECONDS", 300)
    check = _load_check_wrk if have_wrk() else _load_check
    check(api, user_ids, seconds=seconds, window=min(60, seconds / 5), ratio=2.0, slack_s=0.025, name="load_5min")
