"""The API's monitoring gauges: share of served users per risk bucket and per status, snapshot age."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import REGISTRY

from serving import metrics
from serving.scoring import reference


def _gauge(name, **labels):
    return REGISTRY.get_sample_value(name, labels)


def test_bucket_and_status_shares_and_snapshot_age(cfg):
    # reference pool 0.00 .. 0.99: percentile = score * 100; buckets low < 50 <= medium < 80 <= high
    asof = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(hours=5)  # naive UTC, as snapshots
    p = SimpleNamespace(refs={"churn": reference(np.arange(100) / 100)}, cfg=cfg, snap=SimpleNamespace(asof=asof))
    metrics._TOTALS["bucket"].clear(), metrics._TOTALS["status"].clear()
    metrics.count_outcomes(p, {"churn": np.array([0.1, 0.2, 0.6, 0.9])}, {"ok": 4, "unknown_user": 1})
    metrics.count_outcomes(p, items=[{"status": "ok", "p_churn": 0.95}, {"status": "ok", "p_churn": None}])
    metrics.flush_metrics()
    assert _gauge("siyu_bucket_share", label="churn", bucket="low") == pytest.approx(2 / 5)
    assert _gauge("siyu_bucket_share", label="churn", bucket="medium") == pytest.approx(1 / 5)
    assert _gauge("siyu_bucket_share", label="churn", bucket="high") == pytest.approx(2 / 5)
    assert _gauge("siyu_status_share", status="ok") == pytest.approx(6 / 7)
    assert _gauge("siyu_status_share", status="unknown_user") == pytest.approx(1 / 7)
    age = _gauge("siyu_snapshot_age_seconds")
    assert age == pytest.approx(5 * 3600, abs=60)
    time.sleep(0.01)
    metrics.flush_metrics()
    assert _gauge("siyu_snapshot_age_seconds") > age  # the age grows between scrapes
