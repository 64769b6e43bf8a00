"""The API's answer, as plain Python: snapshot lookup or raw events -> per-user predictions.

Shared by the BentoML service and the benchmarks; it holds the champion models,
the snapshot's feature matrix and the percentile reference distributions.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from serving.render import JsonRenderer
from serving.scoring import ReasonFormatter, Scorer, buckets, percentiles, reference
from serving.snapshot import Snapshot, load_snapshot
from siyu.config import Config
from siyu.contract import CANONICAL_COLUMNS, HOLDOUT_END, HOLDOUT_START, LABELS
from siyu.errors import SiyuError


class EventsRejected(SiyuError):
    """Posted events break the contract; names the first bad row and field."""

    def __init__(self, row: int, field: str, reason: str, count: int):
        self.row, self.field, self.reason, self.count = row, field, reason, count
        more = f" ({count - 1} more bad rows)" if count > 1 else ""
        super().__init__(f"events[{row}].{field}: {reason}{more}")


@dataclass
class _Feat:
    """Stand-in registry entry for a model input the registry does not declare."""

    name: str
    meaning: str
    unit: str = ""


def _registry() -> dict[str, Any]:
    from features.catalog import FEATURES

    try:
        import features.compute  # noqa: F401 - importing it fills the registry
    except ModuleNotFoundError as e:  # pragma: no cover - only while the feature module is missing
        if e.name != "features.compute":
            raise

    return {f.name: f for f in FEATURES}


def _field_of(reason: str) -> str:
    """The contract column a validator reason talks about (`missing amount` -> `amount`)."""
    for col in sorted(CANONICAL_COLUMNS, key=len, reverse=True):
        if re.search(rf"\b{col}\b", reason):
            return col
    return "event"


def _reasons(lv: dict, i: int) -> list[tuple[int, float]]:
    """(feature position, contribution) of row i's LTV reasons."""
    return [(j, lv["reason_contrib"][i, k]) for k, j in enumerate(lv["reason_idx"][i].tolist()) if j >= 0]


class Predictor:
    """Answers /predict and /predict_events.

    Args:
        cfg: configuration (risk buckets, windows, event mapping).
        scorer: the champion models.
        snap: the loaded snapshot.
        ltv: the LTV champion (serving.ltv_scores.LtvScorer), or None: answers carry no `ltv` fields.
        push_effect: the push-effect champion (serving/advice.py), or None: the advice fields are null.
    """

    def __init__(self, cfg: Config, scorer: Scorer, snap: Snapshot, ltv=None, push_effect=None):
        if cfg.windows.feature_windows == "auto":  # the snapshot's columns are the champions' windows
            from features.windows import windows_of, with_windows

            cfg = with_windows(cfg, windows_of(snap.feature_names))
        self.cfg, self.scorer, self.snap = cfg, scorer, snap
        self.history = None  # serving.history.History of the snapshot's users (set by load)
        self._db, self._db_lock = None, threading.Lock()  # /predict_events' DuckDB database (see _session)
        if scorer.feature_names != snap.feature_names:
            raise SiyuError("snapshot feature columns differ from the scorer's")
        reg = _registry()
        self.reasons = ReasonFormatter([reg.get(f) or _Feat(f, f.replace("_", " ")) for f in snap.feature_names])
        self.renderer = JsonRenderer(self.reasons)
        self.push_effect = push_effect  # the push-effect champion (serving/advice.py), or None: null advice
        self.versions = scorer.versions
        if push_effect is not None:
            self.versions = {**scorer.versions, "push_effect": push_effect.version}
        self.scorers = scorer.kinds
        # Lineage in every answer: which snapshot (and the log it was scored from) served it.
        origin = snap.lineage or {}
        self.snapshot_info = {"file": snap.path.name} | {
            k: origin.get(k) for k in ("events_fingerprint", "events_rows", "events_ts_max", "config_hash")
        }
        # Percentiles compare against the pool as the serving models score it: reuse the stored
        # scores when the same versions wrote them, otherwise rescore the snapshot once at startup.
        self.refs: dict[str, np.ndarray] = {}
        stale = [lab for lab in scorer.models if snap.versions.get(lab) != self.versions[lab]]
        fresh = scorer.score(snap.X, snap.pops, reasons=False).proba if stale else {}
        for lab in LABELS:
            self.refs[lab] = reference(fresh[lab] if lab in fresh else snap.proba[lab])
        self.ltv, self.ltv_refs = ltv, None
        if ltv is not None:
            from serving.ltv_scores import references, stored_references

            self.ltv_refs = stored_references(snap.path, ltv.version) or references(ltv.score(snap.X, reasons=False))
            self.versions = {**self.versions, "ltv": ltv.version}
            self.scorers = {**self.scorers, "ltv": ltv.scorer}

    @classmethod
    def load(cls, cfg: Config, scores: str | None) -> Predictor:
        """Load the champions from the registry and a snapshot (default: the latest recorded one)."""
        from serving.advice import load_push_effect
        from serving.pool import load_champions
        from serving.rules import RuleModel
        from serving.snapshot import latest_snapshot

        _registry()
        snap = load_snapshot(scores or latest_snapshot(cfg))
        # Labels without a champion are answered by the operator rule the snapshot was scored with.
        models = load_champions(cfg, require=not snap.rules)
        models.update({lab: RuleModel.from_meta(m) for lab, m in snap.rules.items() if lab not in models})
        from serving.ltv_scores import load_ltv_scorer

        ltv = load_ltv_scorer(cfg, snap.feature_names)
        pred = cls(cfg, Scorer(models, snap.feature_names, cfg.scoring.reasons), snap, ltv, load_push_effect(cfg))
        if cfg.scoring.store_history:
            from serving.history import History, has_history

            if has_history(snap.path):  # copied beside it, or pointing into an event store
                pred.history = History(snap.path)
        return pred

    def predict_ids(self, user_ids: list[str]) -> list[dict[str, Any]]:
        """Predictions for snapshot users; unknown ids get status `unknown_user`."""
        rows, ids, X, tier, pops = self._lookup(user_ids)
        items = iter(self.predict_rows(ids, X, tier, pops))
        return [next(items) if r >= 0 else {"user_id": u, "status": "unknown_user"} for u, r in zip(user_ids, rows)]

    def predict_ids_json(self, user_ids: list[str]) -> tuple[str, list[str], dict[str, np.ndarray]]:
        """`predict_ids` as JSON array text (the API's hot path; see render.py).

        Returns:
            (JSON text of the items, tier of each known user, label -> scores of the known users).
        """
        return self.predict_many_json([user_ids])[0]

    def predict_many_json(self, requests: list[list[str]]) -> list[tuple[str, list[str], dict[str, np.ndarray]]]:
        """`predict_ids_json` of several requests scored as one batch (serving.fastpath batches concurrent ones).

        Each request's answer is what it gets alone: rows are scored independently, and API-sized
        batches take the same per-row paths (single-row leaves, per-row reason sort).
        """
        user_ids = [u for r in requests for u in r]
        rows, ids, X, tier, pops = self._lookup(user_ids)
        cols = self.columns(X, pops) if len(ids) else {}
        adv = self.advice(X, pops)
        pos = np.cumsum(np.asarray(rows) >= 0) - 1  # row of each known id within the scored rows
        texts = self.renderer.item_texts(
            user_ids, [int(k) if r >= 0 else -1 for r, k in zip(rows, pos)], tier, X, cols, self.ltv_columns(X), adv
        )
        out, start, known = [], 0, 0
        for r in requests:
            n = sum(1 for x in rows[start : start + len(r)] if x >= 0)
            sl = slice(known, known + n)
            out.append(
                (
                    "[" + ",".join(texts[start : start + len(r)]) + "]",
                    [str(t) for t in tier[sl]],
                    {lab: c[0][sl] for lab, c in cols.items()},
                )
            )
            start, known = start + len(r), known + n
        return out

    def _lookup(self, user_ids: list[str]) -> tuple[list[int], list[str], np.ndarray, np.ndarray, dict]:
        """Snapshot rows of the ids (-1: unknown) and the known users' ids, features, tiers, populations."""
        rows = [self.snap.index.get(u, -1) for u in user_ids]
        known = np.array([r for r in rows if r >= 0], dtype=np.int64)
        return (
            rows,
            [u for u, r in zip(user_ids, rows) if r >= 0],
            self.snap.X[known],
            self.snap.tier[known],
            {lab: m[known] for lab, m in self.snap.pops.items()},
        )

    def columns(self, X: np.ndarray, pops: dict[str, np.ndarray]) -> dict[str, tuple]:
        """Per label with a model: (proba, percentile, bucket, reason idx, reason contrib) of each row."""
        s = self.scorer.score(X, pops)
        cols = {}
        for lab in LABELS:
            if lab in s.proba:
                pct = percentiles(s.proba[lab], self.refs[lab])
                cols[lab] = (
                    s.proba[lab],
                    pct,
                    buckets(pct, self.cfg.scoring.buckets),
                    s.reason_idx[lab],
                    s.reason_contrib[lab],
                )
        return cols

    def ltv_columns(self, X: np.ndarray) -> dict[str, np.ndarray] | None:
        """Lifetime value of each row: ltv, own, referral, percentiles, segment, reasons (None: no LTV model)."""
        if self.ltv is None or not len(X):
            return None
        from serving.ltv_scores import placed

        s = self.ltv.score(X)
        cols = {"ltv": s.ltv, "ltv_own": s.own, "ltv_referral": s.referral, **placed(s, self.ltv_refs, self.cfg)}
        return {**cols, "reason_idx": s.reason_idx, "reason_contrib": s.reason_contrib}

    def advice(self, X: np.ndarray, pops: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """serving.advice.FIELDS per row (null without a push-effect model or outside the churn population)."""
        from serving.advice import advice_columns

        return advice_columns(self.push_effect, X, pops["churn"], self.snap.feature_names, self.cfg)

    def predict_rows(
        self, user_ids: list[str], X: np.ndarray, tier: np.ndarray, pops: dict[str, np.ndarray]
    ) -> list[dict[str, Any]]:
        """Score feature rows and shape one answer item per row."""
        if len(user_ids) == 0:
            return []
        cols = self.columns(X, pops)
        fmt = self.reasons.item
        # Keys in reading order: the three probabilities first, then their details.
        blank = {"p_churn": None, "p_promotion": None, "p_koc": None, "churn": None, "promotion": None, "koc": None}
        out = [{"user_id": u, "status": "ok", "tier": str(t), **blank} for u, t in zip(user_ids, tier)]
        adv = self.advice(X, pops)
        for lab, (p, pct, bkt, idx, con) in cols.items():
            key = f"p_{lab}"
            for i, item in enumerate(out):
                if np.isnan(p[i]):
                    continue
                item[key] = float(p[i])
                item[lab] = {
                    "probability": float(p[i]),
                    "percentile": round(float(pct[i]), 2),
                    "bucket": bkt[i],
                    "reasons": [fmt(lab, j, X[i, j], con[i, k]) for k, j in enumerate(idx[i].tolist()) if j >= 0],
                }
        lv = self.ltv_columns(X)
        if lv is not None:
            from serving.render import ltv_item

            for i, item in enumerate(out):
                item.update(ltv_item(lv, i, [fmt("ltv", j, X[i, j], c) for j, c in _reasons(lv, i)]))
        for i, item in enumerate(out):  # after the scores, in serving.advice.FIELDS order
            for f, v in adv.items():
                item[f] = None if v[i] is None or v[i] != v[i] else (float(v[i]) if f.startswith("push_") else v[i])
        return out

    def _session(self):
        """A DuckDB session for one request on the predictor's one database (thread-safe, no connect per request)."""
        from events.loader import connect, cursor

        with self._db_lock:
            if self._db is None:
                self._db = connect(threads=1, cfg=self.cfg)  # tiny inputs: more threads only add scheduling
        return cursor(self._db)

    def predict_events(
        self, events: list[dict[str, Any]], asof: datetime | None, history: bool = True
    ) -> tuple[list[dict], datetime]:
        """Validate posted raw events like batch does, build features with the batch code, score them.

        For a user the snapshot knows, the features come from the stored history plus the posted
        events (exact duplicates count once, as in batch), unless `history` is False (what-if).
        The stored history is also the validation's context, as the full log is in batch: a posted
        holdout_end may close a holdout_start the user already has.

        Args:
            events: rows in the docs/design.md §2 contract (raw values, as in a CSV).
            history: add the stored history of known users (serving/history.py).
            asof: cutoff (naive = brand-local; an aware one is converted to `events.time_zone`);
                default the later of the snapshot's date and the newest event.

        Returns:
            (one item per user in the events, the cutoff used, brand-local).

        Raises:
            EventsRejected: a row breaks the contract.
            SiyuError: asof precedes every posted event (the answer would be empty).
        """
        from events.validate import run_validation
        from features.export import brand_local
        from features.facts import Runner
        from features.with_tiers import features_and_tiers_on
        from serving.pool import populations_from_tiers

        # Text like a CSV cell, so the validator's parsing rules apply unchanged (Arrow: DuckDB reads it natively).
        raw = pa.table(
            {
                c: pa.array([None if e.get(c) is None else str(e[c]) for e in events], pa.string())
                for c in CANONICAL_COLUMNS
            }
        )
        stored = None
        if history and self.history is not None:
            # Validation trims ids of spaces only (SQL trim); a row without an id is rejected there.
            users = list(dict.fromkeys(str(e["user_id"]).strip(" ") for e in events if e.get("user_id") is not None))
            stored = self.history.rows(users)
        with self._session() as con:
            if stored is not None and stored.num_rows:
                con.register("_stored", stored)
                con.execute(
                    f"CREATE TEMP TABLE _prior_markers AS SELECT user_id, ts, event FROM _stored "
                    f"WHERE event IN ('{HOLDOUT_START}', '{HOLDOUT_END}')"
                )
            # Posted rows use the contract's column names; the report's counts are not needed.
            run_validation(con, raw, self.cfg, adapt_columns=False, report=False)
            bad = con.execute(
                "SELECT source_row, reason, count(*) OVER () FROM quarantine ORDER BY source_row LIMIT 1"
            ).fetchone()
            if bad:
                raise EventsRejected(int(bad[0]) - 1, _field_of(bad[1]), bad[1], int(bad[2]))
            if stored is not None and stored.num_rows:
                con.execute(
                    "CREATE OR REPLACE TEMP TABLE events AS SELECT DISTINCT * FROM "
                    "(SELECT * FROM events UNION ALL SELECT * FROM _stored)"
                )
            oldest, newest = con.execute("SELECT min(ts), max(ts) FROM events").fetchone()
            if asof is None:
                asof = max(self.snap.asof, newest) if newest is not None else self.snap.asof
            asof = brand_local(asof, self.cfg.events.time_zone)
            if oldest is not None and asof < oldest:
                # Features see only events at or before asof: none of these would count (an empty 200 hides it).
                raise SiyuError(
                    f"asof {asof:%Y-%m-%d %H:%M:%S} precedes every posted event (earliest "
                    f"{oldest:%Y-%m-%d %H:%M:%S}, {self.cfg.events.time_zone}): nothing to score"
                )
            families = frozenset(self.snap.families) if self.snap.families is not None else None
            # Features and tiers (the populations) from one build of the facts, as batch scoring does.
            feats, tiers = features_and_tiers_on(Runner(con), asof, self.cfg, families=families)
        ids = feats["user_id"].astype(str).tolist()
        pop = populations_from_tiers(tiers)
        at = pd.Index(pop["user_id"]).get_indexer(ids)  # each feature row's tier row (-1: none)
        has = at >= 0
        X = feats[self.snap.feature_names].to_numpy(dtype=np.float64, na_value=np.nan)
        pops = {lab: has & pop[f"in_{lab}_pop"].to_numpy(dtype=bool)[at] for lab in LABELS}
        tier = np.where(has, pop["tier"].to_numpy(dtype=object)[at], "lost").astype(object)
        return self.predict_rows(ids, X, tier, pops), asof
