"""A small world whose brand triples its pushes from day CHANGE on, scored at three dates.

The models are the serving world's champions (tests/serving_world.py, trained once per session
and shared with the serving tests), so this world only simulates and scores. Snapshots
(asof = start + day): before_a (150) and before_b (180) before the change, after (210) fifteen
days into it; the events run to day DAYS, so every snapshot's 30-day horizon is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from serving_world import serving_world

from siyu.config import Config

USERS, DAYS, SEED, CHANGE, FACTOR = 600, 240, 11, 195, 3.0
START = datetime(2025, 1, 1)
DAYS_AT = {"before_a": 150, "before_b": 180, "after": 210}
_CACHE: dict = {}


@dataclass
class MonitorWorld:
    root: Path
    cfg: Config
    cfg_path: Path
    events: Path
    snaps: dict[str, Path]
    asof: dict[str, datetime]


def monitor_world() -> MonitorWorld:
    """Simulate (push policy change at day CHANGE) and score the three snapshots; cached."""
    if "w" in _CACHE:
        return _CACHE["w"]
    from serving.batch import score_pool
    from simulation.simulator import simulate_world

    sw = serving_world()
    root = sw.root / "monitor"
    sim = sw.cfg.simulation.model_copy(update={"policy_change_day": CHANGE, "policy_change_push_factor": FACTOR})
    cfg = sw.cfg.model_copy(update={"simulation": sim})
    simulate_world(cfg, USERS, DAYS, START.date(), SEED, root / "world", oracle_cutoffs=[])
    events = root / "world" / "events.parquet"
    snaps, asof = {}, {}
    for name, day in DAYS_AT.items():
        asof[name] = START + timedelta(days=day)
        snaps[name] = root / f"scores_{name}.parquet"
        score_pool(events, asof[name], snaps[name], cfg, record=False, show_progress=False)
    _CACHE["w"] = MonitorWorld(root, cfg, sw.cfg_path, events, snaps, asof)
    return _CACHE["w"]
