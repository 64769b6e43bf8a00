"""One day of the built-in world (docs/design.md §1), vectorised over users.

Mechanisms, in the order they act within a day:
1. Lost users may reconnect on campaign days; refunds fall due (cancelling orders).
2. The brand pushes on each open channel (rate per week x the user's targeting
   intensity; every channel on campaign days; a policy change from
   `policy_change_day` on multiplies the rates), except to users in a no-push
   control group (`hold_until`). Fatigue is a decaying count of
   recent pushes; above the threshold it erodes trust and opens.
3. Users open pushes (more with trust and need, less when fatigued or muted),
   click relevant ones and sometimes reply. Relevant opened pushes and replies
   (service) build trust; irrelevant pushes spend it. Opens, clicks and visits
   feed a decaying *exposure*.
4. Engagement (visits, likes, group posts, live streams) scales with activity x trust.
5. Campaign coupons are claimed (coupon hunters almost always).
6. Purchase: log-odds rise with need, trust and exposure (repurchase = need +
   trust + exposure), campaigns and coupons; coupon hunters buy only with a
   coupon. A purchase satisfies need; it disappoints sometimes (low rating,
   maybe a refund later), which costs trust, while a good one builds it.
7. Satisfied, trusting repeat buyers of the period share (chance x influence x
   trust^2, within a window after a good purchase); a share reaches a friend who
   buys 1..referral_lag_days days later with a chance that grows with trust and
   shrinks with each friend already referred in the period (the circle
   saturates), so referrals spread over many sharers (fission). A friend on
   the way is part of the hidden state the oracle copies.
8. Friction: mutes and complaints get likelier with low trust and fatigue.
   Each channel is dropped with a hazard rising as trust falls; a user may also
   block the brand on every channel at once, with a hazard rising with low
   trust and steeply with fatigue (a coupon hunter who used a coupon leaves fast).
9. Need recovers toward its base; trust drifts back toward its initial value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulation.state import HUNTER, State
from simulation.writer import LIVE, MINI, DayEvents, E
from siyu.config import SimulationConfig
from siyu.contract import CHANNELS

F4 = np.float32
CONNECT_CODES = (E["follow"], E["add_contact"], E["join_group"])
DISCONNECT_CODES = (E["unfollow"], E["delete_contact"], E["leave_group"])


@dataclass(frozen=True)
class Calendar:
    """The brand's calendar, shared by the world and the oracle: which days are campaigns."""

    campaign: np.ndarray  # bool per day


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _roll_window(st: State, slot: int) -> None:
    """Forget the day leaving the P-day window (it shares the ring slot with today)."""
    for buf, cnt in ((st.buf_p, st.cnt_p), (st.buf_r, st.cnt_r), (st.buf_a, st.cnt_a)):
        cnt -= buf[slot]
        buf[slot] = 0


def step(
    st: State, d: int, cal: Calendar, p: SimulationConfig, rng: np.random.Generator, ev: DayEvents
) -> tuple[np.ndarray, np.ndarray]:
    """Advance every user of `st` through day `d`.

    Args:
        st: the state (changed in place).
        d: day index (0 = the world's start date).
        cal: campaign calendar.
        p: simulation parameters.
        rng: random generator (the world's, or an oracle replica's).
        ev: the day's event collector (does the tier bookkeeping).

    Returns:
        (referrer rows, order amounts) of today's referral purchases.
    """
    N, slot, camp = st.n, d % st.P, bool(cal.campaign[d])
    rand = lambda *shape: rng.random(shape or (N,), dtype=F4)  # noqa: E731
    _roll_window(st, slot)
    conn = st.ch.any(axis=0)
    hunter = st.segment == HUNTER

    if camp and p.rejoin_rate > 0:  # 1. lost users answer a campaign
        back = np.flatnonzero(st.joined & ~conn & (rand() < p.rejoin_rate))
        st.ch[0, back] = conn[back] = True
        ev.add(CONNECT_CODES[0], back, ch=0)
    due = np.flatnonzero(st.refund_day == d)
    if due.size:
        ev.add(E["refund"], due, ch=MINI, amount=st.refund_amount[due].astype("f8"), order=st.refund_order[due])
        pd_ = st.refund_pday[due]
        live = pd_ > d - st.P  # the order's day is still in the window: un-count it
        st.buf_p[pd_[live] % st.P, due[live]] -= 1
        st.cnt_p[due[live]] -= 1
        st.total_nc[due] -= 1
        st.trust[due] -= p.trust_loss_refund * st.trust[due]
        st.net_spend[due] -= st.refund_amount[due]
        st.refund_day[due] = -1

    # 2-3. pushes, fatigue, opens, clicks, replies (drawn per push, not per user x channel)
    rate = np.array([p.pushes_per_week[c] / 7.0 for c in CHANNELS], dtype=F4)
    if p.policy_change_day is not None and d >= p.policy_change_day:  # the brand's new push policy
        rate *= F4(p.policy_change_push_factor)
    pushed = st.ch if camp else st.ch & (rand(3, N) < rate[:, None] * st.intensity)
    pushed = pushed & (st.hold_until <= d)  # a user in a control group gets no push at all (same draws)
    npush = pushed.sum(axis=0, dtype="i4")
    st.fatigue *= F4(np.exp(-1.0 / p.fatigue_days))
    st.fatigue += npush
    excess = np.maximum(st.fatigue - F4(p.fatigue_threshold), F4(0))
    t = st.trust
    gain, loss, seen = np.zeros(N, F4), np.zeros(N, F4), np.zeros(N, F4)
    a, bt, bn = p.open_logit
    for c in range(3):
        pi = np.flatnonzero(pushed[c])
        u = rng.random((4, pi.size), dtype=F4)
        rel = u[0] < st.fit[pi]
        p_open = _sig(a + bt * t[pi] + bn * st.need[pi] - p.open_fatigue_penalty * excess[pi])
        opened = u[1] < np.where(st.muted[pi], p_open * F4(p.muted_open_factor), p_open)
        clicked = opened & rel & (u[2] < p.click_prob * (0.5 + st.need[pi]))
        replied = opened & (u[3] < p.reply_prob)
        content = d * 3 + c
        ev.add(E["message_sent"], pi, ch=c, content=content)
        ev.add(E["message_open"], pi[opened], ch=c, content=content)
        ev.add(E["click"], pi[clicked], ch=c, content=content)
        ev.add(E["message_reply"], pi[replied], ch=c, content=content)
        gain[pi] += p.trust_gain_relevant * (opened & rel) + p.trust_gain_service * replied
        loss[pi] += p.trust_loss_irrelevant * ~rel
        seen[pi] += opened + 2 * clicked
    t += gain * (1 - t)
    t -= (loss + p.trust_loss_fatigue * excess) * t
    np.clip(t, 0, 1, out=t)

    # 4. engagement
    eng = st.activity * (0.2 + t)
    visit = conn & (rand() < p.visit_rate * eng * (2.0 if camp else 1.0))
    ev.add(E["visit"], np.flatnonzero(visit), ch=MINI)
    ev.add(E["like"], np.flatnonzero(st.ch[0] & (rand() < p.like_rate * eng)), ch=0)
    ev.add(E["group_message"], np.flatnonzero(st.ch[2] & (rand() < p.group_message_rate * eng)), ch=2)
    watch = conn & (rand() < p.live_watch_rate * eng) if camp else np.zeros(N, bool)
    ev.add(E["live_watch"], np.flatnonzero(watch), ch=LIVE)
    st.exposure *= F4(np.exp(-1.0 / p.exposure_days))
    st.exposure += seen + visit + watch

    # 5. coupons on campaign days
    if camp:
        p_claim = np.where(hunter, F4(p.coupon_claim_hunter), p.coupon_claim_other * st.need * (0.5 + t))
        claim = np.flatnonzero(conn & (rand() < p_claim))
        st.coupon_until[claim] = d + p.coupon_valid_days - 1
        ev.add(E["coupon_claim"], claim, ch=MINI)

    # 6. purchases
    has_coupon = st.coupon_until >= d
    b0, b_need, b_trust, b_exp = p.purchase_logit
    logit = (
        b0
        + b_need * st.need
        + b_trust * t
        + b_exp * np.log1p(st.exposure)
        + (p.purchase_campaign_boost if camp else 0.0)
        + p.purchase_coupon_boost * has_coupon
    )
    p_buy = np.where(hunter, np.where(has_coupon, F4(p.hunter_buy_prob), F4(0)), _sig(logit))
    buy = np.flatnonzero(conn & (rand() < p_buy))
    _purchases(st, buy, d, slot, has_coupon[buy], hunter[buy], p, rng, ev)

    # 7. shares and referral purchases: friends reached by an earlier share buy today
    refs = np.flatnonzero(st.ref_day == d)
    st.ref_day[refs] = -1
    elig = conn & (st.cnt_p >= 2) & st.last_sat & (d - st.last_buy_day <= p.share_window_days)
    share = np.flatnonzero(elig & (rand() < p.share_rate * st.influence * t * t))
    ev.add(E["share"], share, ch=0, content=d * 3)
    p_conv = p.referral_conversion * t[share] * F4(p.referral_circle_decay) ** st.cnt_r[share]
    conv = share[(rng.random(share.size, dtype=F4) < p_conv) & (st.ref_day[share] < 0)]
    st.ref_day[conv] = d + rng.integers(1, p.referral_lag_days + 1, size=conv.size)
    st.buf_r[slot, refs] += 1
    st.cnt_r[refs] += 1
    ref_amount = np.round(np.exp(p.amount_log_mean + p.amount_log_sd * rng.standard_normal(refs.size)), 2)

    # 8. friction and leaving
    any_push = npush > 0
    first_ch = lambda rows: np.argmax(pushed[:, rows], axis=0).astype("i1")  # noqa: E731 - the channel that annoyed
    mute = np.flatnonzero(any_push & ~st.muted & (rand() < p.mute_rate * (1 - t) * (1 + excess)))
    st.muted[mute] = True
    ev.add(E["mute"], mute, ch=first_ch(mute))
    compl = np.flatnonzero(any_push & (rand() < p.complaint_rate * (1 - t) ** 2 * (1 + excess)))
    compl_ch = first_ch(compl)
    ev.add(E["complaint"], compl, ch=compl_ch)
    mult = np.exp(p.leave_trust_coef * (0.5 - t)) * np.where(st.hunter_done, F4(p.hunter_leave_mult), F4(1))
    leave = st.ch & (rand(3, N) < p.leave_rate * mult)  # drop one way of being reached
    fed_up = rand() < p.block_rate * mult * np.exp(p.leave_fatigue_coef * excess)
    leave |= st.ch & fed_up  # or block the brand on every channel at once
    slam = rng.random(compl.size, dtype=F4) < p.leave_after_complaint
    leave[compl_ch[slam], compl[slam]] = True
    for c in range(3):
        gone = np.flatnonzero(leave[c])
        st.ch[c, gone] = False
        ev.add(DISCONNECT_CODES[c], gone, ch=c)
    quit_ = np.flatnonzero(st.member & conn & (rand() < p.member_leave_rate * (1 - t)))
    st.member[quit_] = False
    ev.add(E["member_leave"], quit_, ch=MINI)

    # 9. slow drifts
    st.need += (st.need_base - st.need) * F4(p.need_recovery)
    t += (st.trust0 - t) * F4(p.trust_reversion)
    return refs, ref_amount


def _purchases(
    st: State,
    buy: np.ndarray,
    d: int,
    slot: int,
    coupon: np.ndarray,
    hunter: np.ndarray,
    p: SimulationConfig,
    rng: np.random.Generator,
    ev: DayEvents,
) -> None:
    """Today's orders of rows `buy`: amounts, coupons, satisfaction, reviews, refunds, membership."""
    k = buy.size
    if k == 0:
        return
    amount = np.round(np.exp(st.amount_mu[buy] + p.amount_log_sd * rng.standard_normal(k)), 2)
    order = ev.new_orders(k)
    ev.add(E["purchase"], buy, ch=MINI, amount=amount, coupon=coupon, order=order)
    record_purchase(st, buy, d, slot)
    st.net_spend[buy] += amount
    st.need[buy] *= F4(1 - p.need_satiation)
    st.coupon_until[buy[coupon]] = -1
    st.hunter_done[buy[coupon & hunter]] = True
    t = st.trust
    sat = rng.random(k, dtype=F4) < p.satisfaction_prob
    st.last_sat[buy] = sat
    t[buy] = np.where(
        sat, t[buy] + p.trust_gain_good_purchase * (1 - t[buy]), t[buy] - p.trust_loss_bad_purchase * t[buy]
    )
    rb, rt = p.review_prob
    rev = rng.random(k, dtype=F4) < rb + rt * t[buy] + np.where(sat, 0.0, 0.2)
    hi = rng.random(k, dtype=F4) < t[buy]
    rating = np.where(sat, 4 + hi, 1 + hi).astype("i1")
    ev.add(E["review"], buy[rev], ch=MINI, rating=rating[rev], order=order[rev])
    ref = ~sat & (rng.random(k, dtype=F4) < p.refund_prob_unsatisfied) & (st.refund_day[buy] < 0)
    r = buy[ref]
    st.refund_day[r] = d + rng.integers(1, p.refund_max_lag_days + 1, size=r.size)
    st.refund_pday[r], st.refund_amount[r], st.refund_order[r] = d, amount[ref], order[ref]
    join = buy[~st.member[buy] & (rng.random(k, dtype=F4) < p.member_on_purchase)]
    st.member[join] = True
    ev.add(E["member_join"], join, ch=MINI)


def record_purchase(st: State, rows: np.ndarray, d: int, slot: int) -> None:
    """Tier bookkeeping of one (non-cancelled, for now) purchase day per row; need is satisfied."""
    st.buf_p[slot, rows] += 1
    st.cnt_p[rows] += 1
    st.total_nc[rows] += 1
    st.n_buys[rows] += 1
    st.last_buy_day[rows] = d
