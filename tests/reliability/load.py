"""An open-loop HTTP load generator (asyncio + httpx) for single-user `/predict` requests.

Open loop: request i is sent at t0 + i / rate whether or not earlier ones have
answered, so a slow server shows up as latency, not as a lower offered rate.
Latency is measured from the scheduled send time (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field

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
        r = await client.post(url, json=body, headers=headers,
                              timeout=httpx.Timeout(timeout, pool=None))
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


def max_throughput(base_url: str, ids: list[str], headers: dict, seconds: float = 8.0,
                   concurrency: int = CONNECTIONS) -> float:
    """Measured max successful single-user /predict requests per second."""
    return asyncio.run(_closed(base_url + "/predict", ids, headers, seconds, concurrency))


async def _open(url: str, ids: list[str], headers: dict, rate: float, seconds: float,
                out: LoadResult, stop: threading.Event | None) -> None:
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


def run_load(base_url: str, ids: list[str], headers: dict, rate: float, seconds: float,
             stop: threading.Event | None = None) -> LoadResult:
    """Send single-user /predict requests at `rate` per second for `seconds` (or until `stop`)."""
    out = LoadResult()
    asyncio.run(_open(base_url + "/predict", ids, headers, rate, seconds, out, stop))
    return out


def run_load_in_thread(base_url: str, ids: list[str], headers: dict, rate: float, seconds: float,
                       stop: threading.Event | None = None) -> tuple[threading.Thread, LoadResult]:
    """run_load in a background thread; join the thread, then read the result."""
    out = LoadResult()
    th = threading.Thread(target=lambda: asyncio.run(_open(base_url + "/predict", ids, headers, rate, seconds,
                                                           out, stop)), daemon=True)
    th.start()
    return th, out
