"""A real `siyu serve` (BentoML) process on 127.0.0.1 for the reliability tests: start, wait, inspect, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from app.demo import free_port

WORKER_MODULE = "_bentoml_impl.worker.service"
PYCACHE = str(Path(tempfile.gettempdir()) / "siyu-reliability-pycache")


@dataclass
class Server:
    """A running API: its arbiter process, URL, log file and bearer token."""

    proc: subprocess.Popen
    url: str
    log: Path
    token: str | None
    env: dict = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def workers(self) -> list[psutil.Process]:
        """The BentoML worker processes (children of the arbiter running the service)."""
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        out = []
        for p in kids:
            try:
                if WORKER_MODULE in " ".join(p.cmdline()):
                    out.append(p)
            except psutil.NoSuchProcess:
                continue
        return out

    def rss_bytes(self) -> int:
        """Resident memory of the arbiter and every process under it."""
        total = 0
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total


def start_server(
    cfg_path: Path,
    scores: Path,
    workdir: Path,
    token: str | None = "rel-token-0123456789",
    extra_env: dict[str, str] | None = None,
    workers: int | None = None,
) -> Server:
    """Start `siyu serve` on a free loopback port in its own process group (stdout+stderr to a log)."""
    port = free_port(0)
    env = dict(os.environ)
    env.pop("SIYU_API_TOKEN", None)
    if token:
        env["SIYU_API_TOKEN"] = token
    env.setdefault("SIYU_HOME", str(workdir / "home"))
    # A deployed image has compiled bytecode; this sandbox sets PYTHONDONTWRITEBYTECODE and the venv has
    # no .pyc, so every worker start would recompile mlflow/sklearn/lightgbm (~15-25 s). Cache it aside.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = PYCACHE
    env.update(extra_env or {})
    log = workdir / f"api-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "app",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--scores",
        str(scores),
        "--config",
        str(cfg_path),
        *(["--workers", str(workers)] if workers else []),
    ]
    proc = subprocess.Popen(
        cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True
    )
    return Server(proc, f"http://127.0.0.1:{port}", log, token, env)


def wait_status(server: Server, path: str = "/readyz", status: int = 200, timeout: float = 120) -> float:
    """Poll `path` until it answers `status`; return the seconds it took (AssertionError on timeout/exit)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited ({server.proc.returncode}):\n{server.log_text()[-3000:]}")
        try:
            if httpx.get(server.url + path, timeout=2, headers=server.headers).status_code == status:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{path} did not answer {status} within {timeout} s:\n{server.log_text()[-3000:]}")


def stop_server(server: Server) -> None:
    """SIGTERM the process group, SIGKILL after 20 s."""
    if server.proc.poll() is None:
        try:
            os.killpg(server.proc.pid, signal.SIGTERM)
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
