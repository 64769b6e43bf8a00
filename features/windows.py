"""Feature windows derived from the period P, the horizon H and the log's span (`feature_windows: auto`).

The rule (ladder 7, 14, 30, 60, 90, 180, 365 days):
  short = the ladder value closest to H/4, mid = the one closest to H,
  long = the smallest at or above max(P, 2H), longest = the smallest at or above max(P, 3H);
then windows longer than the log's span at the validation cutoff (first event to
last event + 1 day - H) are dropped: there they equal the lifetime counts. The
smallest window always stays. P = 90, H = 30 gives the hand-picked 7 / 30 / 90;
a slow-buying brand judged at P = H = 90 gets 30 / 90 / 180 / 365, where a 7-day
window is nearly always empty.

A derived set depends on the log, so it is resolved once at training (the feature
list is stored with each model) and scoring reads it back from the champions'
feature names (`for_models`), never from a new log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from siyu.config import Config
from siyu.errors import SiyuError

LADDER: tuple[int, ...] = (7, 14, 30, 60, 90, 180, 365)
_WINDOW_NAME = re.compile(r"^n_purchase_(\d+)d$")  # one per window in the catalog


def _closest(x: float) -> int:
    return min(LADDER, key=lambda w: (abs(w - x), w))


def _at_least(x: float) -> int:
    return next((w for w in LADDER if w >= x), LADDER[-1])


def auto_windows(period: int, horizon: int, span_days: int | None = None) -> tuple[int, ...]:
    """The windows the rule gives for P, H and the log's span.

    Args:
        period: P in days.
        horizon: H in days.
        span_days: days of history at the validation cutoff; None: no cap.

    Returns:
        The windows, shortest first.
    """
    ws = {_closest(horizon / 4), _closest(horizon), _at_least(max(period, 2 * horizon))}
    ws.add(_at_least(max(period, 3 * horizon)))
    out = sorted(ws)
    if span_days is not None:
        out = [w for w in out if w <= span_days] or out[:1]
    return tuple(out)


def log_span_days(con, horizon: int, events: str = "events") -> int:
    """Days from the log's first event to its validation cutoff (date of the last event + 1 - H)."""
    lo, hi = con.execute(f"SELECT min(ts), max(ts) FROM {events}").fetchone()
    if lo is None:
        raise SiyuError("the event log is empty: no feature windows to derive")
    return (hi.date() - lo.date()).days + 1 - horizon


def with_windows(cfg: Config, windows: Iterable[int]) -> Config:
    """The config with explicit feature windows."""
    ws = tuple(sorted({int(w) for w in windows}))
    return cfg.model_copy(update={"windows": cfg.windows.model_copy(update={"feature_windows": ws})})


def resolve(cfg: Config, con, events: str = "events") -> Config:
    """The config with `auto` windows replaced by the rule's windows for this log (explicit ones kept)."""
    w = cfg.windows
    if w.feature_windows != "auto":
        return cfg
    span = log_span_days(con, w.horizon_days, events)
    return with_windows(cfg, auto_windows(w.period_days, w.horizon_days, span))


def windows_of(names: Iterable[str]) -> tuple[int, ...]:
    """The feature windows a feature list was built with (from its `n_purchase_<w>d` columns)."""
    return tuple(sorted({int(m.group(1)) for n in names if (m := _WINDOW_NAME.match(n))}))


def for_models(cfg: Config, models: dict) -> Config:
    """The config scoring must compute features with: `auto` becomes the champions' trained windows.

    Args:
        cfg: the config.
        models: label -> a model with `feature_names` (the champions).
    """
    if cfg.windows.feature_windows != "auto":
        return cfg
    ws = windows_of(n for m in models.values() for n in m.feature_names)
    if not ws:
        raise SiyuError("windows.feature_windows is auto but no champion model records its windows")
    return with_windows(cfg, ws)
