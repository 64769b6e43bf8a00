"""The simulator's control groups and counterfactual oracle, and the push effect's point-in-time rule (issue #17)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from events.loader import connect
from events.validate import load_valid_events, run_validation
from features.catalog import HOLDOUT_FEATURE, feature_names
from features.compute import feature_table
from simulation.simulator import simulate_world
from siyu.config import default_config
from training.fit import matrix
from training.uplift import arms_frame, fit_push_effect

START, USERS, DAYS, H = date(2025, 1, 1), 700, 150, 30
CUT = date(2025, 1, 1) + timedelta(days=DAYS - H)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cfg = default_config()
    out = tmp_path_factory.mktemp("holdout-world")
    simulate_world(cfg, USERS, DAYS, START, 5, out, [CUT], replicas=4)
    return cfg, out


def test_held_users_get_no_pushes_and_the_markers_pass_validation(world):
    cfg, out = world
    ev = pd.read_parquet(out / "events.parquet", columns=["user_id", "ts", "event"])
    marks = ev[ev["event"].isin(["holdout_start", "holdout_end"])].sort_values(["user_id", "ts"])
    starts = marks[marks["event"] == "holdout_start"]
    assert len(starts) > 0.05 * USERS  # a share of the pool every period
    # One period starts at the oracle cutoff (the day the contrast is read), during that day.
    assert (starts["ts"].dt.normalize() == pd.Timestamp(CUT)).sum() > 0
    ends = marks.groupby("user_id")["ts"].shift(-1)
    iv = starts.assign(end=ends[starts.index].fillna(pd.Timestamp("2100-01-01")))
    pushes = ev[ev["event"] == "message_sent"].merge(iv[["user_id", "ts", "end"]], on="user_id", suffixes=("", "_s"))
    inside = (pushes["ts"] > pushes["ts_s"]) & (pushes["ts"] < pushes["end"])
    assert not inside.any(), "a held user was pushed"
    con = connect(cfg=cfg)
    report = run_validation(con, out / "events.parquet", cfg)
    assert not any(r.startswith("holdout") for r in report.by_reason)


def test_oracle_has_the_push_contrast_of_the_churn_population(world):
    _, out = world
    o = pd.read_parquet(out / "oracle.parquet")
    wide = o.pivot_table(index="user_id", columns="label", values="p_oracle")
    churn_users = set(o.loc[o["label"] == "churn", "user_id"])
    for lab in ("churn_pushed", "churn_held", "spend_pushed", "spend_held", "churn_pushed_a", "churn_held_b"):
        assert set(o.loc[o["label"] == lab, "user_id"]) == churn_users, lab
    assert wide["churn_pushed"].between(0, 1).all() and wide["churn_held"].between(0, 1).all()
    # In this world pushes keep most users active: holding everyone out raises churn and lowers spend.
    assert wide["churn_held"].mean() > wide["churn_pushed"].mean()
    assert wide["spend_held"].mean() < wide["spend_pushed"].mean()
    half = wide[["churn_pushed_a", "churn_pushed_b"]].mean(axis=1)
    np.testing.assert_allclose(half, wide["churn_pushed"], atol=1e-9)  # the halves split the same replicas
    # Realised churn is recorded in the arm the user was really in (null in the other).
    y = o[o["label"].isin(["churn_pushed", "churn_held"])].pivot_table(index="user_id", columns="label", values="y")
    assert not (y["churn_pushed"].notna() & y["churn_held"].notna()).any()


def test_estimate_uses_only_events_up_to_the_cutoff_and_not_the_holdout(world):
    """Features (so estimates) at T are the same from the whole log and from the log cut at T: the
    holdout that starts at T is known (its markers sit at T: `in_holdout`), everything it causes
    after T, the held users' labels included, is unseen."""
    cfg, out = world
    T = datetime.combine(CUT, datetime.min.time())
    names = feature_names(cfg)
    assert [n for n in names if "holdout" in n] == [HOLDOUT_FEATURE]
    assert not any(n in ("arm", "held", "spend") for n in names)
    con = connect(cfg=cfg)
    load_valid_events(con, out / "events.parquet", cfg)
    arms = arms_frame(con, [T - timedelta(days=H), T], cfg).set_index(["cutoff", "user_id"])["held_share"]
    full = feature_table(con, T, cfg).set_index("user_id")
    cut_con = connect(cfg=cfg)
    run_validation(cut_con, con.execute("SELECT * FROM events WHERE ts <= ?", [T]).df(), cfg, adapt_columns=False)
    truncated = feature_table(cut_con, T, cfg).set_index("user_id").loc[full.index]
    pd.testing.assert_frame_equal(full[names], truncated[names], check_dtype=False)
    held = [u for u in full.index if arms.get((pd.Timestamp(T), u), 0.0) >= cfg.uplift.min_held_share]
    assert len(held) > 10  # held users at T: their holdout starts at T
    assert (full.loc[held, HOLDOUT_FEATURE] == 1).all() and full[HOLDOUT_FEATURE].mean() < 0.5
    names = [n for n in names if n != HOLDOUT_FEATURE]  # the push effect leaves out its own arm
    # A model fitted on the previous period's arms scores the held users the same from either log.
    prev = feature_table(con, T - timedelta(days=H), cfg)
    arm = np.array([arms.get((pd.Timestamp(T - timedelta(days=H)), u), 0.0) >= 0.9 for u in prev["user_id"]])
    rng = np.random.default_rng(0)
    u = cfg.uplift.model_copy(
        update={"num_boost_round": 10, "lgbm_params": {**cfg.uplift.lgbm_params, "min_data_in_leaf": 5}}
    )
    X_prev = matrix(prev, names)
    model = fit_push_effect(
        X_prev,
        rng.random(len(prev)) < 0.3,
        rng.random(len(prev)),
        arm,
        cfg.model_copy(update={"uplift": u}),
        names,
        "t",
    )
    X_full, X_cut = matrix(full.loc[held].reset_index(), names), matrix(truncated.loc[held].reset_index(), names)
    np.testing.assert_array_equal(model.effects(X_full)["churn"], model.effects(X_cut)["churn"])


def test_the_push_effect_reads_its_earlier_cutoffs_from_the_ltv_table(world, monkeypatch):
    import training.table
    from training.ltv_train import ltv_data
    from training.table import training_cutoffs
    from training.train import _arms

    cfg, out = world
    # label cutoffs on days 80, 100, 120 leave the earlier cutoffs 40 and 60, two of the LTV cutoffs (40, 60, 80)
    cfg = cfg.model_copy(
        update={
            "windows": cfg.windows.model_copy(update={"n_cutoffs": 3, "cutoff_spacing_days": 20}),
            "ltv": cfg.ltv.model_copy(update={"horizon_days": 70}),
        }
    )
    con = connect(cfg=cfg)
    load_valid_events(con, out / "events.parquet", cfg)
    ltv, _, _ = ltv_data(con, cfg)
    cuts = training_cutoffs(con, cfg)
    computed = _arms(con, cuts, cfg)[0][1]
    monkeypatch.setattr(training.table, "training_table", lambda *a, **k: pytest.fail("features computed twice"))
    shared = _arms(con, cuts, cfg, ltv)[0][1]
    assert len(shared) > 100 and set(shared["cutoff"]) < set(ltv["cutoff"])
    for t in (shared, computed):
        t["cutoff"] = pd.to_datetime(t["cutoff"])
    pd.testing.assert_frame_equal(shared, computed, check_dtype=False)
