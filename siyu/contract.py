"""The event contract (docs/design.md §2): canonical vocabulary, families and column types.

Everything that needs to know what an event *is* imports it from here, so the
validator, the tiers, the features and the simulator share one vocabulary.
"""

from __future__ import annotations

FAMILIES: dict[str, tuple[str, ...]] = {
    "connection": (
        "follow",
        "unfollow",
        "add_contact",
        "delete_contact",
        "join_group",
        "leave_group",
        "member_join",
        "member_leave",
    ),
    "exposure": ("message_sent", "holdout_start", "holdout_end"),
    "engagement": (
        "message_open",
        "message_reply",
        "click",
        "group_message",
        "like",
        "live_watch",
        "visit",
    ),
    "friction": ("mute", "complaint"),
    "commerce": ("coupon_claim", "purchase", "refund"),
    "advocacy": ("review", "share", "referral_purchase"),
}

EVENTS: tuple[str, ...] = tuple(e for events in FAMILIES.values() for e in events)
EVENT_FAMILY: dict[str, str] = {e: f for f, events in FAMILIES.items() for e in events}

# Channels come from the event name, never from the `channel` column (docs/design.md §3).
CONNECT_EVENTS: dict[str, str] = {
    "follow": "official_account",
    "add_contact": "wecom",
    "join_group": "group",
}
DISCONNECT_EVENTS: dict[str, str] = {
    "unfollow": "official_account",
    "delete_contact": "wecom",
    "leave_group": "group",
}
CHANNELS: tuple[str, ...] = ("official_account", "wecom", "group")
MEMBERSHIP_EVENTS: dict[str, bool] = {"member_join": True, "member_leave": False}

# A no-push control group (docs/design.md §2): between the two the brand sends the user nothing.
HOLDOUT_START, HOLDOUT_END = "holdout_start", "holdout_end"
# Everything but the brand's pushes and control-group markers is something the user did.
BRAND_EVENTS: frozenset[str] = frozenset({"message_sent", HOLDOUT_START, HOLDOUT_END})
USER_EVENTS: tuple[str, ...] = tuple(e for e in EVENTS if e not in BRAND_EVENTS)

# Actions that make a connected user `engaged` (docs/design.md §3).
ACTIONS: tuple[str, ...] = (
    "message_open",
    "message_reply",
    "click",
    "group_message",
    "like",
    "live_watch",
    "visit",
    "coupon_claim",
    "purchase",
    "review",
    "share",
)

AMOUNT_REQUIRED: frozenset[str] = frozenset({"purchase", "refund", "referral_purchase"})

# The canonical table every loader produces and every later step reads.
# `ts` is a naive TIMESTAMP: the brand-local wall time in `events.time_zone` (UTC by default; events/loader.ts_sql).
CANONICAL_COLUMNS: dict[str, str] = {
    "user_id": "VARCHAR",
    "ts": "TIMESTAMP",
    "event": "VARCHAR",
    "amount": "DOUBLE",
    "channel": "VARCHAR",
    "ref_user_id": "VARCHAR",
    "rating": "INTEGER",
    "coupon": "BOOLEAN",
    "content_id": "VARCHAR",
    "order_id": "VARCHAR",
}
REQUIRED_COLUMNS: tuple[str, ...] = ("user_id", "ts", "event")

TIERS: tuple[str, ...] = ("lost", "connected", "engaged", "buyer", "repeat", "koc")
"""The ladder, lowest first; `lost` means not connected at the date."""
TIER_RANK: dict[str, int] = {t: i for i, t in enumerate(TIERS)}
LABELS: tuple[str, ...] = ("churn", "promotion", "koc")
# A label that only an event family can show: on a log without it the label is neither trained nor
# predicted (a KOC is known by shares, referrals and reviews, so an order log has none).
NEEDS_FAMILY: dict[str, tuple[str, str]] = {
    "koc": ("advocacy", "the log has no advocacy events (share, referral, review): no KOC can be seen"),
}


def unseen_labels(families) -> dict[str, str]:
    """The labels a log with these event families cannot show (NEEDS_FAMILY), each with why."""
    return {lab: why for lab, (family, why) in NEEDS_FAMILY.items() if family not in families}
