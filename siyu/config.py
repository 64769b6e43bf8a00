"""The typed config: `mlproject.yaml` holds every default, these models the types and bounds.

The models declare no default values: every setting's default is written once, in
`mlproject.yaml` (shipped as `siyu/defaults.yaml`). A user's file holds only what differs
and is deep-merged over the defaults; then the environment overrides of ENV_OVERRIDES
apply. MLflow Projects keys (`name`, `python_env`, `entry_points`, ...) are ignored; an
unknown key, a wrong type or a missing value is a one-line error naming the key.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from siyu.contract import CANONICAL_COLUMNS, EVENTS
from siyu.errors import SiyuError
from siyu.simulation_config import SimulationConfig

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
    """How a brand's log maps onto the canonical contract (the schema adapter, applied in events/loader.py)."""

    columns: dict[str, str] = Field(
        description="canonical column -> the brand's column (any subset; the rest keep names)"
    )
    mapping: dict[str, str] = Field(
        description="brand event (or status) value -> canonical event; case-insensitive, trimmed"
    )
    default_event: str | None = Field(
        description="event of every row when the log has no event column (an orders-only export: purchase)"
    )
    time_zone: str = Field(
        description="brand zone: naive times are brand-local; days, tiers, cutoffs count in this zone"
    )
    negative_purchases: Literal["quarantine", "refund"] = Field(
        description="a purchase with a negative amount: quarantined (negative amount), or a refund of that much "
        "(an export that books returns as negative orders)"
    )
    ts_formats: list[str] = Field(
        description="strptime formats tried first on `ts` (brand-local), e.g. ['%d/%m/%Y %H:%M'] for a day-first "
        "export; a value none of them reads is parsed as usual (ISO 8601, compact dates, epoch)"
    )

    @field_validator("columns")
    @classmethod
    def _columns_are_canonical(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in v if k not in CANONICAL_COLUMNS)
        if bad:
            raise ValueError(f"unknown canonical column(s) {bad}; canonical: {list(CANONICAL_COLUMNS)}")
        seen: dict[str, str] = {}
        for canon, src in v.items():
            if not isinstance(src, str) or not src.strip():
                raise ValueError(f"source column of '{canon}' must be a column name")
            key = src.strip().lower()
            if key in seen:
                raise ValueError(f"column '{src}' is the source of both '{seen[key]}' and '{canon}'")
            seen[key] = canon
        return v

    @field_validator("mapping")
    @classmethod
    def _targets_are_canonical(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(t for t in v.values() if t not in EVENTS)
        if bad:
            raise ValueError(f"maps to unknown canonical event(s) {bad}")
        seen: dict[str, str] = {}
        for k in v:
            key = str(k).strip().lower()
            if key in seen:
                raise ValueError(f"values '{seen[key]}' and '{k}' are the same after trimming and lower-casing")
            seen[key] = str(k)
        return v

    @field_validator("default_event")
    @classmethod
    def _default_is_canonical(cls, v: str | None) -> str | None:
        if v is not None and v not in EVENTS:
            raise ValueError(f"'{v}' is not a canonical event")
        return v

    @field_validator("ts_formats")
    @classmethod
    def _strptime_formats(cls, v: list[str]) -> list[str]:
        import duckdb  # the engine that reads them: a format it cannot read fails here, not per row

        for f in v:
            if not isinstance(f, str) or "%" not in f:
                raise ValueError(f"'{f}' is not a strptime format (e.g. '%d/%m/%Y %H:%M')")
            if "%z" in f or "%Z" in f:
                raise ValueError(f"'{f}': a zone in the format is not read; times with an offset parse as ISO 8601")
            try:
                duckdb.execute("SELECT try_strptime('', ?)", [f])
            except duckdb.Error as e:
                raise ValueError(f"'{f}' is not a strptime format: {str(e).splitlines()[0]}") from None
        return v

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{v}' (an IANA name like Asia/Shanghai or UTC)") from None
        return v

    def zone(self) -> ZoneInfo:
        """The brand's time zone."""
        return ZoneInfo(self.time_zone)


class QuarantineConfig(_Strict):
    max_fraction: float = Field(ge=0.0, le=1.0, description="fail the run above this share of bad rows")


class WindowsConfig(_Strict):
    period_days: int = Field(gt=0, description="P: tiers count events in (T-P, T]")
    horizon_days: int = Field(gt=0, description="H: labels look at (T, T+H]")
    feature_windows: tuple[int, ...] | Literal["auto"] = Field(
        description="windows (days) for RFM features, or auto (features.windows.auto_windows)"
    )
    rhythm_lookback_days: int = Field(gt=0, description="purchase-rhythm features read purchase days this far back")
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
    model_prefix: str = Field(
        description="prepended to every registered model name (a brand: two brands never share a champion)"
    )


class TuningConfig(_Strict):
    n_trials: int = Field(ge=1, description="LightGBM search: at most this many Optuna trials per label")
    timeout_s: float = Field(ge=0, description="LightGBM search: no new trial after this many seconds (0: none)")
    max_rows: int = Field(gt=0, description="fit / early-stopping / evaluation rows per fold (seeded sample)")


class TrainingConfig(_Strict):
    seed: int
    folds: int = Field(ge=1, description="walk-forward folds: the latest training cutoffs, each fit on earlier ones")
    candidates: tuple[Literal["lightgbm", "logistic", "rule", "btyd", "blend"], ...] = Field(
        description="scorers compared on the folds"
    )
    tuning: TuningConfig
    gate_margin: float = Field(
        ge=0, description="promote only if the lower CI bound of (new - baseline / champion) exceeds this"
    )
    serve_best_baseline: bool = Field(
        description="no model beats the baselines: the best baseline serves (false: the model, loudly)"
    )
    bootstrap_resamples: int = Field(ge=10, description="bootstrap resamples behind every confidence interval")
    bootstrap_max_rows: int = Field(
        ge=0, description="above this many validation rows, resample a seeded sample this size (0: every row)"
    )
    ci_level: float = Field(gt=0, lt=1, description="confidence level of the intervals and the gate")
    baseline_max_rows: int = Field(gt=0, description="rows (seeded sample) the logistic and rule fit on")
    rule_tier_feature: str = Field(description="promotion / koc rule baseline: the tier-rank feature")
    min_class_count: int = Field(ge=1, description="fewer positives or negatives than this: skip the label")
    lgbm_params: dict[str, Any] = Field(description="LightGBM parameters")
    num_boost_round: int = Field(gt=0)
    early_stopping_rounds: int = Field(gt=0)
    refit_all_cutoffs: bool = Field(
        description="refit LightGBM (classes and LTV) on fit + holdout cutoffs with the early-stopped rounds"
    )
    refit_max_rows: int = Field(ge=0, description="refit only up to this many fit + holdout rows (0: no limit)")
    max_fit_rows: int = Field(ge=0, description="fit rows and held-back rows per label, each: a seeded sample beyond")
    early_stopping_max_rows: int = Field(ge=0, description="held-back rows scored each round (seeded sample; 0: all)")
    class_weight: Literal["balanced", "sqrt", "none"] = Field(
        description="positive weight: negatives/positives (balanced), its square root, or none"
    )
    calibration: Literal["platt", "isotonic", "none", "auto"] = Field(
        description="fitted on the held-back cutoff; auto: platt or isotonic, whichever the folds' log loss prefers"
    )
    monotone: bool = Field(description="apply the registry's monotone hints as LightGBM constraints")
    lift_fractions: tuple[float, ...] = Field(description="top shares for lift and catch rate")
    gate_metric: Literal["roc_auc", "pr_auc"] = Field(
        description="selection on the folds (ROC AUC) and the gate on validation use it"
    )
    rule_recency_feature: str = Field(description="churn rule baseline: days since last activity")
    rfm_families: tuple[str, ...] = Field(description="logistic baseline inputs")
    shap_sample: int = Field(gt=0, description="validation rows explained for the SHAP summary")
    monotone_extra: dict[str, dict[str, int]] = Field(
        description="label -> {feature: +1/-1}: constraints on top of the registry's hints"
    )


class PolicyConfig(_Strict):
    hold_above: float = Field(description="hold when pushes raise the churn probability by more than this ...")
    churn_cost: float = Field(ge=0, description="... unless their spend gain per unit of churn probability exceeds it")
    fatigue_feature: str = Field(description="feature behind the fatigue state (pushes per response)")
    fatigue: dict[Literal["tiring", "fatigued"], float] = Field(description="lower bounds of the fatigue states")


class UpliftConfig(_Strict):
    enabled: bool = Field(description="fit the push-effect model in `siyu train`")
    learner: Literal["s", "t", "x"] = Field(description="meta-learner: s, t or x (S-, T-, X-learner)")
    extra_cutoffs: int = Field(ge=0, description="earlier cutoffs whose control groups the model also learns from")
    min_held_share: float = Field(gt=0, le=1, description="share of the horizon a holdout must cover to count as held")
    min_held_rows: int = Field(ge=1, description="fewer held training rows: no push-effect model")
    max_rows_per_arm: int = Field(ge=1, description="fit rows per arm; a seeded sample beyond")
    num_boost_round: int = Field(ge=1, description="trees per LightGBM model")
    lgbm_params: dict[str, Any] = Field(description="LightGBM parameters of every meta-learner model")
    deciles: int = Field(ge=2, description="bins of the uplift-decile table")
    policy: PolicyConfig


class ScoringConfig(_Strict):
    buckets: dict[str, float] = Field(
        description="percentile lower bounds (0-1) of each risk bucket",
    )
    store_history: bool = Field(
        description="siyu score stores the events beside the snapshot; /predict_events adds them for known users"
    )
    reasons: Literal["path", "shap"] = Field(
        description="reason attributions: path (decision-path, fast) or shap (LightGBM TreeSHAP, slow)"
    )


class LtvSegments(_Strict):
    """Top shares of the pool that count as high on each axis of the CLV x referral-value segment."""

    own_top_share: float = Field(gt=0, lt=1, description="high spender: predicted ltv_own in this top share")
    referral_top_share: float = Field(gt=0, lt=1, description="high advocate: predicted ltv_referral in this top share")


class LtvConfig(_Strict):
    """Lifetime value (docs/design.md §4): own and referred buyers' net spend over the horizon L."""

    horizon_days: int = Field(gt=0, description="L: ltv labels look at (T, T+L]")
    tweedie_variance_power: float = Field(gt=1, lt=2, description="LightGBM Tweedie objective's variance power")
    tuning_timeout_s: float = Field(ge=0, description="LightGBM search for ltv: no new trial after this (0: none)")
    learning_rate: float = Field(gt=0, le=1, description="the LTV boosters' starting learning rate")
    fold_max_rows: int = Field(gt=0, description="fit / early-stopping / evaluation rows per LTV fold")
    cross_fit_groups: int = Field(ge=2, description="user groups of the cross-fitted validation predictions")
    fold_user_groups: int = Field(
        ge=2, description="user groups per walk-forward fold: each judged by a fit on the others (LTV selection)"
    )
    max_fit_rows: int = Field(ge=0, description="fit rows and held-back rows, each: a seeded sample beyond (0: all)")
    segments: LtvSegments


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


class Thresholds(_Strict):
    """Watch and alert levels of one drift measure (value >= level)."""

    watch: float = Field(ge=0.0)
    alert: float = Field(ge=0.0)

    @field_validator("alert")
    @classmethod
    def _alert_above_watch(cls, v: float, info) -> float:
        if v < info.data.get("watch", 0.0):
            raise ValueError("alert must be >= watch")
        return v


class MonitoringConfig(_Strict):
    """`siyu monitor`: drift between two snapshots and realised outcomes (monitoring/)."""

    experiment: str = Field(description="MLflow experiment of monitor runs")
    psi_bins: int = Field(ge=2, description="quantile bins of the old snapshot for PSI (+1 for missing)")
    psi: Thresholds = Field(description="PSI of features, scores and tier mix")
    ks: Thresholds = Field(description="KS statistic of features and scores")
    new_share: Thresholds = Field(description="share of new users not in old")
    gone_share: Thresholds = Field(description="share of old users gone from new")
    calibration_bins: int = Field(ge=2, description="score quantile bins of the realised calibration table")
    plot_top: int = Field(ge=1, description="features shown in the drift plot (largest PSI first)")


class Config(_Strict):
    events: EventsConfig
    quarantine: QuarantineConfig
    windows: WindowsConfig
    tiers: TiersConfig
    labels: LabelsConfig
    mlflow: MlflowConfig
    training: TrainingConfig
    scoring: ScoringConfig
    ltv: LtvConfig
    uplift: UpliftConfig
    simulation: SimulationConfig
    runtime: RuntimeConfig
    serving: ServingConfig
    monitoring: MonitoringConfig
    source: Path | None = Field(None, exclude=True, description="the user's file merged over the defaults, if any")

    def fingerprint(self) -> str:
        """A hash of every setting (not the file path): two runs with equal hashes used the same config."""
        text = self.model_dump_json(exclude={"source"})
        return hashlib.sha256(text.encode()).hexdigest()[:16]

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
