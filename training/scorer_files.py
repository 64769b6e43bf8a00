"""A scoring model as plain files, and loading it back: no Python object is pickled.

A model folder holds `scorer.json` (format, `kind`, label, feature list, calibrator, plus
whatever the kind needs) and the kind's own files (`booster.txt` for LightGBM). `load_dir`
reads `scorer.json` and dispatches on `kind` through `KINDS`; another kind (e.g. `logistic`
with its coefficients in scorer.json) plugs in with one loader function:

    @kind("logistic")
    def _load_logistic(folder: Path, spec: dict, name: str, version: int) -> ScoringModel: ...

Every loaded model offers what serving needs (serving.scoring.ScoringModel): `label`, `name`,
`version`, `feature_names`, `predict_proba(X)` and `contributions(X)` (n x features+1, last
column the bias, in log-odds).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.calibrate import Calibrator

SCORER_FILE = "scorer.json"
FORMAT = 1  # bump when a reader of the old layout would misread the new one
KINDS: dict[str, Callable[[Path, dict, str, int], Any]] = {}


def kind(name: str) -> Callable:
    """Register a loader `(folder, spec, name, version) -> model` for scorer.json's `kind` = `name`."""

    def register(fn: Callable) -> Callable:
        KINDS[name] = fn
        return fn

    return register


def write_spec(folder: Path, kind_name: str, label: str, name: str, feature_names: list[str], **extra) -> Path:
    """Write scorer.json into `folder` (created if needed); returns the folder.

    Args:
        folder: the model folder.
        kind_name: the loader key in KINDS.
        label: churn, promotion or koc.
        name: registered model name.
        feature_names: input columns, in order.
        extra: the kind's JSON-ready fields (e.g. the calibrator, coefficients).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"format": FORMAT, "kind": kind_name, "label": label, "name": name, "feature_names": list(feature_names)}
    (folder / SCORER_FILE).write_text(json.dumps({**spec, **extra}, indent=1))
    return folder


def load_dir(folder: str | Path, name: str = "", version: int = 0):
    """Load a model folder written by `write_spec` (and the kind's writer).

    Args:
        folder: the folder holding scorer.json.
        name: registered model name (default: the one recorded at training).
        version: registered version (0 when loaded outside the registry).

    Returns:
        The kind's model object (see the module docstring for its interface).

    Raises:
        ValueError: unknown kind or a newer format than this code reads.
    """
    folder = Path(folder)
    if not (folder / SCORER_FILE).exists() and (folder / "meta.json").exists():
        spec = _legacy_spec(folder)  # versions logged before scorer.json (pickled pyfunc, same files)
    else:
        spec = json.loads((folder / SCORER_FILE).read_text())
    if int(spec.get("format", 1)) > FORMAT:
        raise ValueError(f"model format {spec['format']} is newer than this siyu reads ({FORMAT}): upgrade siyu")
    if spec["kind"] not in KINDS:
        raise ValueError(f"unknown model kind {spec['kind']!r}; known: {', '.join(sorted(KINDS))}")
    return KINDS[spec["kind"]](folder, spec, name or spec.get("name", ""), int(version))


def _legacy_spec(folder: Path) -> dict:
    meta = json.loads((folder / "meta.json").read_text())
    cal = json.loads((folder / "calibrator.json").read_text())
    return {"format": 1, "kind": "lightgbm", **meta, "calibrator": cal}


@dataclass
class LightGBMModel:
    """A calibrated LightGBM model ready to score numpy rows in `feature_names` order."""

    label: str
    name: str
    version: int
    feature_names: list[str]
    booster: Any  # lightgbm.Booster
    calibrator: Calibrator
    kind: str = "lightgbm"

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, one per row of X (n x features, NaN = missing)."""
        return self.calibrator.apply(self.booster.predict(X))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature contributions in log-odds of the raw model (n x features+1, last = bias)."""
        return self.booster.predict(X, pred_contrib=True)

    def save(self, folder: str | Path) -> Path:
        """Write booster.txt and scorer.json into `folder`; returns it."""
        folder = write_spec(
            folder, self.kind, self.label, self.name, self.feature_names, calibrator=self.calibrator.to_dict()
        )
        self.booster.save_model(str(folder / "booster.txt"))
        return folder


@kind("lightgbm")
def _load_lightgbm(folder: Path, spec: dict, name: str, version: int) -> LightGBMModel:
    import lightgbm as lgb

    booster = lgb.Booster(model_file=str(folder / "booster.txt"))
    cal = Calibrator.from_dict(spec["calibrator"])
    return LightGBMModel(spec["label"], name, version, list(spec["feature_names"]), booster, cal)


@dataclass
class CandidateModel(LightGBMModel):
    """A calibrated non-LightGBM scorer (training.scorers: logistic, rule, blend, btyd), its state in scorer.json.

    `booster` is the candidate: the same `predict(X, pred_contrib=False)` as a LightGBM booster, so
    scoring is LightGBMModel's; only what is written differs.
    """

    kind: str = "logistic"

    def save(self, folder: str | Path) -> Path:
        """Write scorer.json (with the candidate's own JSON state) into `folder`; returns it."""
        return write_spec(
            folder,
            self.kind,
            self.label,
            self.name,
            self.feature_names,
            calibrator=self.calibrator.to_dict(),
            candidate=self.booster.to_json(),
        )


def _load_candidate(folder: Path, spec: dict, name: str, version: int) -> CandidateModel:
    from training.scorers import scorer_from_json

    cal = Calibrator.from_dict(spec["calibrator"])
    scorer = scorer_from_json(spec["candidate"])
    return CandidateModel(spec["label"], name, version, list(spec["feature_names"]), scorer, cal, spec["kind"])


for _name in ("logistic", "rule", "blend", "btyd"):
    kind(_name)(_load_candidate)


@kind("ltv")
def _load_ltv(folder: Path, spec: dict, name: str, version: int):
    from training.ltv_model import load_ltv  # the LTV regression (two Tweedie boosters)

    return load_ltv(folder, spec, name, version)


@kind("ltv_bgnbd_gg")
def _load_baseline_ltv(folder: Path, spec: dict, name: str, version: int):
    from training.ltv_model import load_baseline_ltv  # BG/NBD + Gamma-Gamma, served when no LTV model wins

    return load_baseline_ltv(folder, spec, name, version)


@kind("uplift")
def _load_uplift(folder: Path, spec: dict, name: str, version: int):
    from training.uplift import load_push_effect  # the push-effect model (weighted boosters)

    return load_push_effect(folder, spec, name, version)
