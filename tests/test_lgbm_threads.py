"""LightGBM calls from the tuning threads agree on one thread count (siyu/lgbm_threads.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from siyu.lgbm_threads import cap_threads, capped_threads

ROOT = Path(__file__).resolve().parents[1]

# One fold predicts at LightGBM's default thread count while the other fits one-thread boosters
# with a validation set: without a cap the two calls fight over LightGBM's process-wide thread
# count and the process dies of a segmentation fault within seconds (CI did, in the LTV search).
RACE = """
import time, numpy as np, lightgbm as lgb
from training.tuning import fold_map
rng = np.random.default_rng(0)
X = rng.normal(size=(5000, 40)); X[rng.random(X.shape) < 0.7] = 0
y = (X[:, 0] > 0).astype(float)
b = lgb.train({"objective": "binary", "verbosity": -1}, lgb.Dataset(X, y), 5)
end = time.monotonic() + 6.0
class Fold:
    def __init__(self, i): self.i, self.n_fit = i, 1
def fn(f, threads):
    n = 0
    while time.monotonic() < end:
        if f.i == 0:
            b.predict(X[:2000])
        else:
            d = lgb.Dataset(X, y, params={"num_threads": threads, "verbosity": -1})
            v = lgb.Dataset(X[:1000], y[:1000], reference=d)
            lgb.train({"objective": "binary", "verbosity": -1, "num_threads": threads}, d, 3, valid_sets=[v])
        n += 1
    return n
print(fold_map(fn, [Fold(0), Fold(1)]))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="fold_map runs folds one after the other on one core")
def test_folds_side_by_side_do_not_crash_lightgbm():
    r = subprocess.run([sys.executable, "-c", RACE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert all(int(k) > 0 for k in r.stdout.strip().strip("[]").split(","))


def test_cap_is_restored():
    before = cap_threads(-1)
    try:
        with capped_threads(1):
            assert cap_threads(1) == 1
        assert cap_threads(-1) == -1
    finally:
        cap_threads(before)
