"""The API's own Prometheus metrics: users served per tier and endpoint, score histograms.

Requests only queue what they served (a deque append); `flush_metrics` batches the
queue into prometheus_client every second and at every `/metrics` scrape.
"""

from __future__ import annotations

from collections import Counter, deque

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
    return _METRICS


_PENDING: deque = deque()  # (endpoint, tiers, scores) of answered requests, not yet in the metrics


def count(endpoint: str, tiers: list[str], scores: dict[str, np.ndarray]) -> None:
    """Queue a request's users and scores for the metrics (a deque append; the flush does the work)."""
    _PENDING.append((endpoint, tiers, scores))


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
