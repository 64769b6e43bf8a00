"""The oracle: the best achievable label probabilities, by re-simulating each user's future.

At a cutoff T (day index t: the instant start + t days, before day t runs) the
world's state holds each user's true hidden values and the docs/design.md §3 inputs.
For every user connected at T the oracle copies that state R times and runs
days t..t+H-1 with independent randomness (same brand calendar); p_oracle is
the share of replicas where the docs/design.md §4 label is positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulation.dynamics import Calendar, step
from simulation.state import State, take, tier_ranks
from simulation.writer import DayEvents
from siyu.config import Config

KOC_RANK = 5


@dataclass
class Snapshot:
    """Populations and tiers at a cutoff, from the world's own bookkeeping."""

    t: int
    rows: np.ndarray  # users connected at T (union of the label populations)
    tier: np.ndarray  # tier rank at T of `rows`
    churn_pop: np.ndarray  # bool per row: in the churn population
    up_pop: np.ndarray  # bool per row: in the promotion / KOC population


def snapshot(st: State, t: int, cfg: Config) -> Snapshot:
    """docs/design.md §3/§4 tiers and populations at cutoff day t (call before day t runs)."""
    tier = tier_ranks(st, cfg.tiers.koc_min_referrals, cfg.tiers.engaged_min_actions)
    rows = np.flatnonzero(tier > 0)
    active = st.last_user_day[rows] >= t - cfg.windows.period_days
    return Snapshot(t, rows, tier[rows], active, tier[rows] < KOC_RANK)


def outcomes(st: State, rows: np.ndarray | None, t: int, tier0: np.ndarray, cfg: Config) -> dict[str, np.ndarray]:
    """docs/design.md §4 labels (bool) of `rows` (None: all) at T+H, given their tier at T; call before day t+H runs."""
    sel = slice(None) if rows is None else rows
    tier_end = tier_ranks(st, cfg.tiers.koc_min_referrals, cfg.tiers.engaged_min_actions)[sel]
    lost = tier_end == 0
    quiet = st.last_user_day[sel] < t  # no user-side event in (T, T+H]
    churn = {"either": lost | quiet, "disconnect": lost, "inactive": quiet}[cfg.labels.churn_mode]
    return {"churn": churn, "promotion": tier_end > tier0, "koc": tier_end == KOC_RANK}


def oracle_probs(
    st: State, snap: Snapshot, cal: Calendar, cfg: Config, replicas: int, seed: int, batch_rows: int = 250_000
) -> dict[str, np.ndarray]:
    """p_oracle of each label for the users of `snap`, from `replicas` re-simulations of (T, T+H].

    Args:
        st: the world's state at the cutoff (not modified).
        snap: the cutoff's populations (`snapshot`).
        cal: the brand calendar (must cover day t + H - 1).
        cfg: the config (windows, tiers, labels, simulation).
        replicas: re-simulations per user.
        seed: the world's seed (the oracle draws from its own streams).
        batch_rows: user-replicas simulated at once (bounds memory).

    Returns:
        label -> probability per row of snap.rows.
    """
    H = cfg.windows.horizon_days
    out = {lab: np.zeros(snap.rows.size) for lab in ("churn", "promotion", "koc")}
    per = max(1, batch_rows // replicas)
    for b, lo in enumerate(range(0, snap.rows.size, per)):
        rows = snap.rows[lo : lo + per]
        sub = take(st, rows, replicas)
        rng = np.random.default_rng([seed, 0x0A, snap.t, b])
        for d in range(snap.t, snap.t + H):
            step(sub, d, cal, cfg.simulation, rng, DayEvents(sub, d, emit=False))
        lab = outcomes(sub, None, snap.t, np.repeat(snap.tier[lo : lo + per], replicas), cfg)
        for k, v in lab.items():
            out[k][lo : lo + per] = v.reshape(-1, replicas).mean(axis=1)
    return out
