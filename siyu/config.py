"""`mlproject.yaml` parsed once into a typed, validated config object.

The same file carries MLflow Projects keys (`name`, `python_env`,
`entry_points`, ...), which are accepted and ignored here; every other key is
checked, and an unknown key, a wrong type or a missing value is a one-line
error naming the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from siyu.contract import CHANNELS, EVENTS
from siyu.errors import SiyuError

MLFLOW_PROJECT_KEYS = frozenset({"name", "python_env", "conda_env", "docker_env", "entry_points"})
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "mlproject.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventsConfig(_Strict):
    """How a brand's log maps onto the canonical contract."""

    mapping: dict[str, str] = Field(default_factory=dict, description="brand event name -> canonical name")

    @field_validator("mapping")
    @classmethod
    def _targets_are_canonical(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(t for t in v.values() if t not in EVENTS)
        if bad:
            raise ValueError(f"maps to unknown canonical event(s) {bad}")
        return v


class QuarantineConfig(_Strict):
    max_fraction: float = Field(0.01, ge=0.0, le=1.0, description="fail the run above this share of bad rows")


class WindowsConfig(_Strict):
    period_days: int = Field(90, gt=0, description="P: tiers count events in (T-P, T]")
    horizon_days: int = Field(30, gt=0, description="H: labels look at (T, T+H]")
    feature_windows: tuple[int, ...] | Literal["auto"] = Field(
        (7, 30, 90), description="windows (days) for RFM features, or auto (features.windows.auto_windows)"
    )
    rhythm_lookback_days: int = Field(
        365, gt=0, description="purchase-rhythm features read purchase days this far back"
    )
    n_cutoffs: int = Field(6, ge=2, description="rolling cutoffs stacked into the training table")
    cutoff_spacing_days: int = Field(30, gt=0, description="days between consecutive cutoffs")


class TiersConfig(_Strict):
    koc_min_referrals: int = Field(1, ge=1)
    engaged_min_actions: int = Field(1, ge=1)


class LabelsConfig(_Strict):
    churn_mode: Literal["either", "disconnect", "inactive"] = "either"


class MlflowConfig(_Strict):
    experiment: str = "siyu"
    tracking_uri: str | None = Field(None, description="overridden by MLFLOW_TRACKING_URI; default: a local store")
    model_names: dict[str, str] = Field(
        default_factory=lambda: {"churn": "siyu-churn", "promotion": "siyu-promotion", "koc": "siyu-koc"}
    )


class TrainingConfig(_Strict):
    seed: int = 42
    min_class_count: int = Field(100, ge=1, description="fewer positives or negatives than this: skip the label")
    lgbm_params: dict[str, Any] = Field(default_factory=dict)
    num_boost_round: int = Field(500, gt=0)
    early_stopping_rounds: int = Field(30, gt=0)
    class_weight: Literal["balanced", "sqrt", "none"] = Field(
        "sqrt", description="positive weight: negatives/positives (balanced), its square root, or none"
    )
    calibration: Literal["platt", "isotonic", "none"] = Field("platt", description="fitted on the held-back cutoff")
    monotone: bool = Field(True, description="apply the registry's monotone hints as LightGBM constraints")
    lift_fractions: tuple[float, ...] = Field((0.05, 0.1, 0.2), description="top shares for lift and catch rate")
    gate_metric: Literal["roc_auc", "pr_auc"] = Field("roc_auc", description="challenger must match the champion on it")
    rule_recency_feature: str = Field(
        "days_since_user_event", description="churn rule baseline: days since last activity"
    )
    rfm_families: tuple[str, ...] = Field(("recency", "frequency", "monetary"), description="logistic baseline inputs")
    shap_sample: int = Field(2000, gt=0, description="validation rows explained for the SHAP summary")
    monotone_extra: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="label -> {feature: +1/-1}: constraints on top of the registry's hints"
    )


class ScoringConfig(_Strict):
    buckets: dict[str, float] = Field(
        default_factory=lambda: {"low": 0.0, "medium": 0.5, "high": 0.8},
        description="percentile lower bounds (0-1) of each risk bucket",
    )
    reasons: Literal["path", "shap"] = Field(
        "path", description="reason attributions: path (decision-path, fast) or shap (LightGBM TreeSHAP, slow)"
    )


class SimulationConfig(_Strict):
    """Parameters of the built-in world (DESIGN §1, §6); the simulator documents each mechanism.

    Daily probabilities are per user per day; rates per week are per channel.
    """

    # --- arrivals and who the users are ---
    initial_user_share: float = Field(0.4, ge=0.0, le=1.0, description="share of --users already in the pool on day 0")
    campaign_day_rate: float = Field(
        0.06, ge=0.0, le=1.0, description="chance a day is a campaign day (coupons, extra pushes)"
    )
    campaign_arrival_boost: float = Field(
        4.0, ge=1.0, description="new public users on a campaign day, relative to a normal day"
    )
    hunter_share_public: float = Field(
        0.08, ge=0.0, le=1.0, description="coupon hunters among users from public traffic"
    )
    hunter_share_campaign: float = Field(
        0.35, ge=0.0, le=1.0, description="coupon hunters among users joining on campaign days"
    )
    enthusiast_share: float = Field(
        0.08, ge=0.0, le=1.0, description="enthusiasts (high trust, activity, influence) among non-hunters"
    )
    channel_probs: dict[str, float] = Field(
        default_factory=lambda: {"official_account": 0.75, "wecom": 0.45, "group": 0.3},
        description="chance a new user connects on each channel (at least one is forced)",
    )
    member_on_join: float = Field(0.1, ge=0.0, le=1.0, description="chance a new user also signs up as a member")
    # --- hidden values ---
    need_beta: tuple[float, float] = Field(
        (2.0, 3.0), description="Beta(a, b) of each user's base need for the product"
    )
    trust0: dict[str, float] = Field(
        default_factory=lambda: {"regular": 0.45, "coupon_hunter": 0.2, "enthusiast": 0.7},
        description="mean initial trust by segment",
    )
    trust0_sd: float = Field(0.12, ge=0.0, description="spread of initial trust around the segment mean")
    activity_sigma: float = Field(0.6, ge=0.0, description="log-normal spread of the per-user activity level")
    influence_beta: tuple[float, float] = Field((1.5, 6.0), description="Beta(a, b) of how far a user's word spreads")
    fit_beta: tuple[float, float] = Field(
        (3.0, 3.0), description="Beta(a, b) of the share of the brand's pushes relevant to a user"
    )
    # --- brand push policy ---
    pushes_per_week: dict[str, float] = Field(
        default_factory=lambda: {"official_account": 2.0, "wecom": 1.0, "group": 3.0},
        description="brand pushes per week on each channel (at most one per channel per day)",
    )
    push_intensity_sigma: float = Field(
        0.5, ge=0.0, description="log-normal spread of how hard the brand targets a user"
    )
    # --- trust and fatigue ---
    fatigue_days: float = Field(7.0, gt=0.0, description="memory of the fatigue counter (~pushes in the last N days)")
    fatigue_threshold: float = Field(6.0, gt=0.0, description="recent pushes above which fatigue erodes trust")
    trust_gain_relevant: float = Field(
        0.02, ge=0.0, description="trust gained per relevant push opened (times 1 - trust)"
    )
    trust_loss_irrelevant: float = Field(0.006, ge=0.0, description="trust lost per irrelevant push (times trust)")
    trust_loss_fatigue: float = Field(
        0.02, ge=0.0, description="trust lost per day per push above the fatigue threshold"
    )
    trust_gain_service: float = Field(0.05, ge=0.0, description="trust gained when a reply gets real service")
    trust_gain_good_purchase: float = Field(0.05, ge=0.0, description="trust gained by a satisfying purchase")
    trust_loss_bad_purchase: float = Field(
        0.12, ge=0.0, description="trust lost by a disappointing purchase (low rating)"
    )
    trust_loss_refund: float = Field(0.12, ge=0.0, description="trust lost when an order is refunded")
    trust_reversion: float = Field(0.003, ge=0.0, le=1.0, description="daily pull of trust back to its initial value")
    # --- engagement ---
    open_logit: tuple[float, float, float] = Field(
        (-2.0, 3.5, 1.0), description="push open log-odds: intercept, trust, need"
    )
    open_fatigue_penalty: float = Field(
        0.15, ge=0.0, description="open log-odds lost per push above the fatigue threshold"
    )
    muted_open_factor: float = Field(
        0.3, ge=0.0, le=1.0, description="open chance multiplier once a user muted the brand"
    )
    click_prob: float = Field(
        0.35, ge=0.0, le=1.0, description="chance an opened relevant push is clicked (times 0.5 + need)"
    )
    reply_prob: float = Field(
        0.04, ge=0.0, le=1.0, description="chance an opened push gets a reply (a service contact)"
    )
    visit_rate: float = Field(0.03, ge=0.0, le=1.0, description="daily visit chance at activity 1 and trust 1")
    like_rate: float = Field(0.015, ge=0.0, le=1.0, description="daily like chance at activity 1 and trust 1")
    group_message_rate: float = Field(
        0.03, ge=0.0, le=1.0, description="daily chance a group member posts in the group"
    )
    live_watch_rate: float = Field(
        0.15, ge=0.0, le=1.0, description="chance of watching the live stream on a campaign day"
    )
    exposure_days: float = Field(10.0, gt=0.0, description="memory of recent exposure (opens, clicks, visits)")
    # --- commerce ---
    purchase_logit: tuple[float, float, float, float] = Field(
        (-9.2, 3.0, 2.5, 0.8), description="daily purchase log-odds: intercept, need, trust, log(1 + exposure)"
    )
    purchase_campaign_boost: float = Field(1.0, description="purchase log-odds added on campaign days")
    purchase_coupon_boost: float = Field(1.0, description="purchase log-odds added while holding a coupon")
    hunter_buy_prob: float = Field(
        0.35, ge=0.0, le=1.0, description="daily chance a coupon hunter holding a coupon uses it"
    )
    coupon_claim_hunter: float = Field(
        0.8, ge=0.0, le=1.0, description="chance a coupon hunter claims a campaign coupon"
    )
    coupon_claim_other: float = Field(
        0.25, ge=0.0, le=1.0, description="chance others claim a campaign coupon (times need)"
    )
    coupon_valid_days: int = Field(7, ge=1, description="days a claimed coupon stays usable")
    need_satiation: float = Field(0.7, ge=0.0, le=1.0, description="share of need a purchase satisfies")
    need_recovery: float = Field(0.02, ge=0.0, le=1.0, description="daily pull of need back to its base")
    amount_log_mean: float = Field(5.0, description="mean log order amount")
    amount_log_sd: float = Field(0.5, ge=0.0, description="spread of the log order amount")
    satisfaction_prob: float = Field(0.85, ge=0.0, le=1.0, description="chance a purchase satisfies")
    refund_prob_unsatisfied: float = Field(0.5, ge=0.0, le=1.0, description="chance a disappointing order is refunded")
    refund_max_lag_days: int = Field(10, ge=1, description="a refund comes 1..N days after its order")
    review_prob: tuple[float, float] = Field((0.05, 0.35), description="review chance after a purchase: base, + trust")
    member_on_purchase: float = Field(
        0.15, ge=0.0, le=1.0, description="chance a non-member buyer signs up as a member"
    )
    member_leave_rate: float = Field(
        0.0015, ge=0.0, le=1.0, description="daily chance a member leaves (times 1 - trust)"
    )
    # --- advocacy and fission ---
    share_rate: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="daily share chance of a satisfied repeat buyer of the period (times influence, trust^2)",
    )
    share_window_days: int = Field(45, ge=1, description="a repeat buyer shares within N days of a satisfying purchase")
    referral_conversion: float = Field(
        0.8, ge=0.0, le=1.0, description="chance a share brings a referred buyer (times trust)"
    )
    referral_lag_days: int = Field(7, ge=1, description="a converted share's friend joins and buys 1..N days later")
    referral_circle_decay: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="conversion multiplier per friend already referred in the period (the circle saturates)",
    )
    # --- friction and leaving ---
    mute_rate: float = Field(
        0.004, ge=0.0, le=1.0, description="daily mute chance when pushed (times (1 - trust) and fatigue)"
    )
    complaint_rate: float = Field(
        0.001, ge=0.0, le=1.0, description="daily complaint chance when pushed (times (1 - trust)^2 and fatigue)"
    )
    leave_rate: float = Field(0.0015, ge=0.0, le=1.0, description="daily chance of dropping one channel at trust 0.5")
    block_rate: float = Field(
        0.0006, ge=0.0, le=1.0, description="daily chance of dropping every channel at trust 0.5, no fatigue"
    )
    leave_trust_coef: float = Field(6.0, ge=0.0, description="leave and block log-hazard per unit of trust below 0.5")
    leave_fatigue_coef: float = Field(1.0, ge=0.0, description="block log-hazard per push above the fatigue threshold")
    leave_after_complaint: float = Field(
        0.3, ge=0.0, le=1.0, description="chance a complaining user drops the channel at once"
    )
    hunter_leave_mult: float = Field(
        5.0, ge=1.0, description="leave hazard multiplier for a coupon hunter who used a coupon"
    )
    rejoin_rate: float = Field(0.01, ge=0.0, le=1.0, description="chance a lost user reconnects on a campaign day")
    # --- oracle ---
    oracle_replicas: int = Field(64, ge=1, description="re-simulations of each user's future behind p_oracle")
    chunk_rows: int = Field(2_000_000, ge=1000, description="events buffered before a Parquet row group is written")

    @field_validator("channel_probs", "pushes_per_week")
    @classmethod
    def _known_channels(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(set(v) ^ set(CHANNELS))
        if bad:
            raise ValueError(f"needs exactly the channels {list(CHANNELS)}; wrong: {bad}")
        return v


class Config(_Strict):
    events: EventsConfig = EventsConfig()
    quarantine: QuarantineConfig = QuarantineConfig()
    windows: WindowsConfig = WindowsConfig()
    tiers: TiersConfig = TiersConfig()
    labels: LabelsConfig = LabelsConfig()
    mlflow: MlflowConfig = MlflowConfig()
    training: TrainingConfig = TrainingConfig()
    scoring: ScoringConfig = ScoringConfig()
    simulation: SimulationConfig = SimulationConfig()
    source: Path | None = Field(None, exclude=True, description="the file this was read from")

    def tracking_uri(self) -> str:
        """The MLflow tracking URI: env var, then config, then a local store beside the config."""
        uri = os.environ.get("MLFLOW_TRACKING_URI") or self.mlflow.tracking_uri
        if uri:
            return uri
        return f"sqlite:///{self.home() / 'mlflow.db'}"

    def home(self) -> Path:
        """Folder for local state (MLflow store, snapshots): `SIYU_HOME` or `.siyu/` beside the config."""
        env = os.environ.get("SIYU_HOME")
        if env:
            return Path(env).resolve()
        base = self.source.parent if self.source else Path.cwd()
        return base / ".siyu"


def _key(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a config file.

    Args:
        path: the YAML file; None means the project's `mlproject.yaml`.

    Returns:
        The validated, frozen Config.

    Raises:
        SiyuError: one line naming the file and the offending key.
    """
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise SiyuError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise SiyuError(f"config {path}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(raw, dict):
        raise SiyuError(f"config {path}: top level must be a mapping")
    data = {k: v for k, v in raw.items() if k not in MLFLOW_PROJECT_KEYS}
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        kind = {"extra_forbidden": "unknown key", "missing": "missing value"}.get(err["type"], err["msg"])
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise SiyuError(f"config {path}: key '{_key(err['loc'])}': {kind}{more}") from e
    return cfg.model_copy(update={"source": path.resolve()})
