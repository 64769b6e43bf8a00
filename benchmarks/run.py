"""One benchmark command: every performance figure the issues name, in one run.

    python3 tasks.py bench --scale small     # minutes; the default world (20k users)
    python3 tasks.py bench --scale large     # the 1M-user / 10M-row figures (about an hour)

Runs each benchmark script in its own process (so peak memory is its own),
collects the JSON lines they print, and writes
benchmarks/results/<date>-<scale>.json and .md with the machine, the versions
and the exact command of each figure. Ratios (features vs the DuckDB floor,
API vs bare uvicorn) are measured side by side inside one script, since
absolute times drift on shared machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable

# name -> {scale: argv}. Scripts print one JSON object per figure on stdout.
SUITE: dict[str, dict[str, list[str]]] = {
    "validate": {
        "small": ["bench_validate.py", "--rows", "1000000"],
        "large": ["bench_validate.py", "--rows", "10000000"],
    },
    "simulate": {
        "small": ["bench_simulate.py", "--scale", "default"],
        "large": ["bench_simulate.py", "--scale", "large"],
    },
    "features": {
        "small": ["bench_features.py", "--users", "20000"],
        "large": ["bench_features.py", "--users", "1000000"],
    },
    "feature_stages": {
        "small": ["bench_feature_stages.py", "--users", "20000"],
        "large": ["bench_feature_stages.py", "--users", "1000000"],
    },
    "train": {
        "small": ["bench_train.py", "--users", "20000"],
        "large": ["bench_train.py", "--users", "1000000", "--no-oracle"],
    },
    "score": {
        "small": ["bench_score.py", "--users", "100000"],
        "large": ["bench_score.py", "--users", "1000000", "--end-to-end"],
    },
    "monitor": {
        "small": ["bench_monitor.py", "--users", "100000"],
        "large": ["bench_monitor.py", "--users", "1000000"],
    },
    "api": {
        "small": ["bench_api.py", "--users", "2000", "--seconds", "8"],
        "large": ["bench_api.py", "--users", "20000", "--seconds", "20"],
    },
    # also writes its own table: results/<date>-robustness.md
    "robustness": {
        "small": ["bench_robustness.py", "--users", "4000", "--replicas", "8"],
        "large": ["bench_robustness.py", "--users", "8000", "--replicas", "16"],
    },
    # also writes its own table: results/<date>-btyd-features.md
    "btyd_features": {
        "small": ["bench_btyd_features.py", "--users", "8000"],
        "large": ["bench_btyd_features.py", "--users", "20000"],
    },
    "ceiling": {
        "small": ["bench_ceiling.py", "--worlds", "seed42", "--users", "8000", "--replicas", "8"],
        "large": ["bench_ceiling.py", "--worlds", "seed42", "purchases_only_90", "--users", "20000"],
    },
}
VERSIONS = ["duckdb", "lightgbm", "mlflow", "bentoml", "pyspark", "pandas", "numpy", "pyarrow", "scikit-learn"]


def machine() -> dict:
    """Cores, memory and software versions of this machine."""
    mem_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return {
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{p: metadata.version(p) for p in VERSIONS},
    }


def run_one(name: str, argv: list[str]) -> list[dict]:
    """Run one benchmark script; return its figures (each tagged with the command)."""
    cmd = [PY, str(HERE / argv[0]), *argv[1:]]
    shown = " ".join([".venv/bin/python", f"benchmarks/{argv[0]}", *argv[1:]])
    print(f"$ {shown}", flush=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    if res.returncode != 0:
        tail = "\n".join(res.stderr.strip().splitlines()[-8:])
        print(f"  FAILED ({res.returncode}):\n{tail}", flush=True)
        return [{"benchmark": name, "command": shown, "error": tail}]
    figures = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    for f in figures:
        f.setdefault("benchmark", name)
        f["command"] = shown
        print("  " + json.dumps(f), flush=True)
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return figures


def markdown(scale: str, mach: dict, figures: list[dict]) -> str:
    """The results as a Markdown report."""
    lines = [
        f"# siyu benchmarks — {scale} — {date.today()}",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in mach.items()),
        "",
        "| benchmark | figures | command |",
        "|---|---|---|",
    ]
    for f in figures:
        body = ", ".join(f"{k}={v}" for k, v in f.items() if k not in {"benchmark", "command"})
        lines.append(f"| {f['benchmark']} | {body} | `{f['command']}` |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=["small", "large"], default="small")
    ap.add_argument(
        "--only",
        nargs="*",
        choices=list(SUITE),
        help="run only these benchmarks (today's figures of the others are kept)",
    )
    a = ap.parse_args()
    mach = machine()
    figures: list[dict] = []
    for name, scales in SUITE.items():
        if a.only and name not in a.only:
            continue
        if not (HERE / scales[a.scale][0]).exists():
            figures.append({"benchmark": name, "command": "-", "error": "script missing"})
            continue
        figures.extend(run_one(name, scales[a.scale]))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stem = out / f"{date.today()}-{a.scale}"
    if a.only and stem.with_suffix(".json").exists():
        # A partial rerun replaces only its own benchmarks' figures in today's results.
        kept = [
            f for f in json.loads(stem.with_suffix(".json").read_text())["figures"] if f.get("benchmark") not in a.only
        ]
        figures = kept + figures
    stem.with_suffix(".json").write_text(json.dumps({"scale": a.scale, "machine": mach, "figures": figures}, indent=2))
    stem.with_suffix(".md").write_text(markdown(a.scale, mach, figures))
    print(f"wrote {stem}.json and {stem}.md")
    sys.exit(1 if any("error" in f for f in figures) else 0)


if __name__ == "__main__":
    main()
