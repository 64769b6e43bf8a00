"""An open-loop HTTP load generator (asyncio + httpx) for single-user `/predict` requests.

Open loop: request i is sent at t0 + i / rate whether or not earlier ones have
answered, so a slow server shows up as latency, not as a lower offered rate.
Latency is measured from the scheduled send time (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

CONNECTIONS = 8  # client connections, in the max measurement and under load


@dataclass
class Sample:
    sent: float  # seconds since the run started (scheduled time)
    latency: float  # seconds from scheduled send to answer
    status: int  # HTTP status; 0 = connection error / timeout


@dataclass
class LoadResult:
    samples: list[Sample] = field(default_factory=list)
    seconds: float = 0.0

    def errors(self, start: float = 0.0, end: float = float("inf")) -> list[Sample]:
        return [s for s in self.samples if start <= s.sent < end and s.status != 200]

    def p99(self, start: float, end: float) -> float:
        lat = [s.latency for s in self.samples if start <= s.sent < end and s.status == 200]
        return float(np.percentile(lat, 99)) if lat else float("nan")

    def achieved_rps(self) -> float:
        return len(self.samples) / self.seconds if self.seconds else 0.0


async def _post(client: httpx.AsyncClient, url: str, body: dict, headers: dict, timeout: float) -> int:
    try:
        r = await client.post(url, json=body, headers=headers, timeout=httpx.Timeout(timeout, pool=None))
        return r.status_code
    except httpx.HTTPError:
        return 0


async def _closed(url: str, ids: list[str], headers: dict, seconds: float, concurrency: int) -> float:
    """Requests per second of `concurrency` back-to-back clients (the max throughput)."""
    done, stop = 0, time.monotonic() + seconds
    cyc = itertools.cycle(ids)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:

        async def worker():
            nonlocal done
            while time.monotonic() < stop:
                if await _post(client, url, {"user_ids": [next(cyc)]}, headers, 30) == 200:
                    done += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.monotonic() - t0)


def max_throughput(
    base_url: str, ids: list[str], headers: dict, seconds: float = 8.0, concurrency: int = CONNECTIONS
) -> float:
    """Measured max successful single-user /predict requests per second."""
    return asyncio.run(_closed(base_url + "/predict", ids, headers, seconds, concurrency))


async def _open(
    url: str, ids: list[str], headers: dict, rate: float, seconds: float, out: LoadResult, stop: threading.Event | None
) -> None:
    cyc = itertools.cycle(ids)
    # The same number of keep-alive connections as the max-throughput measurement: a backlog then
    # waits in the client's pool (counted as latency) instead of opening hundreds of connections.
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(limits=limits) as client:
        t0 = time.monotonic()
        tasks = []

        async def one(when: float, uid: str) -> None:
            status = await _post(client, url, {"user_ids": [uid]}, headers, 15)
            out.samples.append(Sample(when, time.monotonic() - t0 - when, status))

        for i in itertools.count():
            when = i / rate
            if when >= seconds or (stop is not None and stop.is_set()):
                break
            # Always yield, even when behind schedule: otherwise no request runs until the loop ends.
            await asyncio.sleep(max(0.0, t0 + when - time.monotonic()))
            tasks.append(asyncio.create_task(one(when, next(cyc))))
            if i % 1024 == 0:  # keep the task list short on long runs
                tasks = [t for t in tasks if not t.done()]
        await asyncio.gather(*tasks)
        out.seconds = time.monotonic() - t0


def run_load(
    base_url: str, ids: list[str], headers: dict, rate: float, seconds: float, stop: threading.Event | None = None
) -> LoadResult:
    """Send single-user /predict requests at `rate` per second for `seconds` (or until `stop`)."""
    out = LoadResult()
    asyncio.run(_open(base_url + "/predict", ids, headers, rate, seconds, out, stop))
    return out


def run_load_in_thread(
    base_url: str, ids: list[str], headers: dict, rate: float, seconds: float, stop: threading.Event | None = None
) -> tuple[threading.Thread, LoadResult]:
    """run_load in a background thread; join the thread, then read the result."""
    out = LoadResult()
    th = threading.Thread(
        target=lambda: asyncio.run(_open(base_url + "/predict", ids, headers, rate, seconds, out, stop)), daemon=True
    )
    th.start()
    return th, out


# --- wrk (C) as the load client, when installed: on 2 shared cores the Python client above
# --- cannot hold 70% of the server's max for minutes; wrk costs the server almost no CPU.


@dataclass
class WrkWindow:
    requests: int
    errors: int  # socket errors (connect/read/write/timeout) + non-2xx answers
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def have_wrk() -> bool:
    """Whether the wrk HTTP benchmark tool is on PATH."""
    return shutil.which("wrk") is not None


def _wrk_script(folder: Path, ids: list[str], headers: dict, delay_ms: float) -> Path:
    hdr = ", ".join(
        f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in {**headers, "Content-Type": "application/json"}.items()
    )
    path = folder / f"siyu-load-{os.getpid()}.lua"
    path.write_text(
        "local ids = {" + ",".join(json.dumps(i) for i in ids) + "}\n"
        "local n = 0\n"
        f"local hdr = {{{hdr}}}\n"
        "request = function()\n"
        "  n = n + 1\n"
        "  return wrk.format('POST', '/predict', hdr, '{\"user_ids\":[\"' .. ids[(n % #ids) + 1] .. '\"]}')\n"
        "end\n"
        + (f"delay = function() return {delay_ms:.3f} end\n" if delay_ms > 0 else "")
        + "done = function(s, latency, r)\n"
        "  local e = s.errors\n"
        "  io.write(string.format('SIYU %d %d %d %.3f %.3f\\n', s.requests, e.connect + e.read + e.write + "
        "e.timeout + e.status, s.duration, latency:percentile(50) / 1000, latency:percentile(99) / 1000))\n"
        "end\n"
    )
    return path


def wrk_run(
    base_url: str, ids: list[str], headers: dict, seconds: float, connections: int = CONNECTIONS, delay_ms: float = 0.0
) -> WrkWindow:
    """One wrk run of single-user /predict: closed loop, or paced by `delay_ms` per connection between requests."""
    with tempfile.TemporaryDirectory() as d:
        script = _wrk_script(Path(d), ids, headers, delay_ms)
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "15s",
                "-s",
                str(script),
                base_url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
    line = next((x for x in out.stdout.splitlines() if x.startswith("SIYU ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out.stdout[-500:]} {out.stderr[-500:]}")
    req, err, dur_us, p50, p99 = line.split()[1:]
    return WrkWindow(int(req), int(err), int(dur_us) / 1e6, float(p50), float(p99))


def wrk_paced(
    base_url: str,
    ids: list[str],
    headers: dict,
    rate: float,
    seconds: float,
    window: float,
    connections: int = CONNECTIONS,
) -> list[WrkWindow]:
    """About `rate` req/s for `seconds`, as consecutive wrk runs of `window` seconds (one p99 per window).

    wrk has no fixed-rate mode: each connection waits `delay` between answer and next request, and the
    delay is corrected after every window from the rate it achieved.
    """
    delay = max(0.0, 1000.0 * connections / rate - 1.0)
    windows: list[WrkWindow] = []
    while sum(w.seconds for w in windows) < seconds - 0.5:
        w = wrk_run(base_url, ids, headers, min(window, seconds - sum(x.seconds for x in windows)), connections, delay)
        windows.append(w)
        if w.rps > 0:  # per-request cycle = delay + service time; keep the service time, fix the delay
            cycle = 1000.0 * connections / w.rps
            delay = max(0.0, delay + (1000.0 * connections / rate - cycle))
    return windows
