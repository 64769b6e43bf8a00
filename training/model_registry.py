"""The MLflow side of models: log and register, aliases (`challenger`, `champion`),
the promotion gate, promote / rollback by hand, and fast loading for serving.

A registered version holds a pyfunc model (for `mlflow models serve`) whose
artifacts are the LightGBM booster as text, the calibrator as JSON and the
feature list; `load_model` reads those directly, so serving never goes
through pyfunc or pandas on its hot path.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from siyu.config import Config
from siyu.errors import SiyuError
from training.calibrate import Calibrator

HISTORY_TAG = "siyu.champion_history"  # comma-separated versions that held `champion`, oldest first


def use_tracking(cfg: Config) -> str:
    """Point MLflow at the configured store (env MLFLOW_TRACKING_URI wins) and return its URI."""
    uri = cfg.tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into os.environ, which would make
    # this URI win over every later config in the process; put the user's variable back.
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    return uri


def use_experiment(cfg: Config, name: str) -> str:
    """Select (creating if needed) an experiment; returns its id.

    With a local sqlite store MLflow would put artifacts in `./mlruns` of whatever
    folder the command runs from, so new experiments get `mlartifacts/` beside the store.
    """
    uri = use_tracking(cfg)
    exp = mlflow.get_experiment_by_name(name)
    if exp is None and uri.startswith("sqlite:///"):
        where = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" / name
        mlflow.create_experiment(name, artifact_location=where.resolve().as_uri())
    return mlflow.set_experiment(name).experiment_id


@dataclass
class ScoringModel:
    """A calibrated LightGBM model ready to score numpy rows in `feature_names` order."""

    label: str
    name: str
    version: int
    feature_names: list[str]
    booster: object  # lightgbm.Booster
    calibrator: Calibrator

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, one per row of X (n x features, NaN = missing)."""
        return self.calibrator.apply(self.booster.predict(X))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature contributions in log-odds of the raw model (n x features+1, last = bias)."""
        return self.booster.predict(X, pred_contrib=True)

    @classmethod
    def from_dir(cls, folder: Path, name: str = "", version: int = 0) -> ScoringModel:
        """Build from a folder holding booster.txt, calibrator.json and meta.json."""
        import lightgbm as lgb

        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        booster = lgb.Booster(model_file=str(folder / "booster.txt"))
        cal = Calibrator.from_dict(json.loads((folder / "calibrator.json").read_text()))
        return cls(meta["label"], name or meta.get("name", ""), version, meta["feature_names"], booster, cal)


class SiyuPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper so `mlflow models serve` returns the same calibrated probabilities."""

    def load_context(self, context):
        self.model = ScoringModel.from_dir(Path(context.artifacts["booster"]).parent)

    def predict(self, context, model_input: pd.DataFrame, params=None):
        X = pd.DataFrame(model_input)[self.model.feature_names].to_numpy(dtype=float)
        return self.model.predict_proba(X)


def log_model(booster, calibrator: Calibrator, label: str, name: str, X_example: pd.DataFrame) -> int:
    """Log the model to the active run, register it under `name` and return the new version."""
    import lightgbm

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        booster.save_model(str(d / "booster.txt"))
        (d / "calibrator.json").write_text(json.dumps(calibrator.to_dict()))
        (d / "meta.json").write_text(
            json.dumps({"label": label, "name": name, "feature_names": list(X_example.columns)})
        )
        example = X_example.astype(float)
        pred = calibrator.apply(booster.predict(example.to_numpy()))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=SiyuPyfunc(),
            artifacts={
                k: str(d / f)
                for k, f in (("booster", "booster.txt"), ("calibrator", "calibrator.json"), ("meta", "meta.json"))
            },
            signature=mlflow.models.infer_signature(example, pred),
            input_example=example,
            registered_model_name=name,
            # Pinned explicitly: inferring requirements spawns a slow subprocess.
            pip_requirements=[
                f"lightgbm=={lightgbm.__version__}",
                f"numpy=={np.__version__}",
                f"pandas=={pd.__version__}",
            ],
        )
    return int(info.registered_model_version)


def _client():
    return mlflow.MlflowClient()


def resolve_alias(cfg: Config, label: str, alias: str = "champion") -> int:
    """The version number an alias points to.

    Raises:
        SiyuError: the model or the alias does not exist.
    """
    use_tracking(cfg)
    name = model_name(cfg, label)
    try:
        return int(_client().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException as e:
        if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            # e.g. a tracking server that does not answer: say so, not "train first"
            raise RegistryUnreachable(
                f"cannot reach the MLflow registry at {cfg.tracking_uri()} (unreachable or "
                f"failing): {str(e).splitlines()[0][:200]}"
            ) from e
        raise SiyuError(f"model '{name}' has no version with alias '{alias}' (train first, or `siyu promote`)") from e


def champion_versions(cfg: Config, labels) -> dict[str, int]:
    """label -> version the `champion` alias points to, read without touching the process-wide MLflow URIs.

    For a long-running poller (the API's reload check) that must not redirect other MLflow work
    in the same process.
    """
    uri = cfg.tracking_uri()
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    return {lab: int(client.get_model_version_by_alias(model_name(cfg, lab), "champion").version) for lab in labels}


class RegistryUnreachable(SiyuError):
    """The tracking/registry server did not answer (as opposed to: the model or alias does not exist)."""


def model_name(cfg: Config, label: str) -> str:
    """Registered model name of a label: `mlflow.model_prefix` + `mlflow.model_names[label]`."""
    if label not in cfg.mlflow.model_names:
        raise SiyuError(f"unknown label '{label}'; known: {', '.join(cfg.mlflow.model_names)}")
    return cfg.mlflow.model_prefix + cfg.mlflow.model_names[label]


def load_version(cfg: Config, label: str, version: int) -> ScoringModel:
    """Load one registered version as a ScoringModel."""
    use_tracking(cfg)
    name = model_name(cfg, label)
    with tempfile.TemporaryDirectory() as d:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=d)
        return ScoringModel.from_dir(Path(local) / "artifacts", name, int(version))


def load_model(cfg: Config, label: str, alias: str = "champion") -> ScoringModel:
    """Load the version an alias points to (default: the champion) for fast scoring."""
    return load_version(cfg, label, resolve_alias(cfg, label, alias))


def _history(name: str) -> list[int]:
    tags = _client().get_registered_model(name).tags
    return [int(v) for v in tags.get(HISTORY_TAG, "").split(",") if v]


def _set_champion(name: str, version: int, history: list[int]) -> None:
    c = _client()
    c.set_registered_model_alias(name, "champion", str(version))
    c.set_registered_model_tag(name, HISTORY_TAG, ",".join(str(v) for v in history))


def promote(cfg: Config, label: str, version: int) -> int | None:
    """Make `version` the champion by hand; returns the previous champion (or None)."""
    use_tracking(cfg)
    name = model_name(cfg, label)
    try:
        _client().get_model_version(name, str(version))
    except mlflow.exceptions.MlflowException as e:
        raise SiyuError(f"model '{name}' has no version {version}") from e
    try:
        previous = resolve_alias(cfg, label, "champion")
    except SiyuError:
        previous = None
    history = _history(name)
    if previous is not None and (not history or history[-1] != previous):
        history.append(previous)  # champion set outside siyu: remember it so rollback can return to it
    if previous != version:
        history.append(version)
    _set_champion(name, version, history)
    return previous


def rollback(cfg: Config, label: str) -> int:
    """Move `champion` back to the version that held it before; returns that version."""
    use_tracking(cfg)
    name = model_name(cfg, label)
    current = resolve_alias(cfg, label, "champion")
    history = _history(name)
    while history and history[-1] == current:
        history.pop()
    if not history:
        raise SiyuError(f"model '{name}': no earlier champion to roll back to (champion is version {current})")
    _set_champion(name, history[-1], history)
    return history[-1]


@dataclass
class GateDecision:
    """Whether a new version became champion, and the numbers behind it."""

    promoted: bool
    reason: str
    metric: str
    challenger: float
    champion: float | None = None
    champion_version: int | None = None


def judge(
    cfg: Config,
    label: str,
    version: int,
    X_val: np.ndarray,
    names: list[str],
    y: np.ndarray,
    challenger_score: float,
    metric_fn,
    metric: str,
) -> GateDecision:
    """Whether `version` may become champion: at least as good as the champion on the same validation rows.

    Moves no alias (see apply_gate), so a training run can judge every label first and move
    all aliases together at its very end.

    Args:
        cfg: config (model names).
        label: churn, promotion or koc.
        version: the newly registered version.
        X_val: validation rows, columns in `names` order.
        names: the feature names of X_val's columns.
        y: their outcomes.
        challenger_score: the new version's metric on `val`.
        metric_fn: (y, p) -> float, the same metric computed for the champion.
        metric: its name, for the record.

    Returns:
        The GateDecision.
    """
    try:
        champ_v = resolve_alias(cfg, label, "champion")
    except RegistryUnreachable:
        raise
    except SiyuError:
        return GateDecision(True, "no champion yet", metric, challenger_score)
    champ = load_version(cfg, label, champ_v)
    missing = [f for f in champ.feature_names if f not in names]
    if missing:
        return GateDecision(
            False,
            f"champion v{champ_v} needs features not in this table ({missing[:3]}...); "
            "compare by hand and `siyu promote`",
            metric,
            challenger_score,
            None,
            champ_v,
        )
    cols = [names.index(f) for f in champ.feature_names]
    champ_score = float(metric_fn(y, champ.predict_proba(X_val[:, cols])))
    if challenger_score >= champ_score:
        return GateDecision(
            True,
            f"{metric} {challenger_score:.4f} >= champion v{champ_v} {champ_score:.4f}",
            metric,
            challenger_score,
            champ_score,
            champ_v,
        )
    return GateDecision(
        False,
        f"{metric} {challenger_score:.4f} < champion v{champ_v} {champ_score:.4f}",
        metric,
        challenger_score,
        champ_score,
        champ_v,
    )


def apply_gate(cfg: Config, label: str, version: int, decision: GateDecision) -> None:
    """Point `challenger` at `version`, and `champion` too when the decision promotes it."""
    _client().set_registered_model_alias(model_name(cfg, label), "challenger", str(version))
    if decision.promoted:
        promote(cfg, label, version)
