"""The validation report: counts that always add up, written atomically beside the outputs."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
from rich.console import Console
from rich.table import Table

from events.ts_hint import ts_hint
from siyu.contract import FAMILIES
from siyu.errors import SiyuError


@dataclass
class ValidationReport:
    """What validation found. rows_read == accepted + quarantined + duplicates, always."""

    source: str
    rows_read: int
    accepted: int
    duplicates: int
    quarantined: int
    by_reason: dict[str, int]
    users: int
    ts_min: str | None
    ts_max: str | None
    by_family: dict[str, int]
    max_fraction: float
    outputs: dict[str, str] = field(default_factory=dict)
    ts_hint: str | None = None  # the events.ts_formats that would read the unparseable times (events/ts_hint.py)

    @classmethod
    def collect(
        cls,
        con: duckdb.DuckDBPyConnection,
        table: str,
        source: str,
        rows_read: int,
        valid_rows: int,
        max_fraction: float,
    ) -> ValidationReport:
        """Count what run_validation left in `table` and `quarantine`."""
        accepted, users, ts_min, ts_max = con.execute(
            f"SELECT count(*), count(DISTINCT user_id), CAST(min(ts) AS VARCHAR), CAST(max(ts) AS VARCHAR) FROM {table}"
        ).fetchone()
        by_reason = dict(
            con.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason ORDER BY 2 DESC, 1").fetchall()
        )
        per_event = dict(con.execute(f"SELECT event, count(*) FROM {table} GROUP BY event").fetchall())
        by_family = {f: sum(per_event.get(e, 0) for e in evs) for f, evs in FAMILIES.items()}
        return cls(
            source=source,
            rows_read=int(rows_read),
            accepted=int(accepted),
            duplicates=int(valid_rows - accepted),
            quarantined=int(rows_read - valid_rows),
            by_reason={k: int(v) for k, v in by_reason.items()},
            users=int(users),
            ts_min=ts_min,
            ts_max=ts_max,
            by_family=by_family,
            max_fraction=max_fraction,
            ts_hint=ts_hint(con) if "unparseable ts" in by_reason else None,
        )

    @property
    def bad_fraction(self) -> float:
        return self.quarantined / self.rows_read if self.rows_read else 0.0

    @property
    def over_threshold(self) -> bool:
        return self.bad_fraction > self.max_fraction

    def raise_if_over_threshold(self) -> None:
        """Refuse the log when too many rows broke the contract.

        Raises:
            SiyuError: naming how many rows were bad, the top reasons and where the quarantine is.
        """
        if not self.over_threshold:
            return
        top = ", ".join(f"{n} {r}" for r, n in list(self.by_reason.items())[:3])
        where = f"; see {self.outputs['quarantine']}" if "quarantine" in self.outputs else ""
        raise SiyuError(
            f"{self.quarantined} of {self.rows_read} rows ({self.bad_fraction:.1%}) broke the event contract, "
            f"over quarantine.max_fraction {self.max_fraction:.1%} ({top}){where}"
            + (f"; {self.ts_hint}" if self.ts_hint else "")
        )


def write_outputs(
    con: duckdb.DuckDBPyConnection, report: ValidationReport, out_dir: Path, table: str = "events"
) -> None:
    """Write quarantine.parquet, summary.json and (when under the threshold) events.parquet.

    Files are written to a temporary folder beside out_dir and moved into place
    one by one, so a crash never leaves a half-written file behind.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".validate-", dir=out_dir))
    try:
        files = {"quarantine": "quarantine.parquet", "summary": "summary.json"}
        con.execute(f"COPY quarantine TO '{tmp / files['quarantine']}' (FORMAT parquet)")
        if not report.over_threshold:
            files["events"] = "events.parquet"
            con.execute(f"COPY {table} TO '{tmp / files['events']}' (FORMAT parquet, ROW_GROUP_SIZE 1000000)")
        else:
            # A refused log must not leave an older events.parquet looking like this run's output.
            (out_dir / "events.parquet").unlink(missing_ok=True)
        report.outputs = {k: str(out_dir / v) for k, v in files.items()}
        (tmp / files["summary"]).write_text(json.dumps(asdict(report), indent=2))
        for name in files.values():
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def print_report(report: ValidationReport, console: Console) -> None:
    """Print the summary tables of a validation run."""
    t = Table(title=f"validation of {report.source}", show_header=False)
    for k, v in [
        ("rows read", report.rows_read),
        ("accepted", report.accepted),
        ("duplicates removed", report.duplicates),
        ("quarantined", report.quarantined),
        ("users", report.users),
        ("first event", report.ts_min),
        ("last event", report.ts_max),
    ]:
        t.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    console.print(t)
    if report.duplicates:
        console.print(
            "duplicates: rows equal in every column, kept once; two orders alike on one day (a log of dates, "
            "no order ids) look the same: map the log's order id (events.columns.order_id) to keep both",
            highlight=False,
        )
    if report.ts_hint:
        console.print(f"hint: {report.ts_hint}", highlight=False)
    if report.by_reason:
        r = Table(title="quarantined by reason")
        r.add_column("reason")
        r.add_column("rows", justify="right")
        for reason, n in report.by_reason.items():
            r.add_row(reason, f"{n:,}")
        console.print(r)
    f = Table(title="accepted events per family")
    f.add_column("family")
    f.add_column("events", justify="right")
    for fam, n in report.by_family.items():
        f.add_row(fam, f"{n:,}" if n else "absent")
    console.print(f)
    for k, v in report.outputs.items():
        console.print(f"{k}: {v}")
