"""Figures the reliability tests measured: printed, and appended as JSON lines to
`$SIYU_RELIABILITY_RESULTS` when set (benchmarks/reliability.py collects them)."""

from __future__ import annotations

import json
import os
import time

RESULTS_ENV = "SIYU_RELIABILITY_RESULTS"
FULL_ENV = "SIYU_RELIABILITY_FULL"


def record(check: str, passed: bool, **figures) -> None:
    """Write one check's figures (and whether its thresholds held)."""
    row = {"check": check, "passed": bool(passed), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures}
    print(f"[reliability] {json.dumps(row, default=str)}")
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=str) + "\n")


def env_float(name: str, default: float) -> float:
    """A duration or count override from the environment (the driver lengthens runs this way)."""
    return float(os.environ.get(name, default))
