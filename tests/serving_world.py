"""A small simulated world, trained into a temp MLflow store and batch-scored: what the serving tests use.

Built once per test session (about a minute on 2 cores) and shared by
test_scoring.py and test_service.py through `serving_world()`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import yaml

from siyu.config import DEFAULT_CONFIG, Config, load_config

USERS, DAYS, SEED = 400, 240, 7
_CACHE: dict[str, World] = {}


@dataclass
class World:
    root: Path
    cfg: Config
    cfg_path: Path
    events: Path
    asof: datetime
    scores: Path


def small_config(root: Path) -> Path:
    """The project's config scaled for a few hundred users, with its own MLflow store under `root`."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{root / 'mlflow.db'}"
    t = raw["training"]
    t.update(min_class_count=10, num_boost_round=40, early_stopping_rounds=10, shap_sample=100)
    t["lgbm_params"].update(min_data_in_leaf=20, num_leaves=15, num_threads=1)
    # 400 users cannot separate LightGBM from the baselines beyond noise; the serving tests need its booster.
    t.update(candidates=["lightgbm"], serve_best_baseline=False, tuning={"n_trials": 2, "timeout_s": 0})
    # A 60-day LTV horizon fits 6 LTV cutoffs into the 240 days, so the LTV champion serves too.
    raw["ltv"].update(horizon_days=60, tuning_timeout_s=0)
    path = root / "mlproject.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def serving_world() -> World:
    """Simulate, train (champions registered), batch-score; cached for the session."""
    if "w" in _CACHE:
        return _CACHE["w"]
    from serving.batch import score_pool
    from simulation.simulator import simulate_world
    from training.train import train_all

    root = Path(tempfile.mkdtemp(prefix="siyu-serving-"))
    cfg_path = small_config(root)
    cfg = load_config(cfg_path)
    simulate_world(cfg, users=USERS, days=DAYS, seed=SEED, out_dir=root / "world", oracle_cutoffs=[])
    events = root / "world" / "events.parquet"
    train_all(events, cfg)
    import pandas as pd

    last = pd.read_parquet(events, columns=["ts"]).ts.max()
    asof = datetime(last.year, last.month, last.day) + timedelta(days=1)
    scores = root / "scores.parquet"
    score_pool(events, asof, scores, cfg, record=False, show_progress=False)
    _CACHE["w"] = World(root, cfg, cfg_path, events, asof, scores)
    return _CACHE["w"]
