"""Benchmark the prediction API over real HTTP on loopback, against a bare uvicorn floor in the same run.

    .venv/bin/python benchmarks/bench_api.py --users 2000 [--seconds 10] [--connections 8]

Starts `siyu serve` (the real `bentoml serve`, 1 worker) and benchmarks/bare_api.py
under uvicorn (1 worker: lookup + booster predict, nothing else), both on the
same snapshot and champions, then measures:
- max throughput of single-user /predict (closed loop; wrk when installed,
  else a minimal asyncio HTTP client) for both, and the ratio (goal >= 50%);
- p50 / p99 latency of single-user /predict at half the service's max load
  (open loop at a fixed rate, timed from the scheduled send; goal p99 <= 15 ms),
  and of the bare endpoint at the same rate (the tail the machine itself adds);
- latency of a 1,000-user /predict request (goal < 50 ms).
Prints readable lines on stderr and one JSON object per figure on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_setup import HERE, log, snapshot, trained  # noqa: E402

from serving.launch import free_port, stop_server, wait_ready  # noqa: E402

sys.path.insert(0, str(HERE.parent / "tests"))
from reliability.load import have_wrk, wrk_paced, wrk_run  # noqa: E402


def start(argv: list[str], env: dict, logfile: Path) -> subprocess.Popen:
    return subprocess.Popen(
        argv, env=env, stdout=logfile.open("wb"), stderr=subprocess.STDOUT, start_new_session=True, cwd=HERE.parent
    )


def wrk_rps(url: str, ids: list[str], seconds: int, conns: int) -> float:
    """Closed-loop max throughput of single-user /predict with wrk (the users in turn); any error stops the run."""
    w = wrk_run(url, ids, {}, seconds, conns)
    if w.errors:
        raise SystemExit(f"{w.errors} errors under load at {url}")
    return w.rps


class RawClient:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: cheap enough not to be the bottleneck."""

    def __init__(self, host: str, port: int, conns: int):
        self.host, self.port, self.conns = host, port, conns
        self.pool: asyncio.Queue = asyncio.Queue()

    async def __aenter__(self) -> RawClient:
        for _ in range(self.conns):
            self.pool.put_nowait(await asyncio.open_connection(self.host, self.port))
        return self

    async def __aexit__(self, *exc) -> None:
        while not self.pool.empty():
            self.pool.get_nowait()[1].close()

    async def post(self, path: str, body: bytes) -> None:
        r, w = await self.pool.get()
        w.write(
            b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (path.encode(), len(body))
            + body
        )
        head = await r.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"non-200 answer under load: {head[:80]!r}")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        await r.readexactly(length)
        self.pool.put_nowait((r, w))


def _body(ids: list[str]) -> bytes:
    return json.dumps({"user_ids": [random.choice(ids)]}).encode()


async def raw_rps(port: int, ids: list[str], seconds: int, conns: int) -> float:
    """Closed-loop max throughput with the raw client (when wrk is not installed)."""
    done, end = 0, time.monotonic() + seconds

    async def worker(c: RawClient) -> None:
        nonlocal done
        while time.monotonic() < end:
            await c.post("/predict", _body(ids))
            done += 1

    async with RawClient("127.0.0.1", port, conns) as c:
        await asyncio.gather(*(worker(c) for _ in range(conns)))
    return done / seconds


async def open_loop(port: int, ids: list[str], rate: float, seconds: int) -> tuple[np.ndarray, float]:
    """Latencies (ms) of single-user requests sent at a fixed rate, and the rate achieved.

    Latency counts from the scheduled send time, so waiting for a free connection
    is included (no coordinated omission).
    """
    lat: list[float] = []

    async def one(c: RawClient, due: float) -> None:
        await c.post("/predict", _body(ids))
        lat.append((time.perf_counter() - due) * 1e3)

    async with RawClient("127.0.0.1", port, 32) as c:
        tasks, t0, n = [], time.perf_counter(), int(rate * seconds)
        for k in range(n):
            due = t0 + k / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(c, due)))
        await asyncio.gather(*tasks)
        achieved = n / (time.perf_counter() - t0)
    return np.array(lat), achieved


def half_load(siyu_url: str, bare_url: str, ids: list[str], rate: float, seconds: int):
    """(achieved rate, p50, p99 of the service, p50, p99 of the bare endpoint) at `rate`, in ms.

    wrk paces its connections when installed; the asyncio open-loop client otherwise (on 2 cores
    that client's own scheduling then shows in the tail: see the bare endpoint's figures).
    """
    if have_wrk():
        s = wrk_paced(siyu_url, ids, {}, rate, seconds + 2, window=seconds + 2)[-1]
        b = wrk_paced(bare_url, ids, {}, rate, seconds + 2, window=seconds + 2)[-1]
        return s.rps, s.p50_ms, s.p99_ms, b.p50_ms, b.p99_ms
    lat, achieved = asyncio.run(open_loop(int(siyu_url.rsplit(":", 1)[1]), ids, rate, seconds))
    blat, _ = asyncio.run(open_loop(int(bare_url.rsplit(":", 1)[1]), ids, rate, seconds))
    return (achieved, *np.percentile(lat, [50, 99]), *np.percentile(blat, [50, 99]))


def big_request(url: str, ids: list[str], reps: int = 20) -> np.ndarray:
    body = {"user_ids": ids[:1000]}
    with httpx.Client(base_url=url, timeout=30) as c:
        c.post("/predict", json=body).raise_for_status()  # warm-up
        out = []
        for _ in range(reps):
            t = time.perf_counter()
            r = c.post("/predict", json=body)
            out.append((time.perf_counter() - t) * 1e3)
            assert r.status_code == 200 and len(r.json()["predictions"]) == 1000
    return np.array(out)


def emit(**fig) -> None:
    print(json.dumps(fig), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000, help="simulated users served (the snapshot)")
    ap.add_argument("--train-users", type=int, default=20000, help="world the champions are trained on")
    ap.add_argument("--seconds", type=int, default=10, help="duration of each load phase")
    ap.add_argument("--connections", type=int, default=8, help="concurrent connections for max throughput")
    a = ap.parse_args()
    cfg = trained(a.train_users)
    snap = snapshot(cfg, a.users)
    import pandas as pd

    ids = pd.read_parquet(snap, columns=["user_id"]).user_id.tolist()
    random.seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    env = {**os.environ, "SIYU_SCORES": str(snap)}
    env.pop("SIYU_API_TOKEN", None)
    ps, pb = free_port(), free_port()
    siyu = start(
        [sys.executable, "-m", "app", "serve", "--port", str(ps), "--scores", str(snap)], env, tmp / "siyu.log"
    )
    bare = start(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(HERE),
            "bare_api:app",
            "--port",
            str(pb),
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env,
        tmp / "bare.log",
    )
    try:
        us, ub = f"http://127.0.0.1:{ps}", f"http://127.0.0.1:{pb}"
        wait_ready(us, siyu, timeout=240)
        wait_ready(ub, bare, timeout=240)
        tool = "wrk" if have_wrk() else "asyncio"
        rps = {}
        for name, url in (("bare", ub), ("siyu", us), ("bare", ub), ("siyu", us)):  # interleaved: drift cancels
            r = (
                wrk_rps(url, ids, a.seconds, a.connections)
                if tool == "wrk"
                else asyncio.run(raw_rps(int(url.rsplit(":", 1)[1]), ids, a.seconds, a.connections))
            )
            rps[name] = max(rps.get(name, 0.0), r)
            log(f"max throughput {name:5s} ({tool}, {a.connections} conns): {r:8.0f} req/s")
        ratio = rps["siyu"] / rps["bare"]
        log(f"siyu / bare throughput: {ratio:.0%} (goal >= 50%)")
        emit(
            figure="single-user /predict max throughput",
            siyu_rps=round(rps["siyu"]),
            bare_rps=round(rps["bare"]),
            ratio=round(ratio, 3),
            goal=">= 0.5",
            client=tool,
            connections=a.connections,
            users=a.users,
        )
        achieved, p50, p99, b50, b99 = half_load(us, ub, ids, rps["siyu"] / 2, a.seconds)
        log(f"half load ({achieved:.0f} req/s, {tool}): p50 {p50:.2f} ms, p99 {p99:.2f} ms (goal p99 <= 15 ms)")
        log(f"  bare at the same rate: p50 {b50:.2f} ms, p99 {b99:.2f} ms (noise floor of this run)")
        emit(
            figure="single-user /predict latency at half max load",
            rate_rps=round(achieved),
            p50_ms=round(p50, 2),
            p99_ms=round(p99, 2),
            bare_p50_ms=round(b50, 2),
            bare_p99_ms=round(b99, 2),
            client=tool,
            goal="p99 <= 15 ms",
        )
        big = big_request(us, ids)
        log(f"1,000-user request: p50 {np.median(big):.1f} ms, max {big.max():.1f} ms (goal < 50 ms)")
        emit(
            figure="1000-user /predict latency",
            p50_ms=round(float(np.median(big)), 1),
            max_ms=round(float(big.max()), 1),
            reps=len(big),
            goal="< 50 ms",
        )
    finally:
        stop_server(siyu)
        stop_server(bare)


if __name__ == "__main__":
    main()
