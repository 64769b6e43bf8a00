"""The `simulation:` section of the config: the built-in world's parameters (defaults in mlproject.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from siyu.contract import CHANNELS


class SimulationConfig(BaseModel):
    """Parameters of the built-in world (docs/design.md §1, §6); the simulator documents each mechanism.

    Daily probabilities are per user per day; rates per week are per channel.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- arrivals and who the users are ---
    initial_user_share: float = Field(ge=0.0, le=1.0, description="share of --users already in the pool on day 0")
    campaign_day_rate: float = Field(
        ge=0.0, le=1.0, description="chance a day is a campaign day (coupons, extra pushes)"
    )
    campaign_arrival_boost: float = Field(
        ge=1.0, description="new public users on a campaign day, relative to a normal day"
    )
    hunter_share_public: float = Field(ge=0.0, le=1.0, description="coupon hunters among users from public traffic")
    hunter_share_campaign: float = Field(
        ge=0.0, le=1.0, description="coupon hunters among users joining on campaign days"
    )
    enthusiast_share: float = Field(
        ge=0.0, le=1.0, description="enthusiasts (high trust, activity, influence) among non-hunters"
    )
    channel_probs: dict[str, float] = Field(
        description="chance a new user connects on each channel (at least one is forced)",
    )
    member_on_join: float = Field(ge=0.0, le=1.0, description="chance a new user also signs up as a member")
    # --- hidden values ---
    need_beta: tuple[float, float] = Field(description="Beta(a, b) of each user's base need for the product")
    trust0: dict[str, float] = Field(
        description="mean initial trust by segment",
    )
    trust0_sd: float = Field(ge=0.0, description="spread of initial trust around the segment mean")
    activity_sigma: float = Field(ge=0.0, description="log-normal spread of the per-user activity level")
    influence_beta: tuple[float, float] = Field(description="Beta(a, b) of how far a user's word spreads")
    fit_beta: tuple[float, float] = Field(
        description="Beta(a, b) of the share of the brand's pushes relevant to a user"
    )
    # --- brand push policy ---
    pushes_per_week: dict[str, float] = Field(
        description="brand pushes per week on each channel (at most one per channel per day)",
    )
    push_intensity_sigma: float = Field(ge=0.0, description="log-normal spread of how hard the brand targets a user")
    policy_change_day: int | None = Field(
        ge=0, description="day (0 = start) from which the brand's push rates change; None: never"
    )
    policy_change_push_factor: float = Field(ge=0.0, description="multiplier of the weekly push rates from then on")
    # --- trust and fatigue ---
    fatigue_days: float = Field(gt=0.0, description="memory of the fatigue counter (~pushes in the last N days)")
    fatigue_threshold: float = Field(gt=0.0, description="recent pushes above which fatigue erodes trust")
    trust_gain_relevant: float = Field(ge=0.0, description="trust gained per relevant push opened (times 1 - trust)")
    trust_loss_irrelevant: float = Field(ge=0.0, description="trust lost per irrelevant push (times trust)")
    trust_loss_fatigue: float = Field(ge=0.0, description="trust lost per day per push above the fatigue threshold")
    trust_gain_service: float = Field(ge=0.0, description="trust gained when a reply gets real service")
    trust_gain_good_purchase: float = Field(ge=0.0, description="trust gained by a satisfying purchase")
    trust_loss_bad_purchase: float = Field(ge=0.0, description="trust lost by a disappointing purchase (low rating)")
    trust_loss_refund: float = Field(ge=0.0, description="trust lost when an order is refunded")
    trust_reversion: float = Field(ge=0.0, le=1.0, description="daily pull of trust back to its initial value")
    # --- engagement ---
    open_logit: tuple[float, float, float] = Field(description="push open log-odds: intercept, trust, need")
    open_fatigue_penalty: float = Field(ge=0.0, description="open log-odds lost per push above the fatigue threshold")
    muted_open_factor: float = Field(ge=0.0, le=1.0, description="open chance multiplier once a user muted the brand")
    click_prob: float = Field(
        ge=0.0, le=1.0, description="chance an opened relevant push is clicked (times 0.5 + need)"
    )
    reply_prob: float = Field(ge=0.0, le=1.0, description="chance an opened push gets a reply (a service contact)")
    visit_rate: float = Field(ge=0.0, le=1.0, description="daily visit chance at activity 1 and trust 1")
    like_rate: float = Field(ge=0.0, le=1.0, description="daily like chance at activity 1 and trust 1")
    group_message_rate: float = Field(ge=0.0, le=1.0, description="daily chance a group member posts in the group")
    live_watch_rate: float = Field(ge=0.0, le=1.0, description="chance of watching the live stream on a campaign day")
    exposure_days: float = Field(gt=0.0, description="memory of recent exposure (opens, clicks, visits)")
    # --- commerce ---
    purchase_logit: tuple[float, float, float, float] = Field(
        description="daily purchase log-odds: intercept, need, trust, log(1 + exposure)"
    )
    purchase_campaign_boost: float = Field(description="purchase log-odds added on campaign days")
    purchase_coupon_boost: float = Field(description="purchase log-odds added while holding a coupon")
    hunter_buy_prob: float = Field(ge=0.0, le=1.0, description="daily chance a coupon hunter holding a coupon uses it")
    coupon_claim_hunter: float = Field(ge=0.0, le=1.0, description="chance a coupon hunter claims a campaign coupon")
    coupon_claim_other: float = Field(ge=0.0, le=1.0, description="chance others claim a campaign coupon (times need)")
    coupon_valid_days: int = Field(ge=1, description="days a claimed coupon stays usable")
    need_satiation: float = Field(ge=0.0, le=1.0, description="share of need a purchase satisfies")
    need_recovery: float = Field(ge=0.0, le=1.0, description="daily pull of need back to its base")
    amount_log_mean: float = Field(description="mean log order amount")
    amount_log_sd: float = Field(ge=0.0, description="spread of the log order amount")
    satisfaction_prob: float = Field(ge=0.0, le=1.0, description="chance a purchase satisfies")
    refund_prob_unsatisfied: float = Field(ge=0.0, le=1.0, description="chance a disappointing order is refunded")
    refund_max_lag_days: int = Field(ge=1, description="a refund comes 1..N days after its order")
    review_prob: tuple[float, float] = Field(description="review chance after a purchase: base, + trust")
    member_on_purchase: float = Field(ge=0.0, le=1.0, description="chance a non-member buyer signs up as a member")
    member_leave_rate: float = Field(ge=0.0, le=1.0, description="daily chance a member leaves (times 1 - trust)")
    # --- advocacy and fission ---
    share_rate: float = Field(
        ge=0.0,
        le=1.0,
        description="daily share chance of a satisfied repeat buyer of the period (times influence, trust^2)",
    )
    share_window_days: int = Field(ge=1, description="a repeat buyer shares within N days of a satisfying purchase")
    referral_conversion: float = Field(
        ge=0.0, le=1.0, description="chance a share brings a referred buyer (times trust)"
    )
    referral_lag_days: int = Field(ge=1, description="a converted share's friend joins and buys 1..N days later")
    referral_circle_decay: float = Field(
        ge=0.0,
        le=1.0,
        description="conversion multiplier per friend already referred in the period (the circle saturates)",
    )
    # --- friction and leaving ---
    mute_rate: float = Field(
        ge=0.0, le=1.0, description="daily mute chance when pushed (times (1 - trust) and fatigue)"
    )
    complaint_rate: float = Field(
        ge=0.0, le=1.0, description="daily complaint chance when pushed (times (1 - trust)^2 and fatigue)"
    )
    leave_rate: float = Field(ge=0.0, le=1.0, description="daily chance of dropping one channel at trust 0.5")
    block_rate: float = Field(
        ge=0.0, le=1.0, description="daily chance of dropping every channel at trust 0.5, no fatigue"
    )
    leave_trust_coef: float = Field(ge=0.0, description="leave and block log-hazard per unit of trust below 0.5")
    leave_fatigue_coef: float = Field(ge=0.0, description="block log-hazard per push above the fatigue threshold")
    leave_after_complaint: float = Field(
        ge=0.0, le=1.0, description="chance a complaining user drops the channel at once"
    )
    hunter_leave_mult: float = Field(
        ge=1.0, description="leave hazard multiplier for a coupon hunter who used a coupon"
    )
    rejoin_rate: float = Field(ge=0.0, le=1.0, description="chance a lost user reconnects on a campaign day")
    # --- control groups (docs/design.md §2) ---
    holdout_share: float = Field(
        ge=0.0, le=1.0, description="share of connected users drawn into each period's no-push control group"
    )
    holdout_days: int = Field(ge=1, description="holdout period length; one starts at the default cutoff (days - H)")
    # --- oracle ---
    oracle_replicas: int = Field(ge=1, description="re-simulations of each user's future behind p_oracle")
    ltv_oracle_replicas: int = Field(ge=1, description="re-simulations behind the expected own / referral spend")
    chunk_rows: int = Field(ge=1000, description="events buffered before a Parquet row group is written")
    export: Literal["all", "orders"] = Field(
        description="what events.parquet holds: every event, or orders only (purchases and refunds, a shop's "
        "order table); the oracle scores the labels as the written log defines them"
    )

    @field_validator("channel_probs", "pushes_per_week")
    @classmethod
    def _known_channels(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(set(v) ^ set(CHANNELS))
        if bad:
            raise ValueError(f"needs exactly the channels {list(CHANNELS)}; wrong: {bad}")
        return v
