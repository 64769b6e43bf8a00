"""Crash safety: SIGKILL `siyu train` / `siyu score` at several points; no partial outputs, the rerun succeeds.

train: every registered version loads completely (booster, calibrator, features), every alias points at
such a version, and no alias moved during the killed run. score: the output path holds either nothing
or a complete snapshot (the previous one or the new one), never a half-written Parquet; `latest.json`
points at a complete file.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serving_world import small_config

from reliability.results import record
from siyu.contract import LABELS

KILL_FRACTIONS = (0.3, 0.6, 0.85)


def _env(home: Path) -> dict:
    env = dict(os.environ, SIYU_HOME=str(home))
    env.pop("MLFLOW_TRACKING_URI", None)  # the config names the store
    return env


def _run(argv: list[str], cwd: Path, env: dict, timeout: float = 600) -> tuple[int, float, str]:
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "app", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    return p.returncode, time.monotonic() - t0, p.stdout[-2000:] + p.stderr[-2000:]


def _start(argv: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "app", *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _kill(p: subprocess.Popen) -> bool:
    """SIGKILL the process group; True when it was still running (a real mid-run kill)."""
    running = p.poll() is None
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait(30)
    return running


def _registry_state(cfg) -> dict:
    """label -> {"versions": {v: loads?}, "aliases": {alias: v}}, loading every version's artifacts."""
    import mlflow

    from training.model_registry import load_version, model_name, use_tracking

    use_tracking(cfg)
    client = mlflow.MlflowClient()
    state = {}
    for lab in LABELS:
        name = model_name(cfg, lab)
        try:
            rm = client.get_registered_model(name)
        except mlflow.exceptions.MlflowException:
            continue
        versions = {}
        for mv in client.search_model_versions(f"name='{name}'"):
            try:
                m = load_version(cfg, lab, int(mv.version))
                versions[int(mv.version)] = bool(m.feature_names) and m.booster is not None
            except Exception as e:  # noqa: BLE001 - a version that does not load is exactly what we look for
                versions[int(mv.version)] = f"{type(e).__name__}: {str(e)[:120]}"
        state[lab] = {"versions": versions, "aliases": {a: int(v) for a, v in (rm.aliases or {}).items()}}
    return state


def _version_count(db: Path) -> int:
    """Registered model versions in a sqlite MLflow store (read directly: cheap enough to poll)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT count(*) FROM model_versions").fetchone()[0]
    except sqlite3.Error:
        return -1


def _assert_consistent(state: dict) -> None:
    for lab, s in state.items():
        bad = {v: ok for v, ok in s["versions"].items() if ok is not True}
        assert not bad, f"{lab}: registered versions that do not load: {bad}"
        for alias, v in s["aliases"].items():
            assert v in s["versions"], f"{lab}: alias {alias} -> v{v}, which does not exist"


@pytest.mark.slow
@pytest.mark.reliability
@pytest.mark.timeout(1800)
def test_kill_train_midway(world, tmp_path):
    """Kill `siyu train` at 30/60/85% of a full run and right after it registers a version: registry stays
    consistent, aliases unmoved, rerun succeeds."""
    from siyu.config import load_config

    cfg_path = small_config(tmp_path)
    cfg = load_config(cfg_path)
    env, argv = _env(tmp_path / "home"), ["train", str(world.events), "--config", str(cfg_path)]
    code, full, out = _run(argv, tmp_path, env)
    assert code == 0, out
    before = _registry_state(cfg)
    _assert_consistent(before)
    kills, moved = [], []
    db = tmp_path / "mlflow.db"
    for f in (*KILL_FRACTIONS, "registered"):
        p = _start(argv, tmp_path, env)
        if f == "registered":  # kill right after the run registers its first new version (mid-gate)
            n0, t0 = _version_count(db), time.monotonic()
            while time.monotonic() - t0 < 3 * full and p.poll() is None and _version_count(db) == n0:
                time.sleep(0.02)
        else:
            time.sleep(full * f)
        was_running = _kill(p)
        after = _registry_state(cfg)
        _assert_consistent(after)
        new_versions = sum(len(s["versions"]) for s in after.values()) - sum(
            len(s["versions"]) for s in before.values()
        )
        shifted = {
            lab: (before.get(lab, {}).get("aliases"), s["aliases"])
            for lab, s in after.items()
            if s["aliases"] != before.get(lab, {}).get("aliases")
        }
        kills.append({"at": f, "killed_mid_run": was_running, "new_versions": new_versions, "aliases_moved": shifted})
        if was_running:  # a run that finished before the kill may move aliases: that is its job
            moved += [f"{f}: {lab} {a} -> {b}" for lab, (a, b) in shifted.items()]
        before = after
    code, rerun, out = _run(argv, tmp_path, env)
    final = _registry_state(cfg)
    record(
        "crash_train",
        code == 0 and not moved,
        full_run_s=round(full, 1),
        rerun_s=round(rerun, 1),
        kills=kills,
        rerun_exit=code,
    )
    assert code == 0, f"rerun failed: {out}"
    _assert_consistent(final)
    assert all(s["aliases"].get("champion") for s in final.values()), "rerun left a label without a champion"
    assert not moved, "a killed training moved aliases: " + "; ".join(moved)


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _snapshot_ok(path: Path, users: int) -> bool:
    from serving.snapshot import load_snapshot

    return len(load_snapshot(path).user_ids) == users


@pytest.mark.slow
@pytest.mark.reliability
@pytest.mark.timeout(1200)
def test_kill_score_midway(world, tmp_path):
    """Kill `siyu score` at 30/60/85% of a run and while its temp file is being written: never a partial snapshot."""
    import json

    home = tmp_path / "home"
    env = _env(home)
    env["MLFLOW_TRACKING_URI"] = world.cfg.tracking_uri()
    out = tmp_path / "scores" / "scores.parquet"
    argv = [
        "score",
        str(world.events),
        "--asof",
        world.asof.date().isoformat(),
        "--out",
        str(out),
        "--config",
        str(world.cfg_path),
    ]
    # first a kill before any complete output exists: nothing may appear at the output path
    p = _start(argv, tmp_path, env)
    time.sleep(3)
    _kill(p)
    assert not out.exists(), "a killed first run left a file at the output path"
    code, full, log = _run(argv, tmp_path, env)
    assert code == 0, log
    import pyarrow.parquet as pq

    users = pq.read_metadata(out).num_rows
    good = _digest(out)
    kills = []
    points = [*KILL_FRACTIONS, "tempfile"]
    for f in points:
        p = _start(argv, tmp_path, env)
        if f == "tempfile":  # kill the moment the temp file beside the output appears (mid-write)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 3 * full and not list(out.parent.glob(f".{out.name}.*.tmp")):
                time.sleep(0.005)
        else:
            time.sleep(full * f)
        was_running = _kill(p)
        digest = _digest(out)
        complete = digest is not None and _snapshot_ok(out, users)
        latest = json.loads((home / "snapshots" / "latest.json").read_text())["path"]
        kills.append(
            {
                "at": f,
                "killed_mid_run": was_running,
                "output": "previous" if digest == good else ("new complete" if complete else "BROKEN"),
                "latest_ok": _snapshot_ok(Path(latest), users),
            }
        )
        assert complete, f"output after a kill at {f}: not a complete snapshot"
        assert kills[-1]["latest_ok"], "latest.json points at an incomplete snapshot"
        good = digest
    leftovers = [p.name for p in out.parent.glob(f".{out.name}.*.tmp")]
    code, rerun, log = _run(argv, tmp_path, env)
    record(
        "crash_score",
        code == 0 and all(k["output"] != "BROKEN" for k in kills),
        full_run_s=round(full, 1),
        kills=kills,
        temp_files_left=len(leftovers),
        rerun_exit=code,
    )
    assert code == 0, f"rerun failed: {log}"
    assert _snapshot_ok(out, users)
