"""The CLI as a user meets it: one clear line and a non-zero exit on errors, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import DATA

SIYU = [sys.executable, "-m", "app"]


def run(*args, cwd=None):
    return subprocess.run([*SIYU, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_validate_prints_counts_by_reason_and_writes_outputs(tmp_path):
    r = run("validate", DATA / "messy_events.csv", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "quarantined by reason" in r.stdout and "unparseable ts" in r.stdout
    assert (tmp_path / "quarantine.parquet").exists() and (tmp_path / "events.parquet").exists()


def test_over_threshold_exits_non_zero_with_one_line(tmp_path):
    r = run("validate", DATA / "too_messy.csv", "--out", tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "broke the event contract" in lines[0]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["validate", "no/such/file.csv"], "event log not found"),
        (["validate", DATA / "messy_events.csv", "--config", "no/such.yaml"], "config file not found"),
    ],
)
def test_user_errors_are_one_line(args, needle, tmp_path):
    r = run(*args, "--out", tmp_path) if args[0] == "validate" else run(*args)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


def test_bad_config_names_the_key(tmp_path):
    c = tmp_path / "c.yaml"
    c.write_text("tiers:\n  koc_min: 1\n")
    r = run("validate", DATA / "messy_events.csv", "--config", c, "--out", tmp_path)
    assert r.returncode == 2 and "tiers.koc_min" in r.stderr and "Traceback" not in r.stderr


def test_usage_errors_exit_2_without_traceback():
    r = run("validate")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "Missing argument" in r.stderr


def test_debug_shows_the_traceback(tmp_path):
    r = run("--debug", "validate", "no/such/file.csv", "--out", tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr
