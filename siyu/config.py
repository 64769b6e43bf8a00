"""The typed config: `mlproject.yaml` holds every default, these models the types and bounds.

The models declare no default values: every setting's default is written once, in
`mlproject.yaml` (shipped as `siyu/defaults.yaml`). A user's file holds only what differs
and is deep-merged over the defaults; then the environment overrides of ENV_OVERRIDES
apply. MLflow Projects keys (`name`, `python_env`, `entry_points`, ...) are ignored; an
unknown key, a wrong type or a missing value is a one-line error naming the key.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from siyu.contract import CHANNELS, EVENTS
from siyu.errors import SiyuError

MLFLOW_PROJECT_KEYS = frozenset({"name", "python_env", "conda_env", "docker_env", "entry_points"})
# The defaults ship inside the package (siyu/defaults.yaml links to the repo's mlproject.yaml and
# is copied into wheels as package data), so a non-editable install finds them too.
DEFAULTS = resources.files("siyu") / "defaults.yaml"
DEFAULT_CONFIG = Path(str(DEFAULTS))
CONFIG_ENV = "SIYU_CONFIG"
# Environment variables that override one setting each, applied after the files are merged.
# Empty values count as unset. The API token is the one secret: read only from here, never a file.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "SIYU_HOME": ("runtime", "home"),
    "SIYU_DUCKDB_MEMORY_LIMIT": ("runtime", "duckdb_memory_limit"),
    "SIYU_SPARK_MASTER": ("runtime", "spark_master"),
    "SIYU_SPARK_PARTITIONS": ("runtime", "spark_partitions"),
    "SIYU_SCORES": ("serving", "scores"),
    "SIYU_RELOAD_SECONDS": ("serving", "reload_seconds"),
    "SIYU_LOAD_RETRY_SECONDS": ("serving", "load_retry_seconds"),
    "SIYU_LOAD_WAIT_SECONDS": ("serving", "load_wait_seconds"),
    "SIYU_ACCESS_LOG": ("serving", "access_log"),
    "SIYU_TRACING": ("serving", "tracing"),
    "SIYU_API_TOKEN": ("serving", "api_token"),
}
SECRETS = frozenset({("serving", "api_token")})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventsConfig(_Strict):
    """How a brand's log maps onto the canonical contract."""

    mapping: dict[str, str] = Field(description="brand event name -> canonical name")

    @field_validator("mapping")
    @classmethod
    def _targets_are_canonical(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(t for t in v.values() if t not in EVENTS)
        if bad:
            raise ValueError(f"maps to unknown canonical event(s) {bad}")
        return v


class QuarantineConfig(_Strict):
    max_fraction: float = Field(ge=0.0, le=1.0, description="fail the run above this share of bad rows")


class WindowsConfig(_Strict):
    period_days: int = Field(gt=0, description="P: tiers count events in (T-P, T]")
    horizon_days: int = Field(gt=0, description="H: labels look at (T, T+H]")
    feature_windows: tuple[int, ...] = Field(description="windows (days) for RFM features")
    n_cutoffs: int = Field(ge=2, description="rolling cutoffs stacked into the training table")
    cutoff_spacing_days: int = Field(gt=0, description="days between consecutive cutoffs")


class TiersConfig(_Strict):
    koc_min_referrals: int = Field(ge=1)
    engaged_min_actions: int = Field(ge=1)


class LabelsConfig(_Strict):
    churn_mode: Literal["either", "disconnect", "inactive"]


class MlflowConfig(_Strict):
    experiment: str
    tracking_uri: str | None = Field(description="overridden by MLFLOW_TRACKING_URI; default: a local store")
    model_names: dict[str, str] = Field(description="label -> registered model name")


class TrainingConfig(_Strict):
    seed: int
    min_class_count: int = Field(ge=1, description="fewer positives or negatives than this: skip the label")
    lgbm_params: dict[str, Any] = Field(description="LightGBM parameters")
    num_boost_round: int = Field(gt=0)
    early_stopping_rounds: int = Field(gt=0)
    class_weight: Literal["balanced", "sqrt", "none"] = Field(
        description="positive weight: negatives/positives (balanced), its square root, or none"
    )
    calibration: Literal["platt", "isotonic", "none"] = Field(description="fitted on the held-back cutoff")
    monotone: bool = Field(description="apply the registry's monotone hints as LightGBM constraints")
    lift_fractions: tuple[float, ...] = Field(description="top shares for lift and catch rate")
    gate_metric: Literal["roc_auc", "pr_auc"] = Field(description="challenger must match the champion on it")
    rule_recency_feature: str = Field(description="churn rule baseline: days since last activity")
    rfm_families: tuple[str, ...] = Field(description="logistic baseline inputs")
    shap_sample: int = Field(gt=0, description="validation rows explained for the SHAP summary")
    monotone_extra: dict[str, dict[str, int]] = Field(
        description="label -> {feature: +1/-1}: constraints on top of the registry's hints"
    )


class ScoringConfig(_Strict):
    buckets: dict[str, float] = Field(
        description="percentile lower bounds (0-1) of each risk bucket",
    )
    reasons: Literal["path", "shap"] = Field(
        description="reason attributions: path (decision-path, fast) or shap (LightGBM TreeSHAP, slow)"
    )


class SimulationConfig(_Strict):
    """Parameters of the built-in world (docs/design.md §1, §6); the simulator documents each mechanism.

    Daily probabilities are per user per day; rates per week are per channel.
    """

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
    # --- oracle ---
    oracle_replicas: int = Field(ge=1, description="re-simulations of each user's future behind p_oracle")
    chunk_rows: int = Field(ge=1000, description="events buffered before a Parquet row group is written")

    @field_validator("channel_probs", "pushes_per_week")
    @classmethod
    def _known_channels(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(set(v) ^ set(CHANNELS))
        if bad:
            raise ValueError(f"needs exactly the channels {list(CHANNELS)}; wrong: {bad}")
        return v


class RuntimeConfig(_Strict):
    """Where local state lives and how the engines run (each has an environment override)."""

    home: Path | None = Field(description="SIYU_HOME; local state (MLflow store, snapshots); null: .siyu/ beside")
    duckdb_memory_limit: str | None = Field(description="SIYU_DUCKDB_MEMORY_LIMIT, e.g. 8GB; null: half the memory")
    spark_master: str = Field(min_length=1, description="SIYU_SPARK_MASTER: Spark master URL")
    spark_partitions: int = Field(ge=1, description="SIYU_SPARK_PARTITIONS: Spark shuffle partitions")


class ServingConfig(_Strict):
    """The prediction API's settings (`siyu serve`); each has an environment override."""

    scores: Path | None = Field(description="SIYU_SCORES: snapshot to serve; null: the latest `siyu score` wrote")
    reload_seconds: float = Field(ge=0, description="SIYU_RELOAD_SECONDS: look for new champions/snapshot; 0 never")
    load_retry_seconds: float = Field(ge=0, description="SIYU_LOAD_RETRY_SECONDS: wait after a failed load")
    load_wait_seconds: float = Field(ge=0, description="SIYU_LOAD_WAIT_SECONDS: a worker waits for its first load")
    access_log: bool = Field(description="SIYU_ACCESS_LOG: per-request access log")
    tracing: bool = Field(description="SIYU_TRACING: OpenTelemetry spans on the prediction routes too")
    api_token: SecretStr | None = Field(
        exclude=True, description="SIYU_API_TOKEN only (never a file): unset or empty means no token check"
    )

    @property
    def auth_required(self) -> bool:
        """Whether requests need `Authorization: Bearer <token>` (a non-empty SIYU_API_TOKEN)."""
        return self.api_token is not None


class Config(_Strict):
    events: EventsConfig
    quarantine: QuarantineConfig
    windows: WindowsConfig
    tiers: TiersConfig
    labels: LabelsConfig
    mlflow: MlflowConfig
    training: TrainingConfig
    scoring: ScoringConfig
    simulation: SimulationConfig
    runtime: RuntimeConfig
    serving: ServingConfig
    source: Path | None = Field(None, exclude=True, description="the user's file merged over the defaults, if any")

    def tracking_uri(self) -> str:
        """The MLflow tracking URI: env var, then config, then a local store in `home()`."""
        uri = os.environ.get("MLFLOW_TRACKING_URI") or self.mlflow.tracking_uri
        if uri:
            return uri
        return f"sqlite:///{self.home() / 'mlflow.db'}"

    def home(self) -> Path:
        """Folder for local state (MLflow store, snapshots): `runtime.home`, else `.siyu/` beside the
        user's config file, else `.siyu/` in the current folder."""
        if self.runtime.home:
            return self.runtime.home.resolve()
        base = self.source.parent if self.source else Path.cwd()
        return base / ".siyu"


def _key(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _read(path: Path, name: str) -> dict[str, Any]:
    """One YAML mapping without the MLflow Project keys."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise SiyuError(f"config {name}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(raw, dict):
        raise SiyuError(f"config {name}: top level must be a mapping")
    return {k: v for k, v in raw.items() if k not in MLFLOW_PROJECT_KEYS}


@lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    """The packaged defaults, parsed once (callers copy before changing anything)."""
    return _read(DEFAULT_CONFIG, "defaults")


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` deep-merged onto `base`: mappings merge key by key, anything else replaces.

    Args:
        base: the defaults.
        over: the user's partial settings.

    Returns:
        A new mapping (neither argument is changed).
    """
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@lru_cache(maxsize=1)
def default_config() -> Config:
    """The packaged defaults alone (no user file, no environment), validated once."""
    return Config.model_validate({**_defaults(), "serving": {**_defaults()["serving"], "api_token": None}})


def load_config(path: str | Path | None = None) -> Config:
    """The defaults, a user's partial file merged over them, then the environment overrides.

    Args:
        path: the user's YAML (only what differs from the defaults); None reads `SIYU_CONFIG`, and
            without it the defaults alone are used.

    Returns:
        The validated, frozen Config.

    Raises:
        SiyuError: one line naming the file (or environment variable) and the offending key.
    """
    path = path or os.environ.get(CONFIG_ENV) or None
    data = dict(_defaults())
    name = "defaults"
    if path is not None:
        path = Path(path)
        name = str(path)
        if not path.is_file():
            raise SiyuError(f"config file not found: {path}")
        user = _read(path, name)
        for section, key in SECRETS:
            if key in (user.get(section) or {}):
                env = next(e for e, p in ENV_OVERRIDES.items() if p == (section, key))
                raise SiyuError(f"config {name}: key '{section}.{key}': a secret, set it in {env}, not in a file")
        data = merge(data, user)
    from_env: dict[str, str] = {}
    for env, (section, key) in ENV_OVERRIDES.items():
        value = os.environ.get(env, "").strip()
        if isinstance(data.get(section), dict):
            data[section] = {**data[section], key: value or data[section].get(key)}
        if value:
            from_env[f"{section}.{key}"] = env
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        kind = {"extra_forbidden": "unknown key", "missing": "missing value"}.get(err["type"], err["msg"])
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        key = _key(err["loc"])
        where = f"environment {from_env[key]}" if key in from_env else f"config {name}"
        raise SiyuError(f"{where}: key '{key}': {kind}{more}") from e
    return cfg.model_copy(update={"source": path.resolve() if path else None})
