"""Benchmark: validate an N-row event log (default 10M) — wall time and peak memory.

    .venv/bin/python benchmarks/bench_validate.py [--rows 10000000] [--format csv|parquet]

Generates a messy log once under benchmarks/data/ (0.5% bad rows, 0.2% exact
duplicates, mixed timestamp formats), then runs `validate_file` in a fresh child
process and prints its wall time and peak RSS as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def generate(rows: int, fmt: str) -> Path:
    """Write the synthetic log (cached by size and format)."""
    import duckdb

    path = DATA / f"validate_{rows}.{fmt}"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    events = "['visit','message_open','message_sent','click','like','follow','purchase','refund','review','share']"
    sql = f"""
    WITH base AS (
      SELECT i, CAST(hash(i) % 1000000007 AS BIGINT) AS h FROM range({rows}) t(i)
    )
    SELECT
      CASE WHEN h % 1000 = 1 THEN '' ELSE lpad(CAST(h % 1000000 AS VARCHAR), 7, '0') END AS user_id,
      CASE WHEN h % 1000 = 2 THEN 'not a time'
           WHEN h % 3 = 0 THEN CAST(1767225600 + (h % 31536000) AS VARCHAR)
           WHEN h % 3 = 1 THEN strftime(to_timestamp(1767225600 + (h % 31536000)), '%Y-%m-%dT%H:%M:%SZ')
           ELSE CAST((1767225600 + (h % 31536000)) * 1000 AS VARCHAR) END AS ts,
      CASE WHEN h % 1000 = 3 THEN 'teleport' ELSE {events}[1 + (h // 7) % 10] END AS event,
      CASE WHEN h % 1000 = 4 THEN '-3' ELSE CAST(round((h % 50000) / 100.0, 2) AS VARCHAR) END AS amount,
      'wecom' AS channel,
      NULL AS ref_user_id,
      CASE WHEN h % 1000 = 5 THEN '9' ELSE CAST(1 + h % 5 AS VARCHAR) END AS rating,
      CASE WHEN h % 2 = 0 THEN 'true' ELSE 'false' END AS coupon,
      NULL AS content_id,
      'o' || CAST(i AS VARCHAR) AS order_id
    FROM base
    UNION ALL
    SELECT d.* FROM (SELECT lpad(CAST(i AS VARCHAR), 7, '0'), '2026-02-01T00:00:00Z', 'visit', NULL, NULL, NULL,
                          NULL, NULL, NULL, 'dup' FROM range({rows // 1000}) t(i)) d, range(2)
    """
    tmp = path.with_suffix(".tmp")
    fmt_opts = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT parquet"
    duckdb.connect().execute(f"COPY ({sql}) TO '{tmp}' ({fmt_opts})")
    tmp.rename(path)
    return path


def child(path: str) -> None:
    from events.validate import validate_file
    from siyu.config import load_config

    out = tempfile.mkdtemp(prefix="bench-validate-")
    t0 = time.perf_counter()
    r = validate_file(path, load_config(), out)
    secs = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rows_read": r.rows_read,
                "accepted": r.accepted,
                "quarantined": r.quarantined,
                "duplicates": r.duplicates,
                "seconds": round(secs, 2),
                "peak_rss_mib": round(peak_mib),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--format", choices=["csv", "parquet"], default="csv")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child)
        return
    path = generate(a.rows, a.format)
    res = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True, check=True)
    result = json.loads(res.stdout.strip().splitlines()[-1])
    result.update({"benchmark": "validate", "format": a.format, "file_mib": round(path.stat().st_size / 2**20)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
