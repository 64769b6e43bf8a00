#!/usr/bin/env python3
"""Project tasks; sets up `.venv` from the lock file on first use.

    python3 tasks.py demo      # the main job on the built-in world
    python3 tasks.py test      # the test suite (what CI runs)
    python3 tasks.py help      # every task

Needs only Python 3.11 and the package registry: it creates `.venv`, installs
the pinned `uv` into it, and syncs `requirements.lock` exactly. A stamp file
holds the lock's hash, so later runs skip the install unless the lock changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
LOCK = ROOT / "requirements.lock"
UV_VERSION = "0.13.9"
BIN = VENV / "bin"

TASKS = {
    "demo": ("the main job: simulate, validate, features, train, score, serve, one request", ["siyu", "demo"]),
    "test": (
        "ruff (lint + format check), then the default test suite (not the slow ones); what CI runs",
        ["pytest", "-m", "not slow", "-q", "--durations=15"],
    ),
    "lint": ("ruff lint and format check (part of `test`)", None),
    "test-all": ("every test, the slow ones too", ["pytest", "-q"]),
    "validate-sample": (
        "validate the bundled messy sample log",
        ["siyu", "validate", "tests/data/messy_events.csv", "--out", "out/validate"],
    ),
    "reliability": (
        "the reliability suite: load, faults, fuzz, crash safety, security (--quick: CI parts)",
        ["python", "benchmarks/reliability.py"],
    ),
    "bench": (
        "benchmarks (see benchmarks/README.md); pass --scale small|large [--only NAME ...]",
        ["python", "benchmarks/run.py"],
    ),
    "setup": ("create .venv from requirements.lock (every task does this when needed)", None),
    "lock": ("re-resolve requirements.lock from pyproject.toml", None),
}


def _lock_hash() -> str:
    # The setup steps are part of the stamp: a venv made by an older setup() is refreshed.
    parts = LOCK.read_bytes() + (ROOT / "pyproject.toml").read_bytes() + b"compile-bytecode"
    return hashlib.sha256(parts).hexdigest()


def setup() -> None:
    """Create or refresh `.venv` so it matches the lock file exactly."""
    stamp = VENV / ".siyu-lock-hash"
    if stamp.is_file() and stamp.read_text() == _lock_hash():
        return
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"siyu needs Python 3.11, this is {sys.version.split()[0]}")
    print(f"setting up {VENV} from {LOCK.name} ...", flush=True)
    if not (BIN / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    run = lambda *a: subprocess.run(list(a), check=True, cwd=ROOT)  # noqa: E731
    run(str(BIN / "python"), "-m", "pip", "install", "-q", f"uv=={UV_VERSION}")
    env_uv = [str(BIN / "uv"), "pip"]
    os.environ["VIRTUAL_ENV"] = str(VENV)
    # Bytecode now, as pip does by default: where PYTHONDONTWRITEBYTECODE is set, every process
    # would otherwise recompile mlflow, sklearn, ... on import (seconds per command).
    run(*env_uv, "sync", "-q", "--compile-bytecode", str(LOCK))
    run(*env_uv, "install", "-q", "--no-deps", "-e", str(ROOT))
    stamp.write_text(_lock_hash())


def lock() -> None:
    setup()
    subprocess.run(
        [
            str(BIN / "uv"),
            "pip",
            "compile",
            "pyproject.toml",
            "--extra",
            "dev",
            "--python-version",
            "3.11",
            "--generate-hashes",
            "-o",
            str(LOCK),
        ],
        check=True,
        cwd=ROOT,
    )


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"help", "-h", "--help"}:
        print(__doc__)
        for name, (what, _) in TASKS.items():
            print(f"  {name:<16} {what}")
        return 0
    name, extra = argv[0], argv[1:]
    if name not in TASKS:
        print(f"unknown task {name!r}; try: python3 tasks.py help", file=sys.stderr)
        return 2
    if name == "lock":
        lock()
        return 0
    setup()
    env = dict(os.environ, VIRTUAL_ENV=str(VENV), PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.setdefault("PYSPARK_PYTHON", str(BIN / "python"))
    if name in {"test", "lint"}:
        for check in (["check", "."], ["format", "--check", "."]):
            if subprocess.run([str(BIN / "ruff"), *check], cwd=ROOT, env=env).returncode:
                print("ruff found problems: `.venv/bin/ruff check --fix . && .venv/bin/ruff format .` fixes most")
                return 1
    cmd = TASKS[name][1]
    if cmd is None:
        return 0
    exe = str(BIN / cmd[0]) if (BIN / cmd[0]).exists() else cmd[0]
    return subprocess.run([exe, *cmd[1:], *extra], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
