"""The LTV oracle: expected own and referral net spend over (T, T+L], by re-simulating each user's future.

At cutoff day t (before day t runs) every user who joined so far is copied R times and days
t..t+L-1 run with independent randomness on the same brand calendar. Friends that a replica's
shares bring in join the replica world and buy on (their orders count for the referrer, as
the label's attribution rule says), and so do their later orders. Own spend is a replica's
purchases minus refunds of orders placed in the horizon (docs/design.md §4, features/ltv_label.py).
A user's expected referral spend = the mean spend of the friends their replicas bring in during
the horizon + the expected own spend of the users they referred before T (still buying).
"""

from __future__ import annotations

import numpy as np

from simulation.dynamics import Calendar, step
from simulation.state import State, take, view
from simulation.writer import DayEvents, E
from siyu.config import Config


class _SpendEvents(DayEvents):
    """Bookkeeping-only events that also tally each row's net spend in the horizon."""

    def __init__(self, st: State, day: int, spend: list[np.ndarray], t0: int):
        super().__init__(st, day, emit=False)
        self.spend, self.t0 = spend, t0

    def _grow(self, top: int) -> np.ndarray:
        if top >= self.spend[0].size:
            self.spend[0] = np.concatenate([self.spend[0], np.zeros(max(top + 1, 2 * self.spend[0].size))])
        return self.spend[0]

    def add(
        self, code, idx, ch=-1, amount=None, ref=None, rating=None, coupon=None, content=None, order=None, sec=None
    ):
        """DayEvents.add, plus: purchases add their amount, refunds of horizon orders subtract theirs."""
        if code == E["purchase"] and idx.size:
            self._grow(int(idx.max()))[idx] += np.broadcast_to(amount, idx.shape)
        elif code == E["refund"] and idx.size:
            own = self.st.refund_pday[idx] >= self.t0  # read before step clears it: the order's day
            self._grow(int(idx.max()))[idx[own]] -= np.broadcast_to(amount, idx.shape)[own]
        super().add(code, idx, ch, amount, ref, rating, coupon, content, order, sec)


def ltv_expected(
    world, t: int, cal: Calendar, cfg: Config, replicas: int, seed: int, batch_rows: int = 250_000
) -> dict[str, np.ndarray]:
    """Expected own and referral net spend over (T, T+L] of every user who joined before day t.

    Args:
        world: the simulator's world (`st`, `n`, `referrer`; `replica_of` makes a replica world).
        t: the cutoff day (the instant start + t days).
        cal: the brand calendar (must cover day t + L - 1).
        cfg: the config (`ltv.horizon_days`, simulation).
        replicas: re-simulations per user.
        seed: the world's seed (the oracle draws from its own streams).
        batch_rows: user-replicas simulated at once (bounds memory).

    Returns:
        {"rows": world rows, "ltv_own": ..., "ltv_referral": ...} (currency; one entry per row).
    """
    L = cfg.ltv.horizon_days
    n = world.n
    own, new_ref = np.zeros(n), np.zeros(n)
    per = max(1, batch_rows // replicas)
    for b, lo in enumerate(range(0, n, per)):
        rows = np.arange(lo, min(lo + per, n))
        m = rows.size * replicas
        rng = np.random.default_rng([seed, 0x17, t, b])
        rw = world.replica_of(take(world.st, rows, replicas), rng)
        spend = [np.zeros(m)]
        for d in range(t, t + L):
            ev = _SpendEvents(rw.st, d, spend, t)
            refs, amounts = step(view(rw.st, rw.n), d, cal, cfg.simulation, rng, ev)
            if refs.size:
                rw.add_referred(refs, amounts, d, ev)
        s = spend[0]
        if s.size < rw.n:
            s = np.concatenate([s, np.zeros(rw.n - s.size)])
        own[rows] = s[:m].reshape(-1, replicas).mean(axis=1)
        ref = rw.referrer[m : rw.n]
        direct = (ref >= 0) & (ref < m)  # friends of a friend count for the friend, not for this user
        per_row = np.bincount(ref[direct], weights=s[m : rw.n][direct], minlength=m)
        new_ref[rows] = per_row.reshape(-1, replicas).mean(axis=1)
    earlier = world.referrer[:n]
    had = earlier >= 0
    old_ref = np.bincount(earlier[had], weights=own[had], minlength=n)[:n]
    return {"rows": np.arange(n), "ltv_own": own, "ltv_referral": new_ref + old_ref}
