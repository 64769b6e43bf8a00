"""`make reliability`: the whole reliability suite (long parts too), with a results summary.

    python3 tasks.py reliability            # everything: 5-minute load, 1,000+ fuzz requests, kills (~20 min)
    python3 tasks.py reliability --quick    # only the parts that run in CI (~3 min)

Runs `pytest tests/reliability` in a subprocess with SIYU_RELIABILITY_RESULTS set, so every
check appends its figures as JSON lines; then writes benchmarks/results/<date>-reliability.json
and .md (machine, command, one row per test with its outcome and figures) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def outcomes(junit: Path) -> list[dict]:
    """name, outcome (passed/failed/xfailed/skipped), seconds and message of every test in a JUnit file."""
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, msg = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, msg = "failed", (child.get("message") or "")[:300]
            elif child.tag == "skipped":
                xfail = (child.get("type") or "").endswith("xfail")
                outcome, msg = ("xfailed" if xfail else "skipped"), (child.get("message") or "")[:300]
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        rows.append({"test": name, "outcome": outcome, "seconds": round(float(case.get("time", 0)), 1), "message": msg})
    return rows


def markdown(day: str, cmd: str, mach: dict, tests: list[dict], figures: list[dict]) -> str:
    """The run as a Markdown report: test outcomes, then every recorded figure."""
    n = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "xfailed", "skipped")}
    lines = [
        f"# Reliability run {day}",
        "",
        f"Command: `{cmd}`",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in mach.items()),
        "",
        "Result: " + ", ".join(f"{v} {k}" for k, v in n.items() if v),
        "",
        "| test | outcome | s | note |",
        "|---|---|---|---|",
    ]
    for t in tests:
        lines.append(f"| `{t['test']}` | {t['outcome']} | {t['seconds']} | {t['message'].replace('|', '/')[:160]} |")
    lines += ["", "## Figures", "", "| check | thresholds held | figures |", "|---|---|---|"]
    for f in figures:
        rest = {k: v for k, v in f.items() if k not in ("check", "passed", "time")}
        lines.append(f"| {f['check']} | {'yes' if f['passed'] else 'NO'} | `{json.dumps(rest, default=str)[:600]}` |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the CI parts (not the slow ones)")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="folder for the results files")
    args, extra = ap.parse_known_args()
    sys.path.insert(0, str(HERE))
    from run import machine  # the lead's helper: cores, RAM, versions

    with tempfile.TemporaryDirectory() as d:
        figures_path, junit = Path(d) / "figures.jsonl", Path(d) / "junit.xml"
        marker = "not slow" if args.quick else "slow or not slow"
        argv = [
            sys.executable,
            "-m",
            "pytest",
            "tests/reliability",
            "-m",
            marker,
            "-q",
            "-rA",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
            *extra,
        ]
        env = dict(os.environ, SIYU_RELIABILITY_RESULTS=str(figures_path))
        shown = "python3 tasks.py reliability" + (" --quick" if args.quick else "")
        print(f"$ {' '.join(argv[2:])}", flush=True)
        t0 = time.monotonic()
        code = subprocess.run(argv, cwd=ROOT, env=env).returncode
        tests = outcomes(junit) if junit.exists() else []
        figures = [json.loads(x) for x in figures_path.read_text().splitlines()] if figures_path.exists() else []
    day = date.today().isoformat()
    mach = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{day}-reliability{'-quick' if args.quick else ''}"
    report = markdown(day, shown, mach, tests, figures)
    stem.with_suffix(".md").write_text(report)
    stem.with_suffix(".json").write_text(
        json.dumps(
            {
                "date": day,
                "command": shown,
                "machine": mach,
                "exit": code,
                "seconds": round(time.monotonic() - t0),
                "tests": tests,
                "figures": figures,
            },
            indent=1,
            default=str,
        )
    )
    print(report)
    print(f"wrote {stem}.md and .json (pytest exit {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
