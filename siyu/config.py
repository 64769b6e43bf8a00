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

from siyu.errors import SiyuError
from siyu.features.contract import EVENTS

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
    feature_windows: tuple[int, ...] = Field((7, 30, 90), description="windows (days) for RFM features")
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
    class_weight: Literal["balanced", "none"] = Field("balanced", description="weight positives by negatives/positives")
    calibration: Literal["platt", "isotonic", "none"] = Field("platt", description="fitted on the held-back cutoff")
    monotone: bool = Field(True, description="apply the registry's monotone hints as LightGBM constraints")
    lift_fractions: tuple[float, ...] = Field((0.05, 0.1, 0.2), description="top shares for lift and catch rate")
    gate_metric: Literal["roc_auc", "pr_auc"] = Field("roc_auc", description="challenger must match the champion on it")
    rule_recency_feature: str = Field("days_since_last_activity", description="churn rule baseline: days since last activity")
    rfm_families: tuple[str, ...] = Field(("recency", "frequency", "monetary"), description="logistic baseline inputs")
    shap_sample: int = Field(5000, gt=0, description="validation rows explained for the SHAP summary")


class ScoringConfig(_Strict):
    buckets: dict[str, float] = Field(
        default_factory=lambda: {"low": 0.0, "medium": 0.5, "high": 0.8},
        description="percentile lower bounds (0-1) of each risk bucket",
    )


class SimulationConfig(_Strict):
    """Parameters of the built-in world; the simulator documents each one."""

    model_config = ConfigDict(extra="allow", frozen=True)


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
