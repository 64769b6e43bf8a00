"""`siyu serve`: the `bentoml serve` command line and the environment that carries siyu's settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from siyu.config import Config
from siyu.serving.snapshot import latest_snapshot, read_meta

SERVICE = "siyu.serving.service:SiyuService"


def serve_command(cfg: Config, host: str = "127.0.0.1", port: int = 3000,
                  scores: str | Path | None = None) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that start the prediction API.

    Args:
        cfg: configuration (its file is passed on as SIYU_CONFIG).
        host: interface to bind (127.0.0.1 keeps it local).
        port: TCP port.
        scores: snapshot to serve; default the latest one `siyu score` recorded.

    Returns:
        (argv for `bentoml serve`, environment for it).

    Raises:
        SiyuError: no snapshot given or recorded, or the file is not a snapshot.
    """
    path = Path(scores) if scores else latest_snapshot(cfg)
    read_meta(path)  # a bad file is a one-line error now, not a retry loop in the server log
    env = dict(os.environ)
    env["SIYU_SCORES"] = str(path.resolve())
    env["SIYU_HOME"] = str(cfg.home())
    env["MLFLOW_TRACKING_URI"] = cfg.tracking_uri()
    if cfg.source:
        env["SIYU_CONFIG"] = str(cfg.source)
    argv = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", host, "--port", str(port)]
    return argv, env


def exec_serve(argv: list[str], env: dict[str, str]) -> None:
    """Replace this process with the server (signals then reach BentoML directly)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)
