"""Realism figures of a simulated world and the summary table `siyu simulate` prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simulation.state import HUNTER, State

MONTH = 30


class RealismTracker:
    """Monthly churn (connected at a month's start, lost at its end), overall and by group."""

    def __init__(self, fatigue_threshold: float):
        self.thr = fatigue_threshold
        self.start_conn: np.ndarray | None = None
        self.max_fatigue: np.ndarray | None = None
        self.sums = {k: np.zeros(2) for k in ("all", "hunter", "other", "fatigued", "rested")}

    def day_end(self, st: State, n: int) -> None:
        """Track the peak fatigue of the month (call after each day)."""
        if self.max_fatigue is not None:
            m = self.max_fatigue.size
            np.maximum(self.max_fatigue, st.fatigue[:m], out=self.max_fatigue)

    def month_edge(self, st: State, n: int) -> None:
        """Close the month that ends now and open the next (call at day 0, 30, 60, ...)."""
        conn = st.ch[:, :n].any(axis=0)
        if self.start_conn is not None:
            m = self.start_conn.size
            was, lost = self.start_conn, ~conn[:m]
            hunter = st.segment[:m] == HUNTER
            tired = self.max_fatigue > self.thr
            for key, grp in (
                ("all", was),
                ("hunter", was & hunter),
                ("other", was & ~hunter),
                ("fatigued", was & tired),
                ("rested", was & ~tired),
            ):
                self.sums[key] += (grp.sum(), (grp & lost).sum())
        self.start_conn, self.max_fatigue = conn, st.fatigue[:n].copy()

    def rate(self, key: str) -> float:
        base, lost = self.sums[key]
        return float(lost / base) if base else float("nan")


@dataclass
class WorldSummary:
    """What `simulate_world` made: paths, sizes, realism figures and oracle quality."""

    out_dir: Path
    users: int
    days: int
    events: int
    seconds: float
    oracle_seconds: float
    n_replicas: int
    realism: dict[str, float] = field(default_factory=dict)
    auc: dict[str, float] = field(default_factory=dict)
    label_rates: dict[str, float] = field(default_factory=dict)
    event_counts: dict[str, int] = field(default_factory=dict)
    snapshots: dict = field(default_factory=dict, repr=False)


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC (same value as sklearn's roc_auc_score: Mann-Whitney with average ranks for ties)."""
    y = np.asarray(y).astype(bool)
    pos, neg = int(y.sum()), int(y.size - y.sum())
    if pos == 0 or neg == 0:
        return float("nan")
    _, inv, counts = np.unique(np.asarray(score), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inv]
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def realism_figures(
    st: State, n: int, tracker: RealismTracker, koc_share: float, events: int, days: int, referred: int
) -> dict[str, float]:
    """The realism table: churn, buying, repeat buying, KOCs, volume."""
    buys = st.n_buys[:n]
    buyers = int((buys >= 1).sum())
    return {
        "monthly churn (connected -> lost)": tracker.rate("all"),
        "monthly churn, coupon hunters": tracker.rate("hunter"),
        "monthly churn, other users": tracker.rate("other"),
        "monthly churn, pushed above fatigue threshold": tracker.rate("fatigued"),
        "monthly churn, below fatigue threshold": tracker.rate("rested"),
        "share of users who ever buy": buyers / n if n else float("nan"),
        "share of buyers who buy again": float((buys >= 2).sum() / buyers) if buyers else float("nan"),
        "KOCs among connected users at the end": koc_share,
        "share of users referred": referred / n if n else float("nan"),
        "events per user-year": events / (n * days / 365) if n else float("nan"),
    }


def print_summary(s: WorldSummary, console) -> None:
    """Print the realism and oracle tables (rich)."""
    from rich.table import Table

    t = Table(
        title=f"built-in world: {s.users:,} users x {s.days} days, {s.events:,} events "
        f"in {s.seconds:.1f} s (oracle {s.oracle_seconds:.1f} s)"
    )
    t.add_column("realism figure")
    t.add_column("value", justify="right")
    for k, v in s.realism.items():
        t.add_row(k, "n/a" if v != v else f"{v:.1f}" if k.startswith("events") else f"{v:.1%}")
    console.print(t)
    if s.auc:
        o = Table(title=f"oracle ({s.n_replicas} replicas per user)")
        for c in ("label", "positive rate", "oracle ROC AUC"):
            o.add_column(c, justify="right" if c != "label" else "left")
        for lab, auc in s.auc.items():
            o.add_row(lab, f"{s.label_rates.get(lab, float('nan')):.1%}", f"{auc:.3f}")
        console.print(o)
    console.print(f"wrote {s.out_dir}/events.parquet, users.parquet" + (", oracle.parquet" if s.auc else ""))
