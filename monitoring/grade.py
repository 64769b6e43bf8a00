"""Realised outcomes of an old snapshot: its stored scores graded on the labels its horizon produced.

The labels come from `features.labels` at the snapshot's asof, exactly as training builds them
(same populations, same churn mode), and the metrics from `training.evaluate`, so a monitor
run's AUC is the number training would report on the same users.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from siyu.config import Config
from siyu.contract import LABELS
from training.evaluate import all_metrics


@dataclass
class Horizon:
    """Whether the events cover a snapshot's label horizon (asof, asof + H]."""

    asof: datetime
    end: datetime
    events_end: datetime | None
    complete: bool

    def message(self) -> str:
        """One line for the report: complete, or how many days are still to come."""
        if self.complete:
            return f"horizon {self.asof:%Y-%m-%d} .. {self.end:%Y-%m-%d} complete"
        seen = f"events end {self.events_end:%Y-%m-%d %H:%M}" if self.events_end else "no events"
        days = (self.end - (self.events_end or self.asof)).total_seconds() / 86400
        return (
            f"horizon not yet complete: the old snapshot ({self.asof:%Y-%m-%d}) needs events through "
            f"{self.end:%Y-%m-%d}, {seen} (~{max(days, 0):.0f} days to go); realised outcomes skipped"
        )


def horizon(con, asof: datetime, cfg: Config) -> Horizon:
    """The label horizon of `asof` and whether the loaded `events` table covers it.

    Events are taken to cover the horizon once they reach its last day (a daily log exported
    at T+H has its last event some time on that day).
    """
    end = asof + timedelta(days=cfg.windows.horizon_days)
    last = con.execute("SELECT max(ts) FROM events").fetchone()[0]
    last = pd.Timestamp(last).to_pydatetime() if last is not None else None
    return Horizon(asof, end, last, last is not None and last >= end - timedelta(days=1))


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int) -> list[dict]:
    """Calibration by score quantile bin (deciles by default): n, mean predicted, observed rate.

    Args:
        y: 0/1 outcomes.
        p: probabilities.
        bins: number of quantile bins (ties merge bins).
    """
    if not len(p):
        return []
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)[1:-1]))
    b = np.searchsorted(edges, p, side="right")
    rows = []
    for k in np.unique(b):
        m = b == k
        rows.append(
            {
                "bin": int(k) + 1,
                "n": int(m.sum()),
                "p_min": float(p[m].min()),
                "p_max": float(p[m].max()),
                "mean_predicted": float(p[m].mean()),
                "observed": float(y[m].mean()),
            }
        )
    return rows


def graded_pairs(snapshot: Path, labels: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """label -> (user ids, outcomes, stored scores) of users scored in the snapshot and labelled.

    Args:
        snapshot: the snapshot file (its `p_<label>` are NaN outside the population).
        labels: features.labels output at the snapshot's asof.
    """
    cols = ["user_id"] + [f"p_{lab}" for lab in LABELS]
    snap = pq.read_table(snapshot, columns=cols).to_pandas()
    joined = snap.merge(labels[["user_id", *LABELS]], on="user_id", how="inner", suffixes=("", "_y"))
    out = {}
    for lab in LABELS:
        p = joined[f"p_{lab}"].to_numpy(dtype=float)
        y = joined[lab]
        m = ~np.isnan(p) & y.notna().to_numpy()
        if m.any():
            out[lab] = (
                joined["user_id"].to_numpy()[m],
                y.to_numpy(dtype=float, na_value=np.nan)[m].astype(int),
                p[m],
            )
    return out


def grade(snapshot: Path, labels: pd.DataFrame, cfg: Config) -> dict[str, dict]:
    """Per label: n, positives, ROC AUC, PR AUC, Brier, log loss, lift/catch at the top k%, calibration.

    Args:
        snapshot: the old snapshot file.
        labels: features.labels output at its asof.
        cfg: config (lift fractions, calibration bins).

    Returns:
        label -> metrics (labels with no graded user are absent).
    """
    out = {}
    for lab, (_, y, p) in graded_pairs(snapshot, labels).items():
        m = all_metrics(y, p, cfg.training.lift_fractions)
        out[lab] = {
            "n": int(len(y)),
            "positives": int(y.sum()),
            "positive_rate": float(y.mean()),
            "mean_predicted": float(p.mean()),
            **{k: (float(v) if np.isfinite(v) else None) for k, v in m.items()},
            "calibration": calibration_table(y, p, cfg.monitoring.calibration_bins),
        }
    return out


def realised_outcomes(events: str | Path, asof: datetime, snapshot: Path, cfg: Config) -> dict:
    """Load and validate the events, check the horizon, and grade the snapshot when it is complete.

    Returns:
        {"horizon_complete": bool, "message": str, "horizon_end": iso, "events_end": iso | None,
        <label>: metrics ...} (no label keys when the horizon is incomplete).
    """
    from events.loader import connect
    from events.validate import load_valid_events
    from features.labels import label_table

    con = connect()
    try:
        load_valid_events(con, events, cfg)
        h = horizon(con, asof, cfg)
        out = {
            "horizon_complete": h.complete,
            "message": h.message(),
            "horizon_end": h.end.isoformat(),
            "events_end": h.events_end.isoformat() if h.events_end else None,
        }
        if h.complete:
            out.update(grade(snapshot, label_table(con, asof, cfg), cfg))
    finally:
        con.close()
    return out
