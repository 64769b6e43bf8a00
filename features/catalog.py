"""The feature registry: every feature declared once (name, family, meaning, unit, SQL).

Training uses the order of FEATURES as the model's column order; the model
report and the API's reasons read `meaning` and `unit` from here; the feature
SQL (features.compute) compiles `expr`. Window lengths come from the
config (`windows.feature_windows`, `windows.period_days`); FEATURES is the
list for the default config, `features_of(cfg)` the list for any other.

`expr` is SQL over one user at one cutoff day `{d}`, with placeholders:
`{n:EV:HI[:LO]}` events in (d-HI, d-LO] days, `{amt:..}` their amount,
`{coupon:..}` coupon purchases, `{days:..}` distinct active days;
lifetime (everything up to d): `{ln:EV}`, `{lamt:EV}`, `{lrsum:EV}` /
`{lrn:EV}` (rating sum / count), `{last:EV}` / `{first:EV}` (day number);
purchase rhythm over the last `rhythm` days: `{gap:mean}` / `{gap:sd}`, the mean and
standard deviation of the gaps between consecutive distinct purchase days (NULL with
fewer than two, resp. three, purchase days: missing, not zero), `{gap:n}` their number
and `{gap:first}` the first of them (NULL without a purchase).
EV is `a+b` (event names), `@family`, `@user` (user-side) or `@all`.
Ladder columns: `t.*` (tiers at d), `prev.tier_rank`, `{days_in_tier}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from siyu.config import default_config
from siyu.contract import ACTIONS, FAMILIES

HOLDOUT_FEATURE = "in_holdout"  # the control-group flag: an input of the labels, the arm of the push effect


@dataclass(frozen=True)
class Feature:
    """One model input.

    Attributes:
        name: column name in feature tables.
        family: signal family (recency, frequency, monetary, engagement, trust, advocacy, ladder).
        meaning: a readable phrase, used in reasons ("days since the last purchase").
        unit: days, count, ratio, currency, tier rank, ...
        kind: numeric, or categorical (encoded as an integer code).
        monotone: expected direction per label (+1 the label's probability rises with it, -1 falls).
        sources: event families it reads; NaN for the whole table when one is absent from the log.
        expr: the SQL definition (see the module docstring).
    """

    name: str
    family: str
    meaning: str
    unit: str
    kind: Literal["numeric", "categorical"] = "numeric"
    monotone: tuple[tuple[str, int], ...] = ()
    sources: tuple[str, ...] = ()
    expr: str = field(default="", compare=False, repr=False)


def _ratio(a: str, b: str) -> str:
    return f"CAST({a} AS DOUBLE) / NULLIF({b}, 0)"


def _trend(a: str, b: str) -> str:
    return f"CASE WHEN {a} + {b} = 0 THEN 0.0 ELSE CAST({a} - {b} AS DOUBLE) / ({a} + {b}) END"


def _family_spec(fam: str) -> str:
    """The events a family feature counts: exposure counts pushes only, never the control-group markers."""
    return "message_sent" if fam == "exposure" else f"@{fam}"


def features_for(windows: tuple[int, ...], period: int, horizon: int, rhythm: int) -> list[Feature]:
    """Declare every feature for the given RFM windows (shortest..longest), period P, horizon H and rhythm lookback."""
    ws = tuple(sorted(windows))
    mid, long = ws[min(1, len(ws) - 1)], ws[-1]
    F: list[Feature] = []

    def add(name, family, meaning, unit, expr, sources=(), mono=(), kind="numeric"):
        F.append(Feature(name, family, meaning, unit, kind, tuple(mono), tuple(sources), expr))

    churn_up, churn_down = (("churn", 1),), (("churn", -1),)
    # recency and tenure
    for fam in FAMILIES:
        add(
            f"days_since_{fam}",
            "recency",
            f"days since the last {fam} event",
            "days",
            f"{{d}} - {{last:{_family_spec(fam)}}}",
            (fam,),
            # a recent complaint or mute raises the churn risk: days since friction may only lower it
            churn_up if fam in ("engagement", "commerce") else churn_down if fam == "friction" else (),
        )
    add(
        "days_since_purchase",
        "recency",
        "days since the last purchase",
        "days",
        "{d} - {last:purchase}",
        ("commerce",),
        churn_up,
    )
    add(
        "days_since_user_event",
        "recency",
        "days since the user last did anything",
        "days",
        "{d} - {last:@user}",
        (),
        churn_up,
    )
    add("tenure_days", "recency", "days since the user's first event", "days", "{d} - {first:@all}")
    # frequency per family and window
    for fam in FAMILIES:
        for w in ws:
            add(
                f"n_{fam}_{w}d",
                "frequency",
                f"{fam} events in the last {w} days",
                "count",
                f"{{n:{_family_spec(fam)}:{w}}}",
                (fam,),
            )
    for w in ws:
        add(
            f"n_purchase_{w}d",
            "frequency",
            f"purchases in the last {w} days",
            "count",
            f"{{n:purchase:{w}}}",
            ("commerce",),
            (("churn", -1), ("promotion", 1)),
        )
        add(
            f"purchase_days_{w}d",
            "frequency",
            f"days with a purchase in the last {w} days",
            "days",
            f"{{days:purchase:{w}}}",
            ("commerce",),
            (("churn", -1),),
        )
    add("n_purchase_life", "frequency", "purchases ever", "count", "{ln:purchase}", ("commerce",))
    # purchase rhythm: a user's own usual gap, so "90 days without a purchase" reads differently
    # for a weekly and a twice-a-year buyer (carries across brands where fixed windows do not)
    add(
        "purchase_gap_mean",
        "frequency",
        f"mean days between purchase days (last {rhythm} days)",
        "days",
        "{gap:mean}",
        ("commerce",),
    )
    add(
        "purchase_gap_sd",
        "frequency",
        f"spread (sd) of the days between purchase days (last {rhythm} days)",
        "days",
        "{gap:sd}",
        ("commerce",),
    )
    # BTYD's (x, T): repeat purchase days and the time since the first (t_x = x * mean gap)
    add(
        "repeat_purchase_days",
        "frequency",
        f"purchase days after the first one (last {rhythm} days)",
        "days",
        "coalesce({gap:n}, 1) - 1",
        ("commerce",),
    )
    add(
        "days_since_first_purchase",
        "recency",
        f"days since the first purchase of the last {rhythm} days",
        "days",
        "{d} - {gap:first}",
        ("commerce",),
    )
    add(
        "purchase_overdue_ratio",
        "recency",
        "days since the last purchase over the user's usual gap",
        "ratio",
        _ratio("{d} - {last:purchase}", "{gap:mean}"),
        ("commerce",),
    )
    add(
        "purchase_overdue_z",
        "recency",
        "days since the last purchase beyond the usual gap, in gap sds",
        "sds",
        _ratio("{d} - {last:purchase} - {gap:mean}", "{gap:sd}"),
        ("commerce",),
    )
    # monetary
    for w in ws:
        add(
            f"purchase_amount_{w}d",
            "monetary",
            f"money spent in the last {w} days",
            "currency",
            f"{{amt:purchase:{w}}}",
            ("commerce",),
        )
    add("purchase_amount_life", "monetary", "money spent ever", "currency", "{lamt:purchase}", ("commerce",))
    add(
        f"avg_order_value_{long}d",
        "monetary",
        f"average order value over the last {long} days",
        "currency",
        _ratio(f"{{amt:purchase:{long}}}", f"{{n:purchase:{long}}}"),
        ("commerce",),
    )
    # engagement
    for w in ws:
        add(
            f"active_days_{w}d",
            "engagement",
            f"days with any user activity in the last {w} days",
            "days",
            f"{{days:@user:{w}}}",
            (),
            churn_down,
        )
    for ev, what in (("message_open", "open"), ("message_reply", "reply"), ("click", "click")):
        for w in (mid, long) if ev == "message_open" else (long,):
            add(
                f"{what}_rate_{w}d",
                "engagement",
                f"{what}s per push received in the last {w} days",
                "ratio",
                _ratio(f"{{n:{ev}:{w}}}", f"{{n:message_sent:{w}}}"),
                ("engagement", "exposure"),
                churn_down,
            )
    for ev in ("group_message", "like", "live_watch", "visit"):
        add(
            f"n_{ev}_{long}d",
            "engagement",
            f"{ev.replace('_', ' ')} events in the last {long} days",
            "count",
            f"{{n:{ev}:{long}}}",
            ("engagement",),
        )
    # Activity is the actions of the engaged rule: a complaint or mute is not interest, and counting
    # it here would let a churn-lowering trend absorb friction (found by the end-to-end friction test).
    for name, ev, src in (
        ("activity", "+".join(ACTIONS), ()),
        ("purchase", "purchase", ("commerce",)),
        ("push", "message_sent", ("exposure",)),
    ):
        add(
            f"{name}_trend",
            "engagement",
            f"{name} in the last {mid} days against the {mid} before (-1..1)",
            "ratio",
            _trend(f"{{n:{ev}:{mid}}}", f"{{n:{ev}:{2 * mid}:{mid}}}"),
            src,
            churn_down if name != "push" else (),
        )
    add(
        "active_days_trend",
        "engagement",
        f"active days in the last {mid} days against the {mid} before (-1..1)",
        "ratio",
        _trend(f"{{days:@user:{mid}}}", f"{{days:@user:{2 * mid}:{mid}}}"),
        (),
        churn_down,
    )
    # trust
    resp = "message_open+message_reply"
    for w in (mid, long):
        add(
            f"responsiveness_{w}d",
            "trust",
            f"opens and replies per push in the last {w} days",
            "ratio",
            _ratio(f"{{n:{resp}:{w}}}", f"{{n:message_sent:{w}}}"),
            ("engagement", "exposure"),
            churn_down,
        )
        add(
            f"fatigue_{w}d",
            "trust",
            f"pushes per response (plus one) in the last {w} days",
            "ratio",
            f"CAST({{n:message_sent:{w}}} AS DOUBLE) / (1 + {{n:{resp}+click:{w}}})",
            ("engagement", "exposure"),
            churn_up,
        )
    # The same rates over the whole history: trust and need drift back to a user's own level, so the
    # long-run rate estimates that level with less noise than any window (most useful to LTV).
    add(
        "open_rate_life",
        "trust",
        "opens per push received ever",
        "ratio",
        _ratio("{ln:message_open}", "{ln:message_sent}"),
        ("engagement", "exposure"),
    )
    add(
        "click_rate_life",
        "trust",
        "clicks per push received ever",
        "ratio",
        _ratio("{ln:click}", "{ln:message_sent}"),
        ("engagement", "exposure"),
    )
    add(
        "responsiveness_life",
        "trust",
        "opens and replies per push ever",
        "ratio",
        _ratio(f"{{ln:{resp}}}", "{ln:message_sent}"),
        ("engagement", "exposure"),
    )
    add(
        "fatigue_life",
        "trust",
        "pushes per response (plus one) ever",
        "ratio",
        f"CAST({{ln:message_sent}} AS DOUBLE) / (1 + {{ln:{resp}+click}})",
        ("engagement", "exposure"),
    )
    # Per day known (the first event's day counts): a lifetime count alone grows with tenure.
    for ev, what, src in (
        ("visit", "visits", ("engagement",)),
        ("purchase", "purchases", ("commerce",)),
        ("coupon_claim", "coupon claims", ("commerce",)),
    ):
        add(
            f"{ev}_rate_life",
            "frequency",
            f"{what} per day since the first event",
            "per day",
            f"CAST({{ln:{ev}}} AS DOUBLE) / ({{d}} - {{first:@all}} + 1)",
            src,
        )
    add(
        f"pushes_per_active_day_{long}d",
        "trust",
        f"pushes per active day over the last {long} days",
        "ratio",
        _ratio(f"{{n:message_sent:{long}}}", f"{{days:@user:{long}}}"),
        ("exposure",),
        churn_up,
    )
    # The brand's own control group: a held user gets no pushes, so has nothing to open or answer in H.
    # The brand knows the group when it scores: its markers sit at the period's start.
    add(
        HOLDOUT_FEATURE,
        "trust",
        "is in a no-push control group at the cutoff",
        "flag",
        "CASE WHEN {last:holdout_start} IS NULL THEN 0 WHEN {last:holdout_end} IS NULL"
        " OR {last:holdout_start} >= {last:holdout_end} THEN 1 ELSE 0 END",
        ("exposure",),
    )
    for ev in ("mute", "complaint"):
        add(
            f"n_{ev}_{long}d",
            "trust",
            f"{ev}s in the last {long} days",
            "count",
            f"{{n:{ev}:{long}}}",
            ("friction",),
            (("churn", 1), ("promotion", -1)),
        )
        add(f"n_{ev}_life", "trust", f"{ev}s ever", "count", f"{{ln:{ev}}}", ("friction",), churn_up)
    add(
        f"n_refund_{long}d",
        "trust",
        f"refunds in the last {long} days",
        "count",
        f"{{n:refund:{long}}}",
        ("commerce",),
        churn_up,
    )
    add(
        f"refund_amount_{long}d",
        "trust",
        f"money refunded in the last {long} days",
        "currency",
        f"{{amt:refund:{long}}}",
        ("commerce",),
    )
    add(
        f"refund_rate_{long}d",
        "trust",
        f"refunds per purchase in the last {long} days",
        "ratio",
        _ratio(f"{{n:refund:{long}}}", f"{{n:purchase:{long}}}"),
        ("commerce",),
        churn_up,
    )
    add(
        f"n_coupon_claim_{long}d",
        "trust",
        f"coupons claimed in the last {long} days",
        "count",
        f"{{n:coupon_claim:{long}}}",
        ("commerce",),
    )
    # A claimed coupon is usable for a few days: a recent claim is a purchase on its way.
    add(
        "days_since_coupon_claim",
        "trust",
        "days since the last coupon claim",
        "days",
        "{d} - {last:coupon_claim}",
        ("commerce",),
    )
    add(
        f"coupon_share_{long}d",
        "trust",
        f"share of purchases paid with a coupon in the last {long} days",
        "ratio",
        _ratio(f"{{coupon:purchase:{long}}}", f"{{n:purchase:{long}}}"),
        ("commerce",),
    )
    add(
        "coupon_share_life",
        "trust",
        "share of all purchases paid with a coupon",
        "ratio",
        _ratio("{lcoupon:purchase}", "{ln:purchase}"),
        ("commerce",),
    )
    add(
        "mean_rating_life",
        "trust",
        "average review rating",
        "stars",
        _ratio("{lrsum:review}", "{lrn:review}"),
        ("advocacy",),
        (("churn", -1), ("koc", 1)),
    )
    add("n_review_life", "trust", "reviews written ever", "count", "{ln:review}", ("advocacy",), (("koc", 1),))
    add(
        "channels_open",
        "trust",
        "channels the user is connected on",
        "count",
        "t.channels_open",
        ("connection",),
        churn_down,
    )
    add("is_member", "trust", "is a registered member", "flag", "t.member", ("connection",), churn_down)
    add(
        "n_disconnect_life",
        "trust",
        "channel disconnections ever",
        "count",
        "{ln:unfollow+delete_contact+leave_group}",
        ("connection",),
        churn_up,
    )
    add(
        f"n_disconnect_{long}d",
        "trust",
        f"channel disconnections in the last {long} days",
        "count",
        f"{{n:unfollow+delete_contact+leave_group:{long}}}",
        ("connection",),
        churn_up,
    )
    add(
        "days_since_join",
        "trust",
        "days since the user first connected",
        "days",
        "{d} - {first:follow+add_contact+join_group+member_join}",
        ("connection",),
    )
    # advocacy
    for w in ws:
        add(
            f"n_share_{w}d",
            "advocacy",
            f"shares in the last {w} days",
            "count",
            f"{{n:share:{w}}}",
            ("advocacy",),
            (("koc", 1),),
        )
        add(
            f"n_referral_{w}d",
            "advocacy",
            f"purchases by referred people in the last {w} days",
            "count",
            f"{{n:referral_purchase:{w}}}",
            ("advocacy",),
            (("koc", 1),),
        )
    add(
        f"referred_revenue_{long}d",
        "advocacy",
        f"revenue from referred people in the last {long} days",
        "currency",
        f"{{amt:referral_purchase:{long}}}",
        ("advocacy",),
        (("koc", 1),),
    )
    add(
        "referred_revenue_life",
        "advocacy",
        "revenue from referred people ever",
        "currency",
        "{lamt:referral_purchase}",
        ("advocacy",),
        (("koc", 1),),
    )
    add(
        "n_referral_life",
        "advocacy",
        "purchases by referred people ever",
        "count",
        "{ln:referral_purchase}",
        ("advocacy",),
        (("koc", 1),),
    )
    add(
        f"n_review_{long}d",
        "advocacy",
        f"reviews in the last {long} days",
        "count",
        f"{{n:review:{long}}}",
        ("advocacy",),
        (("koc", 1),),
    )
    # ladder
    add("tier", "ladder", "current tier", "tier rank", "t.tier_rank")
    add("prev_tier", "ladder", f"tier {period} days earlier", "tier rank", "prev.tier_rank")
    add(
        "tier_delta", "ladder", f"tier change over the last {period} days", "tier ranks", "t.tier_rank - prev.tier_rank"
    )
    add(
        "days_in_tier",
        "ladder",
        "days the current tier has held (checked at the RFM windows)",
        "days",
        "{days_in_tier}",
    )
    add(
        "period_purchase_days",
        "ladder",
        f"purchase days (refunds netted) in the last {period} days",
        "days",
        "t.purchase_days",
        (),
        (("churn", -1), ("promotion", 1)),
    )
    add("lapsed_buyer", "ladder", f"bought before the last {period} days", "flag", "t.lapsed", ())
    if 0 < horizon < period:
        # Purchase days that leave the tier's window before the horizon ends: the tier the user
        # falls back to without a new purchase, which a promotion is measured against.
        add(
            "purchase_days_expiring",
            "ladder",
            f"purchase days that leave the {period}-day tier window within the next {horizon} days",
            "days",
            f"{{days:purchase:{period}:{period - horizon}}}",
            ("commerce",),
            (),
        )
    return F


def windows_in(cfg) -> tuple[int, ...]:
    """A config's explicit feature windows (`auto` must be resolved first: features.windows.resolve)."""
    ws = cfg.windows.feature_windows
    if ws == "auto":
        from siyu.errors import SiyuError

        raise SiyuError(
            "windows.feature_windows is auto: resolve it against the log (training) or the champions (scoring)"
        )
    return tuple(ws)


def features_of(cfg) -> list[Feature]:
    """The feature declarations for a config's windows, period, horizon and rhythm lookback."""
    w = cfg.windows
    return features_for(windows_in(cfg), w.period_days, w.horizon_days, w.rhythm_lookback_days)


FEATURES: list[Feature] = features_of(default_config())
"""The features for the default config's windows (mlproject.yaml); the feature SQL compiles each `expr`."""


def feature_names(cfg=None) -> list[str]:
    """Column order of the model inputs (for `cfg`'s windows; default config when None)."""
    if cfg is None:
        return [f.name for f in FEATURES]
    return [f.name for f in features_of(cfg)]


def get(name: str) -> Feature:
    """The declaration of one feature by name."""
    for f in FEATURES:
        if f.name == name:
            return f
    raise KeyError(name)
