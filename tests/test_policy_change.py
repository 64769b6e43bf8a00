"""The simulator's push-policy change: off by default (same seed, same events), more pushes from its day on."""

from __future__ import annotations

import pandas as pd

from simulation.simulator import simulate_world

USERS, DAYS, CHANGE = 150, 60, 30


def _events(cfg, tmp_path, name, **sim):
    cfg = cfg.model_copy(update={"simulation": cfg.simulation.model_copy(update=sim)})
    simulate_world(cfg, USERS, DAYS, seed=3, out_dir=tmp_path / name, oracle_cutoffs=[])
    return pd.read_parquet(tmp_path / name / "events.parquet")


def test_policy_change_multiplies_pushes_from_its_day_and_changes_nothing_before(cfg, tmp_path):
    base = _events(cfg, tmp_path, "base")
    late = _events(cfg, tmp_path, "late", policy_change_day=DAYS + 5, policy_change_push_factor=3.0)
    pd.testing.assert_frame_equal(base, late)  # a change after the world ends is no change: same seed, same events
    changed = _events(cfg, tmp_path, "changed", policy_change_day=CHANGE, policy_change_push_factor=3.0)
    t0 = base.ts.min().normalize() + pd.Timedelta(days=CHANGE)
    pd.testing.assert_frame_equal(
        base[base.ts < t0].reset_index(drop=True), changed[changed.ts < t0].reset_index(drop=True)
    )

    def pushes_after(ev):
        return int(((ev.event == "message_sent") & (ev.ts >= t0)).sum())

    # less than 3x: campaign days push every channel anyway, a channel gets at most one push a day,
    # and fatigued users leave sooner
    assert pushes_after(changed) > 1.5 * pushes_after(base)
