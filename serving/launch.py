"""`siyu serve`: the `bentoml serve` command line and the environment that carries siyu's settings."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from serving.snapshot import latest_snapshot, read_meta
from siyu.config import ENV_OVERRIDES, Config
from siyu.errors import SiyuError

TOKEN_ENV = next(k for k, v in ENV_OVERRIDES.items() if v == ("serving", "api_token"))

SERVICE = "serving.service:SiyuService"


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the API on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_auth(host: str, no_auth: bool, env: dict[str, str] | None = None) -> None:
    """Refuse to open the API beyond loopback without a token, unless `--no-auth` says so explicitly.

    Raises:
        SiyuError: one line saying why and what to do.
    """
    env = os.environ if env is None else env
    if is_loopback(host) or no_auth or env.get(TOKEN_ENV, "").strip():
        return
    raise SiyuError(
        f"refusing to serve on {host} without {TOKEN_ENV}: anyone who can reach it could read every user's "
        f"scores; set {TOKEN_ENV}, bind 127.0.0.1, or pass --no-auth to serve it open on purpose"
    )


def serve_command(
    cfg: Config,
    host: str = "127.0.0.1",
    port: int = 3000,
    scores: str | Path | None = None,
    workers: int | None = None,
    no_auth: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that start the prediction API.

    Args:
        cfg: configuration (its file is passed on as SIYU_CONFIG).
        host: interface to bind (127.0.0.1 keeps it local).
        port: TCP port.
        scores: snapshot to serve; default the latest one `siyu score` recorded.
        workers: worker processes (default: the service's 1). With 2 or more, a killed worker's
            share is taken by the others at once instead of after a 10-20 s restart.
        no_auth: allow a non-loopback host without SIYU_API_TOKEN (an explicit choice).

    Returns:
        (argv for `bentoml serve`, environment for it).

    Raises:
        SiyuError: no snapshot given or recorded, the file is not a snapshot, or a non-loopback
            host without a token and without no_auth.
    """
    check_auth(host, no_auth)
    path = Path(scores) if scores else latest_snapshot(cfg)
    read_meta(path)  # a bad file is a one-line error now, not a retry loop in the server log
    env = dict(os.environ)
    env["SIYU_SCORES"] = str(path.resolve())
    env["SIYU_HOME"] = str(cfg.home())
    env["MLFLOW_TRACKING_URI"] = cfg.tracking_uri()
    if cfg.source:
        env["SIYU_CONFIG"] = str(cfg.source)
    if workers is not None:
        if workers < 1:
            raise SiyuError(f"--workers must be at least 1, got {workers}")
        extra = env.get("BENTOML_CONFIG_OPTIONS", "")
        env["BENTOML_CONFIG_OPTIONS"] = f"{extra} services.siyu.workers={int(workers)}".strip()
    argv = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", host, "--port", str(port)]
    return argv, env


def exec_serve(argv: list[str], env: dict[str, str]) -> None:
    """Replace this process with the server (signals then reach BentoML directly)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)


def free_port(preferred: int = 0) -> int:
    """The preferred port if it is free on 127.0.0.1, else any free one."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise SiyuError("no free TCP port on 127.0.0.1")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a server started with start_new_session=True, and its workers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def wait_ready(url: str, proc: subprocess.Popen | None = None, log: Path | None = None, timeout: float = 180) -> None:
    """Poll `url`/readyz until it answers 200.

    Raises:
        SiyuError: the server process died (with its last log lines) or the timeout passed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log else ""
            raise SiyuError(f"the API server exited with code {proc.returncode}; last log lines:\n{tail}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SiyuError(f"the API at {url} was not ready after {timeout:.0f} s" + (f"; see {log}" if log else ""))
