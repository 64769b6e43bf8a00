"""The MLflow side of models: log and register, aliases (`challenger`, `champion`),
the promotion gate, promote / rollback by hand, and fast loading for serving.

A registered version is a pyfunc model logged from code (training/mlflow_scorer.py, for
`mlflow models serve` and spark_udf) whose artifact `scorer` is a plain model folder:
scorer.json (kind, feature list, calibrator) plus the kind's files, e.g. booster.txt
(training/scorer_files.py). Nothing is pickled. `load_model` reads the folder directly,
so serving never goes through pyfunc or pandas on its hot path.
"""

from __future__ import annotations

import contextlib
import logging
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
from training.scorer_files import CandidateModel, LightGBMModel, load_dir

HISTORY_TAG = "siyu.champion_history"  # comma-separated versions that held `champion`, oldest first


def use_tracking(cfg: Config) -> str:
    """Point MLflow at the configured store (env MLFLOW_TRACKING_URI wins) and return its URI."""
    uri = cfg.tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # mlflow.set_tracking_uri / set_registry_uri also write MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI
    # into os.environ, which would make this URI win over every later config in the process (and
    # in its subprocesses, e.g. `siyu serve`); put the user's variables back.
    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    return uri


def use_experiment(cfg: Config, name: str) -> str:
    """Select (creating if needed) an experiment; returns its id.

    With a local sqlite store MLflow would put artifacts in `./mlruns` of whatever
    folder the command runs from, so new experiments get `mlartifacts/` beside the store.
    """
    uri = use_tracking(cfg)
    with _quiet_mlflow():  # a new sqlite store logs its table creation at INFO
        exp = mlflow.get_experiment_by_name(name)
        if exp is None and uri.startswith("sqlite:///"):
            where = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" / name
            mlflow.create_experiment(name, artifact_location=where.resolve().as_uri())
        return mlflow.set_experiment(name).experiment_id


# The LightGBM kind; other kinds live beside it in training.scorer_files.KINDS.
ScoringModel = LightGBMModel


def log_model(
    booster, calibrator: Calibrator, label: str, name: str, X_example: pd.DataFrame, kind: str = "lightgbm"
) -> int:
    """Log a calibrated scorer to the active run, register it under `name`; returns the new version.

    Args:
        booster: a LightGBM booster (kind lightgbm) or a training.scorers candidate (its JSON in scorer.json).
        calibrator: its calibrator.
        label: churn, promotion or koc.
        name: registered model name.
        X_example: a few rows (signature, input example).
        kind: the scorer's kind (scorer.json, the version's `siyu.scorer` tag).
    """
    cls = LightGBMModel if kind == "lightgbm" else CandidateModel
    model = cls(label, name, 0, list(X_example.columns), booster, calibrator, kind)
    return log_scoring_model(model, X_example)


def log_scoring_model(model, X_example: pd.DataFrame) -> int:
    """Log any scorer kind (an object with `save(folder)` and `predict_proba`) and register it.

    The MLflow model is code (training/mlflow_scorer.py) plus the model folder as a plain
    artifact, so logging pickles nothing and loading unpickles nothing.

    Args:
        model: e.g. a scorer_files.LightGBMModel; its `name` is the registered model name.
        X_example: a few feature rows (columns = model.feature_names), for the signature and example.

    Returns:
        The registered version.
    """
    import lightgbm

    with tempfile.TemporaryDirectory() as d, _quiet_mlflow():
        folder = model.save(Path(d) / "scorer")
        example = X_example[model.feature_names].astype(float)
        pred = model.predict_proba(example.to_numpy())
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("mlflow_scorer.py")),
            artifacts={"scorer": str(folder)},
            signature=mlflow.models.infer_signature(example, pred),
            input_example=example,
            registered_model_name=model.name,
            # Pinned explicitly: inferring requirements spawns a slow subprocess.
            pip_requirements=[
                f"lightgbm=={lightgbm.__version__}",
                f"numpy=={np.__version__}",
                f"pandas=={pd.__version__}",
            ],
        )
    version = int(info.registered_model_version)
    _client().set_model_version_tag(model.name, str(version), "siyu.scorer", model.kind)
    return version


def _client():
    return mlflow.MlflowClient()


@contextlib.contextmanager
def _quiet_mlflow():
    """MLflow's chatter (download bars, "Successfully registered", INFO lines) off for one call.

    Only around siyu's own calls, so a user's own MLflow work keeps MLflow's output. MLflow's log
    stream is shared, so its warnings of these calls go too; failures still raise.
    """
    # Imported before the switch: their first import sets MLflow's loggers and stream up again.
    import mlflow.artifacts  # noqa: F401
    import mlflow.models  # noqa: F401
    import mlflow.pyfunc  # noqa: F401

    logger = logging.getLogger("mlflow")
    old_level, old_bar = logger.level, os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    logger.setLevel(logging.WARNING)
    stream = mlflow.utils.logging_utils.MLFLOW_LOGGING_STREAM
    was = stream.enabled
    stream.enabled = False  # eprint's "Successfully registered model" goes through this stream
    try:
        yield
    finally:
        stream.enabled = was
        logger.setLevel(old_level)
        if old_bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = old_bar


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


def load_version(cfg: Config, label: str, version: int):
    """Load one registered version (any kind in scorer_files.KINDS) for scoring."""
    use_tracking(cfg)
    name = model_name(cfg, label)
    with tempfile.TemporaryDirectory() as d, _quiet_mlflow():
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=d))
        folder = local / "artifacts" / "scorer"
        # Versions logged before scorer.json keep the same files directly under artifacts/.
        return load_dir(folder if folder.is_dir() else local / "artifacts", name, int(version))


def load_model(cfg: Config, label: str, alias: str = "champion"):
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
    ci: tuple[float, float] | None = None  # paired-bootstrap CI of (challenger - champion)


def judge(
    cfg: Config,
    label: str,
    version: int,
    X_val: np.ndarray,
    names: list[str],
    y: np.ndarray,
    p_new: np.ndarray,
    baselines: dict[str, np.ndarray],
    fallback: bool,
) -> GateDecision:
    """Whether `version` may become champion, on the same validation rows as the champion and baselines.

    A model version (fallback False; it already beat every baseline) is promoted only if the lower
    bound of the paired-bootstrap CI of (new - champion) exceeds `training.gate_margin`: ties never
    promote. A best-baseline version (fallback True: no model beat the baselines) replaces the
    champion unless the champion itself beats every baseline that way. Moves no alias (apply_gate).

    Args:
        cfg: config (model names, gate metric, margin, bootstrap).
        label: churn, promotion or koc.
        version: the newly registered version.
        X_val: validation rows, columns in `names` order.
        names: the feature names of X_val's columns.
        y: their outcomes.
        p_new: the new version's probabilities on them.
        baselines: baseline name -> probabilities on them.
        fallback: the new version is the best baseline, not a model.

    Returns:
        The GateDecision.
    """
    from training import bootstrap

    t = cfg.training
    metric, margin = t.gate_metric, t.gate_margin
    new_score = bootstrap.point(y, p_new)[metric]
    try:
        champ_v = resolve_alias(cfg, label, "champion")
    except RegistryUnreachable:
        raise
    except SiyuError:
        why = "no champion yet" + ("; serving the best baseline" if fallback else "; beats every baseline")
        return GateDecision(True, why, metric, new_score)
    champ = load_version(cfg, label, champ_v)
    missing = [f for f in champ.feature_names if f not in names]
    if missing:
        return GateDecision(
            False,
            f"champion v{champ_v} needs features not in this table ({missing[:3]}...); "
            "compare by hand and `siyu promote`",
            metric,
            new_score,
            None,
            champ_v,
        )
    cols = [names.index(f) for f in champ.feature_names]
    p_champ = champ.predict_proba(X_val[:, cols])
    res = bootstrap.resample(
        y, {"new": p_new, "champion": p_champ, **baselines}, t.bootstrap_resamples, t.seed, t.bootstrap_max_rows
    )
    champ_score = bootstrap.point(y, p_champ)[metric]
    lo, hi = bootstrap.difference(res, "new", "champion", metric, t.ci_level)
    d = GateDecision(False, "", metric, new_score, champ_score, champ_v, (lo, hi))
    span = f"{metric} {new_score:.4f} vs champion v{champ_v} ({champ.kind}) {champ_score:.4f}"
    span += f", difference CI [{lo:+.4f}, {hi:+.4f}]"
    if not fallback:
        d.promoted = lo > margin
        d.reason = f"{span} {'>' if d.promoted else 'not >'} margin {margin}"
        return d
    champ_lo = {b: bootstrap.difference(res, "champion", b, metric, t.ci_level)[0] for b in baselines}
    if all(v > margin for v in champ_lo.values()):
        d.reason = f"champion v{champ_v} still beats every baseline ({span}): kept"
        return d
    d.promoted = True
    d.reason = f"champion v{champ_v} ({champ.kind}) does not beat every baseline beyond noise: the best baseline serves"
    return d


def apply_gate(cfg: Config, label: str, version: int, decision: GateDecision) -> None:
    """Point `challenger` at `version`, and `champion` too when the decision promotes it."""
    _client().set_registered_model_alias(model_name(cfg, label), "challenger", str(version))
    if decision.promoted:
        promote(cfg, label, version)
