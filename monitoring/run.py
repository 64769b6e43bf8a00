"""`siyu monitor OLD NEW`: drift between two snapshots, realised and expected outcomes, one report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from monitoring.drift import LEVELS, snapshot_drift, worst
from monitoring.estimate import beside_realised, estimate
from monitoring.population import population_drift
from serving.snapshot import read_meta
from siyu.config import Config
from siyu.contract import LABELS
from siyu.errors import SiyuError

FAIL_ON = ("never", "watch", "alert")


@dataclass
class MonitorResult:
    """What a monitor run found and wrote."""

    out: Path
    report: dict
    status: str
    alerts: list[str] = field(default_factory=list)
    watch: list[str] = field(default_factory=list)
    run_id: str | None = None
    seconds: float = 0.0

    def fails(self, fail_on: str) -> bool:
        """Whether the run's status reaches `fail_on` (never / watch / alert)."""
        if fail_on not in FAIL_ON:
            raise SiyuError(f"--fail-on must be one of {', '.join(FAIL_ON)}, not {fail_on!r}")
        return fail_on != "never" and LEVELS.index(self.status) >= LEVELS.index(fail_on)


def _side(path: Path, meta: dict) -> dict:
    return {
        "path": str(Path(path).resolve()),
        "asof": meta["asof"],
        "versions": meta.get("versions", {}),
        "users": pq.ParquetFile(path).metadata.num_rows,
    }


def _estimates(path: Path, labels: list[str], cfg: Config) -> dict:
    table = pq.read_table(path, columns=[f"p_{lab}" for lab in labels])
    out = {}
    for lab in labels:
        p = table.column(f"p_{lab}").to_numpy(zero_copy_only=False).astype(float)
        out[lab] = estimate(p[~np.isnan(p)], cfg.training.lift_fractions)
    return out


def _flags(report: dict) -> tuple[list[str], list[str]]:
    """Human lines for every measure at watch or alert: (alerts, watches)."""
    found = {"alert": [], "watch": []}
    d = report["drift"]
    for kind in ("features", "scores"):
        for name, c in d[kind].items():
            if c["status"] != "ok":
                found[c["status"]].append(f"drift.{kind}.{name}: PSI {c['psi']:.3f}, KS {c['ks'] or 0:.3f}")
    t = d["tiers"]
    if t["status"] != "ok":
        found[t["status"]].append(f"drift.tiers: tier mix PSI {t['psi']:.3f}")
    u = d["users"]
    for k in ("new_share", "gone_share"):
        if u[f"{k}_status"] != "ok":
            found[u[f"{k}_status"]].append(f"drift.users.{k}: {u[k]:.1%}")
    return found["alert"], found["watch"]


def monitor(
    old: str | Path,
    new: str | Path,
    cfg: Config,
    events: str | Path | None = None,
    out: str | Path = "out/monitor",
    log_mlflow: bool = True,
    show_progress: bool = True,
) -> MonitorResult:
    """Compare two scores snapshots, grade the old one when its horizon is complete, write the report.

    Args:
        old: the earlier snapshot (the reference; graded against `events`).
        new: the later snapshot.
        cfg: configuration (`monitoring` thresholds, windows, labels).
        events: the event log covering the old snapshot's horizon (None: drift and estimates only).
        out: folder for monitor.json, the plots and monitor.html.
        log_mlflow: log the run (metrics, report, model versions) to MLflow.
        show_progress: draw a progress bar.

    Returns:
        A MonitorResult (status: the worst level of any drift measure).

    Raises:
        SiyuError: a file is missing or not a snapshot, or the old snapshot is the later one.
    """
    from monitoring.report import write_report
    from serving.pool import progress_bar

    t0 = time.perf_counter()
    old, new, out = Path(old), Path(new), Path(out)
    mo, mn = read_meta(old), read_meta(new)
    if datetime.fromisoformat(mo["asof"]) > datetime.fromisoformat(mn["asof"]):
        raise SiyuError(f"the old snapshot ({mo['asof']}) is later than the new one ({mn['asof']}): swap them")
    feats = [f for f in mo["feature_names"] if f in set(mn["feature_names"])]
    labels = [lab for lab in LABELS if mo["versions"].get(lab) is not None and mn["versions"].get(lab) is not None]
    report: dict = {
        "old": _side(old, mo),
        "new": _side(new, mn),
        "features_only_old": [f for f in mo["feature_names"] if f not in set(feats)],
        "features_only_new": [f for f in mn["feature_names"] if f not in set(feats)],
    }
    with progress_bar(show_progress) as bar:
        task = bar.add_task("drift of features and scores", total=len(feats) + len(labels))
        fd, sd = snapshot_drift(
            old, new, feats, [f"p_{lab}" for lab in labels], cfg.monitoring, lambda i, n: bar.update(task, completed=i)
        )
        report["drift"] = {
            "features": {k: v.as_dict() for k, v in fd.items()},
            "scores": {k: v.as_dict() for k, v in sd.items()},
            **population_drift(old, new, cfg.monitoring),
        }
        bar.update(task, description="expected performance (CBPE)")
        est_old, est_new = _estimates(old, labels, cfg), _estimates(new, labels, cfg)
        realised = None
        if events is not None:
            from monitoring.grade import realised_outcomes

            bar.update(task, description="realised outcomes of the old snapshot")
            realised = realised_outcomes(events, datetime.fromisoformat(mo["asof"]), old, cfg)
        bar.remove_task(task)
    report["realised"] = realised or {"horizon_complete": False, "message": "no --events given: realised skipped"}
    report["estimate"] = {lab: beside_realised(e, (realised or {}).get(lab)) for lab, e in est_old.items()}
    report["estimate_new"] = est_new
    alerts, watch = _flags(report)
    status = "alert" if alerts else worst(["watch"] if watch else [])
    report.update(status=status, alerts=alerts, watch=watch)
    result = MonitorResult(out, report, status, alerts, watch)
    write_report(report, out, cfg)
    if log_mlflow:
        from monitoring.track import log_run

        result.run_id = log_run(report, out, cfg)
        report["mlflow_run_id"] = result.run_id
    result.seconds = round(time.perf_counter() - t0, 2)
    report["seconds"] = result.seconds
    write_report(report, out, cfg, plots=False)
    return result
