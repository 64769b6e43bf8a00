"""A monitor run in MLflow: headline metrics, the report folder, and links to the scoring model versions."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from siyu.config import Config

log = logging.getLogger(__name__)


def _name(key: str) -> str:
    """An MLflow-legal metric name (letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", key)


def run_metrics(report: dict) -> dict[str, float]:
    """The numbers logged per run: every PSI / KS, tier and user shares, realised and expected metrics."""
    m: dict[str, float] = {}
    d = report["drift"]
    for kind in ("features", "scores"):
        for name, c in d[kind].items():
            for k in ("psi", "ks"):
                if c[k] is not None:
                    m[f"drift.{kind}.{name}.{k}"] = c[k]
    m["drift.tiers.psi"] = d["tiers"]["psi"]
    m["drift.users.new_share"], m["drift.users.gone_share"] = d["users"]["new_share"], d["users"]["gone_share"]
    for lab, r in report["realised"].items():
        if isinstance(r, dict):
            for k, v in r.items():
                if isinstance(v, int | float) and v is not None:
                    m[f"realised.{lab}.{k}"] = float(v)
    for part in ("estimate", "estimate_new"):
        for lab, e in report[part].items():
            for k, v in e.items():
                if isinstance(v, int | float) and v == v:  # v == v: not NaN
                    m[f"{part}.{lab}.{k}"] = float(v)
    m["alerts"], m["watch"] = float(len(report["alerts"])), float(len(report["watch"]))
    return {_name(k): float(v) for k, v in m.items() if v is not None}


def log_run(report: dict, out: Path, cfg: Config) -> str:
    """Log one monitor run; tag it (and the model versions) with the versions that scored each snapshot.

    Args:
        report: the monitor report (as written to monitor.json).
        out: the report folder (logged as the run's artifacts: json, HTML, plots).
        cfg: config (tracking URI, experiment, model names).

    Returns:
        The MLflow run id.
    """
    import mlflow

    from training.model_registry import model_name, use_experiment

    use_experiment(cfg, cfg.monitoring.experiment)
    old, new = report["old"], report["new"]
    tags = {
        "siyu.kind": "monitor",
        "siyu.status": report["status"],
        "siyu.old_asof": old["asof"],
        "siyu.new_asof": new["asof"],
        "siyu.realised": str(report["realised"].get("horizon_complete", False)).lower(),
    }
    for side, s in (("old", old), ("new", new)):
        for lab, v in s["versions"].items():
            if v is not None:
                tags[f"siyu.{side}_model.{lab}"] = f"models:/{model_name(cfg, lab)}/{v}"
    with mlflow.start_run(run_name=f"monitor {old['asof'][:10]} -> {new['asof'][:10]}") as run:
        mlflow.set_tags(tags)
        mlflow.log_params({"old_snapshot": old["path"][-250:], "new_snapshot": new["path"][-250:]})
        mlflow.log_metrics(run_metrics(report))
        mlflow.log_artifacts(str(out))
        run_id = run.info.run_id
    client = mlflow.MlflowClient()
    for side, s in (("old", old), ("new", new)):  # the other direction: a version lists its monitor runs
        for lab, v in s["versions"].items():
            if v is None:
                continue
            try:
                client.set_model_version_tag(model_name(cfg, lab), str(v), f"siyu.monitor_{side}.{run_id}", s["asof"])
            except Exception as e:  # noqa: BLE001 - a version deleted since scoring: the run tags still link it
                log.warning("could not tag %s v%s: %s", model_name(cfg, lab), v, e)
    return run_id
