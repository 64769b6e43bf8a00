"""The oracle: the best achievable label probabilities, by re-simulating each user's future.

At a cutoff T (day index t: the instant start + t days, before day t runs) the
world's state holds each user's true hidden values and the docs/design.md §3 inputs.
For every user connected at T the oracle copies that state R times and runs
days t..t+H-1 with independent randomness (same brand calendar); p_oracle is
the share of replicas where the docs/design.md §4 label is positive. For the
churn population it also replays the horizon twice more with the same replica
seeds, pushed as usual and held out of every push: the true push effect.
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
    spend0: np.ndarray | None = None  # net spend of `rows` so far (the realised spend over H is the rise)
    arm: np.ndarray | None = None  # per row: 1 held out of pushes for the whole horizon, 0 never held in it, -1 partly


def snapshot(st: State, t: int, cfg: Config) -> Snapshot:
    """docs/design.md §3/§4 tiers and populations at cutoff day t (call before day t runs), as the written log
    defines them (simulation.export: every event, or orders only)."""
    tier = _tiers(st, cfg)
    rows = np.flatnonzero(tier > 0)
    active = _last_day(st, cfg)[rows] >= t - cfg.windows.period_days
    until = st.hold_until[rows]
    arm = np.where(until >= t + cfg.windows.horizon_days, 1, np.where(until <= t, 0, -1)).astype("i1")
    return Snapshot(t, rows, tier[rows], active, tier[rows] < KOC_RANK, st.net_spend[rows].copy(), arm)


def outcomes(st: State, rows: np.ndarray | None, t: int, tier0: np.ndarray, cfg: Config) -> dict[str, np.ndarray]:
    """docs/design.md §4 labels (bool) of `rows` (None: all) at T+H, given their tier at T; call before day t+H runs."""
    sel = slice(None) if rows is None else rows
    tier_end = _tiers(st, cfg)[sel]
    lost = tier_end == 0
    quiet = _last_day(st, cfg)[sel] < t  # no user-side event in (T, T+H] (of those the log holds)
    churn = {"either": lost | quiet, "disconnect": lost, "inactive": quiet}[cfg.labels.churn_mode]
    return {"churn": churn, "promotion": tier_end > tier0, "koc": tier_end == KOC_RANK}


def _tiers(st: State, cfg: Config) -> np.ndarray:
    t = cfg.tiers
    return tier_ranks(st, t.koc_min_referrals, t.engaged_min_actions, cfg.simulation.export == "orders")


def _last_day(st: State, cfg: Config) -> np.ndarray:
    """Each row's last day with a user-side event the written log holds."""
    return st.last_order_day if cfg.simulation.export == "orders" else st.last_user_day


def oracle_probs(
    st: State, snap: Snapshot, cal: Calendar, cfg: Config, replicas: int, seed: int, batch_rows: int = 250_000
) -> dict[str, np.ndarray]:
    """p_oracle of each label for the users of `snap`, from `replicas` re-simulations of (T, T+H].

    Args:
        st: the world's state at the cutoff (not modified); its control groups apply as drawn.
        snap: the cutoff's populations (`snapshot`).
        cal: the brand calendar (must cover day t + H - 1).
        cfg: the config (windows, tiers, labels, simulation).
        replicas: re-simulations per user.
        seed: the world's seed (the oracle draws from its own streams).
        batch_rows: user-replicas simulated at once (bounds memory).

    Returns:
        label -> probability per row of snap.rows (and `spend`: the mean net spend over the horizon).
    """
    return _rerun(st, snap.rows, snap.tier, snap.t, cal, cfg, replicas, [seed, 0x0A, snap.t], batch_rows)


def push_contrast(
    st: State, snap: Snapshot, cal: Calendar, cfg: Config, replicas: int, seed: int, batch_rows: int = 250_000
) -> dict[str, np.ndarray]:
    """The counterfactual of the churn population: churn and spend over (T, T+H] pushed as usual vs held.

    Both arms re-simulate the same rows with the same replica seeds; `pushed` lifts any control group
    the user is in, `held` keeps the user out of every push for the whole horizon.

    Returns:
        churn_pushed, churn_held (probabilities), spend_pushed, spend_held (expected net spend),
        one per row of snap.rows (NaN outside the churn population); the same from each half of the
        replicas with suffixes `_a` and `_b` (advice chosen on one half is judged on the other, free of
        the winner's curse of picking users by their replicas' luck).
    """
    rows, H = snap.rows[snap.churn_pop], cfg.windows.horizon_days
    out: dict[str, np.ndarray] = {}
    for arm, until in (("pushed", -1), ("held", snap.t + H)):
        r = _rerun(
            st,
            rows,
            snap.tier[snap.churn_pop],
            snap.t,
            cal,
            cfg,
            replicas,
            [seed, 0x0B, snap.t],
            batch_rows,
            until,
            True,
        )
        for outcome in ("churn", "spend"):
            for part, v in zip(("", "_a", "_b"), r[outcome]):
                out[f"{outcome}_{arm}{part}"] = np.full(snap.rows.size, np.nan)
                out[f"{outcome}_{arm}{part}"][snap.churn_pop] = v
    return out


def _rerun(
    st: State,
    rows,
    tier,
    t: int,
    cal: Calendar,
    cfg: Config,
    replicas: int,
    key: list,
    batch_rows: int,
    hold=None,
    halves: bool = False,
) -> dict:
    """Per row: the share of replicas with each label and their mean net spend over (T, T+H].

    `hold` (a day index, or -1) replaces every replica's control-group end; None keeps the world's.
    `halves`: each value is (all replicas, first half, second half) instead.
    """
    H = cfg.windows.horizon_days
    out = {lab: np.zeros((3, rows.size)) for lab in ("churn", "promotion", "koc", "spend")}
    cut = replicas // 2  # one replica: both halves are it (a split needs two)
    per = max(1, batch_rows // replicas)
    for b, lo in enumerate(range(0, rows.size, per)):
        sub = take(st, rows[lo : lo + per], replicas)
        if hold is not None:
            sub.hold_until[:] = hold
        spend0 = sub.net_spend.copy()
        rng = np.random.default_rng([*key, b])
        for d in range(t, t + H):
            step(sub, d, cal, cfg.simulation, rng, DayEvents(sub, d, emit=False))
        lab = outcomes(sub, None, t, np.repeat(tier[lo : lo + per], replicas), cfg)
        lab["spend"] = sub.net_spend - spend0
        for k, v in lab.items():
            v = v.reshape(-1, replicas)
            a, b = (v[:, :cut], v[:, cut:]) if cut else (v, v)
            out[k][:, lo : lo + per] = v.mean(axis=1), a.mean(axis=1), b.mean(axis=1)
    return out if halves else {k: v[0] for k, v in out.items()}
