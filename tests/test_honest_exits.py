"""Honest exit codes and warnings, and safe defaults (issue #15, items 4 and 7)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime

import pandas as pd
import pytest
import yaml

from siyu.config import DEFAULT_CONFIG
from siyu.errors import SiyuError

SIYU = [sys.executable, "-m", "app"]


def run(*args, env=None):
    return subprocess.run([*SIYU, *map(str, args)], capture_output=True, text=True, timeout=600, env=env)


def test_serve_beyond_loopback_needs_a_token_or_no_auth(tmp_path, monkeypatch):
    import os

    from serving.launch import check_auth, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("api.example.com")
    check_auth("127.0.0.1", no_auth=False, env={})
    check_auth("0.0.0.0", no_auth=False, env={"SIYU_API_TOKEN": "s3cret"})
    check_auth("0.0.0.0", no_auth=True, env={})
    with pytest.raises(SiyuError, match="refusing to serve on 0.0.0.0 without SIYU_API_TOKEN"):
        check_auth("0.0.0.0", no_auth=False, env={"SIYU_API_TOKEN": " "})
    env = {k: v for k, v in os.environ.items() if k != "SIYU_API_TOKEN"}
    r = run("serve", "--host", "0.0.0.0", env=env)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "SIYU_API_TOKEN" in lines[0] and "--no-auth" in lines[0]
    r = run("serve", "--host", "0.0.0.0", "--no-auth", "--scores", tmp_path / "none.parquet", env=env)
    assert r.returncode == 2 and "SIYU_API_TOKEN" not in r.stderr  # past the auth check: the missing snapshot


def _orders(path, days: list[str]):
    pd.DataFrame(
        {
            "user_id": [f"u{i % 3}" for i in range(len(days))],
            "ts": days,
            "event": "purchase",
            "amount": 10.0,
            "order_id": [str(i) for i in range(len(days))],
        }
    ).to_csv(path, index=False)


def test_labels_whose_horizon_runs_past_the_log_are_refused(tmp_path, cfg):
    from features.export import build_table

    log = tmp_path / "log.csv"
    _orders(log, ["2025-01-01 10:00", "2025-02-01 10:00", "2025-03-31 23:00"])
    ok = build_table("labels", log, datetime(2025, 3, 2), cfg)  # horizon ends 2025-04-01 00:00: covered
    assert sorted(ok.user_id) == ["u0", "u1"]  # u2 first buys after the cutoff
    with pytest.raises(SiyuError, match=r"would be censored; the latest complete cutoff is 2025-03-02"):
        build_table("labels", log, datetime(2025, 3, 3), cfg)


def test_train_exits_non_zero_when_no_label_was_trained(tmp_path):
    from simulation.simulator import simulate_world
    from siyu.config import load_config

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw["training"]["min_class_count"] = 1_000_000  # nothing can be trained
    c = tmp_path / "mlproject.yaml"
    c.write_text(yaml.safe_dump(raw))
    simulate_world(load_config(c), users=120, days=200, seed=3, out_dir=tmp_path / "w", oracle_cutoffs=[])
    r = run("train", tmp_path / "w" / "events.parquet", "--config", c)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no label could be trained" in r.stderr
    assert all(f"{lab}: skipped, too little data" in r.stderr for lab in ("churn", "promotion", "koc"))


def test_predict_events_asof_before_every_event_is_an_error_not_an_empty_answer():
    from serving_world import serving_world

    from serving.predictor import Predictor

    world = serving_world()
    pred = Predictor.load(world.cfg, str(world.scores))
    rows = [{"user_id": "new-1", "ts": "2025-06-01T09:00:00", "event": "visit"}]
    with pytest.raises(SiyuError, match=r"asof 2025-05-31 00:00:00 precedes every posted event \(earliest 2025-06-01"):
        pred.predict_events(rows, datetime(2025, 5, 31))
    items, used = pred.predict_events(rows, datetime(2025, 6, 2))
    assert used == datetime(2025, 6, 2) and [i["user_id"] for i in items] == ["new-1"]
