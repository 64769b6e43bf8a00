"""Request and response models of the prediction API (they are its OpenAPI schema).

Requests forbid unknown fields and bound every list (1..1000), so bad input is
a 400 naming the field instead of a silent accept or a 500.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

MAX_ITEMS = 1000
UserId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Text = Annotated[str, StringConstraints(max_length=1024)]
ASOF_RANGE = (datetime(1970, 1, 1), datetime(2200, 1, 1))


def _asof_range(t: datetime | None) -> datetime | None:
    """A cutoff refused outside ASOF_RANGE; an aware one stays aware (the predictor converts it to the brand zone)."""
    if t is None:
        return None
    lo, hi = ASOF_RANGE
    # Compare before converting: shifting 0001-01-01+03:00 to UTC would overflow the datetime range.
    naive = t.replace(tzinfo=None)
    if not lo <= naive < hi:
        raise ValueError(f"asof must be between {lo:%Y-%m-%d} and {hi:%Y-%m-%d}")
    return t


Asof = Annotated[datetime | None, AfterValidator(_asof_range)]

EXAMPLE_REQUEST: dict = {"user_ids": ["u1", "u2", "no-such-user"]}
"""A /predict request body (the docs' example; the tests post it)."""

EXAMPLE_EVENTS_REQUEST: dict = {
    "events": [
        {"user_id": "new-1", "ts": "2025-12-01T09:00:00", "event": "follow", "channel": "official_account"},
        {"user_id": "new-1", "ts": "2025-12-03T20:15:00", "event": "message_open"},
        {"user_id": "new-1", "ts": "2025-12-04T12:00:00", "event": "purchase", "amount": 129.0, "order_id": "o-1"},
    ]
}
"""A /predict_events request body: one new user's first days."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Request):
    """Users to score from the latest snapshot."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": EXAMPLE_REQUEST})
    user_ids: list[UserId] = Field(
        ..., min_length=1, max_length=MAX_ITEMS, description="1 to 1000 user ids as the brand knows them"
    )


class Event(_Request):
    """One raw event in the docs/design.md §2 contract; the batch validator's rules apply."""

    user_id: UserId = Field(..., description="the brand's id for the person")
    ts: str | int | float = Field(
        ...,
        description="ISO 8601 (naive = brand-local, events.time_zone), a compact brand-local 20260315 or "
        "20260315143000, or epoch s / ms; the config's events.ts_formats are tried first",
    )
    event: Text = Field(..., description="canonical event name (follow, purchase, ...) or a name mapped in config")
    amount: float | None = Field(None, description="money, >= 0; required for purchase, refund, referral_purchase")
    channel: Text | None = Field(None, description="official_account, wecom, group, mini_program, live, store, ...")
    ref_user_id: Text | None = Field(None, description="referred person who bought; required for referral_purchase")
    rating: int | None = Field(None, description="review score 1-5; required for review")
    coupon: bool | None = Field(None, description="on purchase: paid with a coupon")
    content_id: Text | None = Field(None, description="content id (de-duplication, joins)")
    order_id: Text | None = Field(None, description="order id; refunds cancel the order with the same id")


class PredictEventsRequest(_Request):
    """Raw events of one or more users (new users, or activity newer than the snapshot)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": EXAMPLE_EVENTS_REQUEST})
    events: list[Event] = Field(
        ...,
        min_length=1,
        max_length=MAX_ITEMS,
        description="1 to 1000 events; known users' stored history is added (see history)",
    )
    history: bool = Field(
        True,
        description="for users the snapshot knows, add their stored history to the posted events "
        "(false: score the posted events alone, a what-if)",
    )
    asof: Asof = Field(
        None,
        description="cutoff (naive = brand-local; an offset is converted to the brand zone; 1970-2200); "
        "default: the later of "
        "the snapshot date and the newest posted event",
    )


class Reason(BaseModel):
    """One of the top drivers of a score (LightGBM contribution of one feature)."""

    feature: str = Field(description="feature name (see the feature registry)")
    value: float | None = Field(description="the user's value; null = no such events")
    direction: Literal["up", "down"] = Field(description="whether this feature raises or lowers the score")
    contribution: float = Field(description="contribution in log-odds")
    sentence: str = Field(description="the reason in words")


class LabelScore(BaseModel):
    """A score with its place in the pool and its reasons."""

    probability: float = Field(description="calibrated probability within the horizon")
    percentile: float = Field(
        description="percentile rank in the snapshot's population (0-100): the share scoring lower plus half "
        "the share scoring the same"
    )
    bucket: str = Field(description="risk bucket from config scoring.buckets")
    reasons: list[Reason] = Field(description="top 3 reasons, strongest first")


class LifetimeValue(BaseModel):
    """Where a user's predicted lifetime value sits in the pool, their segment, and why."""

    percentile: float | None = Field(description="percentile rank of this ltv among the snapshot's users (0-100)")
    percentile_own: float | None = Field(description="the same for ltv_own")
    percentile_referral: float | None = Field(description="the same for ltv_referral; null without advocacy events")
    segment: str | None = Field(
        description="champions (high spend and word of mouth), spenders, advocates or others (ltv.segments)"
    )
    reasons: list[Reason] = Field(description="top 3 reasons, strongest first (contribution on the log scale)")


class UserPrediction(BaseModel):
    """The answer for one user; score fields are null outside that model's population."""

    user_id: str
    status: Literal["ok", "unknown_user"] = Field(description="unknown_user: not in the snapshot")
    tier: str | None = Field(None, description="lost, connected, engaged, buyer, repeat or koc")
    p_churn: float | None = Field(None, description="probability of churning within the horizon")
    p_promotion: float | None = Field(None, description="probability of moving up a tier within the horizon")
    p_koc: float | None = Field(None, description="probability of becoming a KOC within the horizon")
    churn: LabelScore | None = None
    promotion: LabelScore | None = None
    koc: LabelScore | None = None
    ltv: float | None = Field(None, description="predicted net spend over the LTV horizon: own + referred buyers'")
    ltv_own: float | None = Field(None, description="predicted own net spend over the LTV horizon")
    ltv_referral: float | None = Field(
        None, description="predicted net spend of the buyers this user refers; null when the log has no advocacy"
    )
    lifetime_value: LifetimeValue | None = None
    push_effect_churn: float | None = Field(
        None,
        description="P(churn | pushed as usual) - P(churn | held out of pushes) over the horizon; null: no estimate",
    )
    push_effect_spend: float | None = Field(None, description="expected net spend pushed minus held over the horizon")
    contact: Literal["push", "hold"] | None = Field(None, description="the contact advice (config uplift.policy)")
    contact_reason: str | None = Field(None, description="why, in words")
    fatigue: Literal["rested", "tiring", "fatigued"] | None = Field(
        None, description="from pushes per response over the last 30 days"
    )


class SnapshotInfo(BaseModel):
    """Lineage of the served snapshot (null fields: written before lineage was recorded)."""

    file: str = Field(description="snapshot file name")
    events_fingerprint: str | None = Field(None, description="content fingerprint of the scored log")
    events_rows: int | None = Field(None, description="accepted rows of the scored log")
    events_ts_max: str | None = Field(None, description="latest event of the scored log (brand-local)")
    config_hash: str | None = Field(None, description="hash of the config the scores were made with")


class PredictResponse(BaseModel):
    """Predictions, with the model versions and the snapshot they come from."""

    model_versions: dict[str, int | None] = Field(description="registry version per label (the champion at startup)")
    scorers: dict[str, str | None] | None = Field(
        None,
        description=(
            "scorer kind per label: lightgbm, blend, btyd, a baseline (logistic, rule), or operator_rule "
            "(no champion: the thin-data rule, serving/rules.py); null: none (koc on a log without advocacy events: "
            "no KOC can be seen there, so none is predicted)"
        ),
    )
    snapshot_date: datetime = Field(description="cutoff of the served snapshot")
    snapshot: SnapshotInfo | None = Field(None, description="which snapshot served it, and the log it was scored from")
    asof: datetime = Field(description="cutoff the features were computed at")
    predictions: list[UserPrediction]
