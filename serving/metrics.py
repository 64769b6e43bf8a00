"""The API's own Prometheus metrics: users served per tier and endpoint, score histograms, and the
monitoring gauges (share of served users per risk bucket and per status, snapshot age).

Requests only queue what they served (a deque append); `flush_metrics` batches the
queue into prometheus_client every second and at every `/metrics` scrape.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from datetime import UTC

import numpy as np

_METRICS: dict = {}
_CHILDREN: dict = {}


def _metrics() -> dict:
    """Prometheus collectors, created once per process (after BentoML set up multiprocess mode)."""
    if not _METRICS:
        import prometheus_client as pc

        _METRICS["served"] = pc.Counter("siyu_predictions", "Users scored, by tier and endpoint", ["tier", "endpoint"])
        _METRICS["score"] = pc.Histogram(
            "siyu_score",
            "Scores served, by label",
            ["label"],
            buckets=[0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0],
        )
        # Shares are per worker process; with several workers the most recent worker's write is shown.
        mode = {"multiprocess_mode": "livemostrecent"}
        _METRICS["bucket_share"] = pc.Gauge(
            "siyu_bucket_share", "Share of scored users served per risk bucket, by label", ["label", "bucket"], **mode
        )
        _METRICS["status_share"] = pc.Gauge(
            "siyu_status_share", "Share of requested users per answer status (ok, unknown_user)", ["status"], **mode
        )
        _METRICS["snapshot_age"] = pc.Gauge(
            "siyu_snapshot_age_seconds", "Seconds since the asof of the snapshot being served", **mode
        )
    return _METRICS


_PENDING: deque = deque()  # (endpoint, tiers, scores) of answered requests, not yet in the metrics


_OUTCOMES: deque = deque()  # (predictor, statuses, scores) not yet in the share gauges
_TOTALS = {"bucket": Counter(), "status": Counter()}  # since the process started
_ASOF: dict = {}


def count(endpoint: str, tiers: list[str], scores: dict[str, np.ndarray]) -> None:
    """Queue a request's users and scores for the metrics (a deque append; the flush does the work)."""
    _PENDING.append((endpoint, tiers, scores))


def count_outcomes(p, scores: dict[str, np.ndarray] | None = None, statuses=None, items=None) -> None:
    """Queue what a request answered for the bucket / status share gauges and the snapshot age.

    Args:
        p: the Predictor that answered (its percentile references and bucket bounds give the bucket,
            its snapshot's asof the age).
        scores: label -> the scores served (the /predict path).
        statuses: status -> users (e.g. {"ok": 3, "unknown_user": 1}), with `scores`.
        items: the answer's items as dicts (the /predict_events path): statuses and p_<label> are read
            from them instead.
    """
    if items is not None:
        statuses = Counter(i["status"] for i in items)
        scores = {lab: np.array([i[f"p_{lab}"] for i in items if i.get(f"p_{lab}") is not None]) for lab in p.refs}
    _OUTCOMES.append((p, dict(statuses or {}), scores or {}))


def _flush_outcomes() -> None:
    from serving.scoring import buckets, percentiles

    # Batched per predictor and label: one percentile / bucket pass per flush, not one per request
    # (per request, this thread held the GIL for tens of ms a second at a few hundred requests/s).
    batch: dict[tuple[int, str], tuple] = {}
    while _OUTCOMES:
        try:
            p, statuses, scores = _OUTCOMES.popleft()
        except IndexError:
            break
        _ASOF["asof"] = p.snap.asof
        _TOTALS["status"].update(statuses)
        for lab, s in scores.items():
            if lab in p.refs and len(s):
                batch.setdefault((id(p), lab), (p, lab, []))[2].append(np.asarray(s, dtype=float))
    for p, lab, parts in batch.values():
        s = np.concatenate(parts)
        b = buckets(percentiles(s[~np.isnan(s)], p.refs[lab]), p.cfg.scoring.buckets)
        names, counts = np.unique(np.asarray(b, dtype=str), return_counts=True)
        _TOTALS["bucket"].update({(lab, str(x)): int(n) for x, n in zip(names.tolist(), counts.tolist())})
    per_label = Counter()
    for (lab, _), n in _TOTALS["bucket"].items():
        per_label[lab] += n
    for (lab, bucket), n in _TOTALS["bucket"].items():
        _child("bucket_share", lab, bucket).set(n / per_label[lab])
    total = sum(_TOTALS["status"].values())
    for status, n in _TOTALS["status"].items():
        _child("status_share", status).set(n / total)
    if "asof" in _ASOF:
        _metrics()["snapshot_age"].set(time.time() - _ASOF["asof"].replace(tzinfo=UTC).timestamp())  # asof: naive UTC


def flush_metrics() -> None:
    """Move the queued requests into the Prometheus counters and histograms, batched.

    Updating prometheus_client per request cost ~25 µs of a single-user request's CPU; batched,
    one update per tier and per histogram bucket covers every request since the last flush.
    """
    served: Counter = Counter()
    scores: dict[str, list[np.ndarray]] = {}
    while _PENDING:
        try:
            endpoint, tiers, sc = _PENDING.popleft()
        except IndexError:  # emptied by a concurrent flush
            break
        for tier in tiers:
            served[(tier, endpoint)] += 1
        for lab, p in sc.items():
            scores.setdefault(lab, []).append(p)
    for (tier, endpoint), n in served.items():
        _child("served", tier, endpoint).inc(n)
    for lab, ps in scores.items():
        p = np.concatenate(ps)
        observe_many(_child("score", lab), p[~np.isnan(p)])
    _flush_outcomes()


def _child(metric: str, *labels: str):
    """A labelled child of one of siyu's metrics, looked up once (`.labels()` costs a few µs each call)."""
    key = (metric, labels)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = _metrics()[metric].labels(*labels)
    return child


def observe_many(hist, values: np.ndarray) -> None:
    """`hist.observe(v)` for every value, as one update per bucket (prometheus_client has no batch observe).

    Args:
        hist: a prometheus_client Histogram (or labelled child).
        values: finite observations.
    """
    try:  # prometheus_client keeps per-bucket counts: value v goes to the first bound >= v
        bounds, counts, total = hist._upper_bounds, hist._buckets, hist._sum
    except AttributeError:  # another prometheus_client layout: one call per value, always right
        bounds = None
    if bounds is None or len(values) <= 8:  # few values (the single-user request): the loop is cheaper
        for v in values.tolist():
            hist.observe(v)
        return
    per_bucket = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for i in np.flatnonzero(per_bucket).tolist():
        counts[i].inc(int(per_bucket[i]))
    total.inc(float(np.sum(values)))
