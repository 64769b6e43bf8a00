"""Per-user state of the built-in world: hidden values, channels and tier bookkeeping.

The state is a bag of NumPy arrays with the user on the last axis, so the daily
dynamics run vectorised over users and the oracle can copy a user's exact state
many times (`take`). Besides the hidden values (need, trust, fatigue, ...) the
state keeps the inputs of docs/design.md §3 — open channels, membership, non-cancelled
purchase days, referral purchases and actions in the rolling period (ring
buffers of P days) — so tiers and label populations come straight from it.
"""

from __future__ import annotations

import numpy as np

from siyu.config import SimulationConfig

SEGMENTS: tuple[str, ...] = ("regular", "coupon_hunter", "enthusiast")
SOURCES: tuple[str, ...] = ("public", "campaign", "referral")
HUNTER, ENTHUSIAST = 1, 2
NEVER = -(10**6)  # a day index long before any window

# name -> (dtype, fill value, leading shape given P)
_FIELDS: dict[str, tuple[str, object, str]] = {
    **{
        k: ("f4", 0.0, "")
        for k in (
            "need",
            "need_base",
            "trust",
            "trust0",
            "fatigue",
            "exposure",
            "activity",
            "influence",
            "fit",
            "intensity",
            "amount_mu",
        )
    },
    "refund_amount": ("f8", 0.0, ""),
    "segment": ("i1", 0, ""),
    "ch": ("?", False, "3"),
    **{k: ("?", False, "") for k in ("member", "muted", "hunter_done", "last_sat", "joined")},
    **{k: ("i4", -1, "") for k in ("coupon_until", "refund_day", "refund_pday", "ref_day", "hold_until")},
    "net_spend": ("f8", 0.0, ""),  # own purchases minus refunds, ever (the oracle's spend outcomes)
    "refund_order": ("i8", -1, ""),
    **{k: ("i4", NEVER, "") for k in ("last_user_day", "last_buy_day", "last_order_day")},
    **{k: ("i4", 0, "") for k in ("n_buys", "total_nc", "cnt_p", "cnt_r", "cnt_a")},
    **{k: ("u1", 0, "P") for k in ("buf_p", "buf_r", "buf_a")},
}


class State:
    """Arrays of every user's state; `n` rows (the last axis), ring buffers of `P` days."""

    def __init__(self, arrays: dict[str, np.ndarray], P: int):
        self.__dict__.update(arrays)
        self.P = P

    @property
    def n(self) -> int:
        return self.need.shape[0]

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, np.ndarray)}


def alloc(n: int, P: int) -> State:
    """An inert state of n rows (not joined, not connected) with P-day ring buffers."""
    arrays = {}
    for name, (dtype, fill, lead) in _FIELDS.items():
        shape = {"": (n,), "3": (3, n), "P": (P, n)}[lead]
        arrays[name] = np.full(shape, fill, dtype=dtype)
    return State(arrays, P)


def grow(st: State, cap: int) -> State:
    """The same state with room for `cap` rows (new rows inert)."""
    fresh = alloc(cap - st.n, st.P)
    return State({k: np.concatenate([v, getattr(fresh, k)], axis=-1) for k, v in st.arrays().items()}, st.P)


def view(st: State, n: int) -> State:
    """The first n rows of the state as views (writes go through): the users who joined so far."""
    return State({k: v[..., :n] for k, v in st.arrays().items()}, st.P)


def take(st: State, idx: np.ndarray, repeat: int = 1) -> State:
    """Rows `idx` of the state, each copied `repeat` times in a row (replicas of one user adjacent)."""
    out = {}
    for k, v in st.arrays().items():
        sub = v[..., idx]
        out[k] = np.repeat(sub, repeat, axis=-1) if repeat > 1 else sub.copy()
    return State(out, st.P)


def init_users(st: State, lo: int, hi: int, source: np.ndarray, p: SimulationConfig, rng: np.random.Generator) -> None:
    """Draw the hidden values of new users in rows lo..hi-1 and connect them.

    Args:
        st: the world state (rows lo..hi-1 must be inert).
        lo, hi: the rows to fill.
        source: acquisition source code per new user (index into SOURCES).
        p: the simulation parameters.
        rng: the world's random generator.
    """
    k = hi - lo
    s = slice(lo, hi)
    hunter_share = np.where(source == 1, p.hunter_share_campaign, p.hunter_share_public)
    hunter_share = np.where(source == 2, p.hunter_share_public / 2, hunter_share)  # friends of buyers hunt less
    u = rng.random(k)
    seg = np.where(
        u < hunter_share, HUNTER, np.where(u < hunter_share + (1 - hunter_share) * p.enthusiast_share, ENTHUSIAST, 0)
    ).astype("i1")
    st.segment[s] = seg
    mean_t = np.array([p.trust0[n] for n in SEGMENTS])[seg] + np.where(source == 2, 0.1, 0.0)
    st.trust0[s] = np.clip(mean_t + p.trust0_sd * rng.standard_normal(k), 0.02, 0.98)
    st.trust[s] = st.trust0[s]
    st.need_base[s] = rng.beta(*p.need_beta, size=k)
    st.need[s] = st.need_base[s]
    st.activity[s] = np.exp(p.activity_sigma * rng.standard_normal(k) - p.activity_sigma**2 / 2) * np.where(
        seg == ENTHUSIAST, 2.0, 1.0
    )
    st.influence[s] = np.minimum(
        1.0, rng.beta(*p.influence_beta, size=k) * np.select([seg == ENTHUSIAST, seg == HUNTER], [3.0, 0.3], 1.0)
    )
    st.fit[s] = rng.beta(*p.fit_beta, size=k)
    st.intensity[s] = np.exp(p.push_intensity_sigma * rng.standard_normal(k) - p.push_intensity_sigma**2 / 2)
    st.amount_mu[s] = p.amount_log_mean + np.where(seg == ENTHUSIAST, 0.3, 0.0) - np.where(seg == HUNTER, 0.3, 0.0)
    probs = np.array([p.channel_probs[c] for c in ("official_account", "wecom", "group")])
    ch = rng.random((3, k)) < probs[:, None]
    ch[0] |= ~ch.any(axis=0)  # everyone arrives through at least one channel
    st.ch[:, s] = ch
    st.member[s] = rng.random(k) < p.member_on_join
    st.joined[s] = True


def tier_ranks(st: State, koc_min_referrals: int, engaged_min_actions: int, orders_only: bool = False) -> np.ndarray:
    """docs/design.md §3 tier rank (index into contract.TIERS) of every row, as of the state's instant.

    `orders_only`: the tiers a log of purchases and refunds alone gives (simulation.export: orders): a user is
    known from the first order and connected implicitly ever after, lapsed buyers are engaged, no KOC.
    """
    if orders_only:
        rank = np.select([st.cnt_p >= 2, st.cnt_p >= 1, st.total_nc - st.cnt_p > 0], [4, 3, 2], 1).astype("i1")
        rank[st.n_buys == 0] = 0
        return rank
    conn = st.ch.any(axis=0)
    buyer = st.cnt_p >= 1
    repeat = st.cnt_p >= 2
    koc = repeat & (st.cnt_r >= koc_min_referrals)
    engaged = st.member | (st.total_nc - st.cnt_p > 0) | (st.cnt_a >= engaged_min_actions)
    rank = np.select([koc, repeat, buyer, engaged], [5, 4, 3, 2], 1).astype("i1")
    rank[~conn] = 0
    return rank
