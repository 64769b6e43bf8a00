"""The prediction API: one BentoML service (`bentoml serve serving.service:SiyuService`).

Settings come from the environment (`siyu serve` sets them): SIYU_CONFIG (config
file), SIYU_SCORES (snapshot; default the latest `siyu score` wrote),
SIYU_API_TOKEN (bearer token; unset = open), MLFLOW_TRACKING_URI / SIYU_HOME,
SIYU_RELOAD_SECONDS (how often to look for a new champion or snapshot; default 30,
0 = never), SIYU_ACCESS_LOG=1 (per-request access log), SIYU_TRACING=1
(OpenTelemetry spans on the prediction routes too).
Models and snapshot load in a background thread so /livez answers at once and
/readyz says 503 until they are in; a failed load is logged and retried. Once
loaded, the same thread swaps in new champions / a new snapshot when they appear.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
from datetime import datetime

import bentoml
import numpy as np
from starlette.responses import JSONResponse, Response

from serving.asgi import LIVE, DocsMiddleware, FastPredictMiddleware
from serving.auth import BearerTokenMiddleware
from serving.metrics import count, flush_metrics
from serving.schemas import PredictEventsRequest, PredictRequest, PredictResponse
from siyu.contract import LABELS
from siyu.errors import SiyuError

log = logging.getLogger("serving")


def _file_id(path) -> tuple:
    """What changes when a file is rewritten (`siyu score` replaces the snapshot atomically)."""
    st = os.stat(path)
    return os.path.realpath(path), st.st_ino, st.st_mtime_ns


def _error(status: int, msg: str, loc: list | None = None) -> JSONResponse:
    detail = [{"loc": loc or [], "msg": msg}]
    return JSONResponse({"error": msg, "detail": detail}, status_code=status)


# One worker: the 2-core budget is shared with batch jobs; scale out with more replicas.
# Per-request access logs cost about as much as a prediction; SIYU_ACCESS_LOG=1 turns them on.
# BentoML wraps every request in OpenTelemetry spans even when none are sampled (its default
# sample rate is 0): about a third of a single-user request's CPU. The prediction routes skip
# it unless SIYU_TRACING=1 (then configure BentoML's tracing exporter and sample rate as usual).
_UNTRACED = [] if os.environ.get("SIYU_TRACING", "0") == "1" else [r"/predict$", r"/predict_events$"]


@bentoml.service(
    name="siyu",
    traffic={"timeout": 30},
    workers=1,
    tracing={"excluded_urls": _UNTRACED or None},
    logging={"access": {"enabled": os.environ.get("SIYU_ACCESS_LOG", "0") == "1"}},
)
class SiyuService:
    """Tier, churn, promotion and KOC predictions with reasons, for snapshot users or raw events."""

    def __init__(self) -> None:
        self.predictor = None
        self.load_error: str | None = None
        LIVE["svc"] = self
        self._first_try = threading.Event()
        self._stop = threading.Event()
        threading.Thread(target=self._load_forever, name="siyu-load", daemon=True).start()
        threading.Thread(target=self._flush_forever, name="siyu-metrics", daemon=True).start()
        # A worker takes connections only once __init__ returns: wait for the first load attempt so a
        # replacement worker never answers 503 beside a ready sibling; bounded, so a failing load
        # (MLflow down) still brings the worker up to answer probes and report not-ready.
        self._first_try.wait(float(os.environ.get("SIYU_LOAD_WAIT_SECONDS", "60")))

    def _load_forever(self) -> None:
        """Load config, champions and snapshot; on failure log one line and retry (no crash loop)."""
        from serving.predictor import Predictor
        from siyu.config import load_config

        while self.predictor is None and not self._stop.is_set():
            try:
                cfg = load_config(os.environ.get("SIYU_CONFIG") or None)
                self.predictor = Predictor.load(cfg, os.environ.get("SIYU_SCORES") or None)
                log.info(
                    "siyu ready: models %s, snapshot %s (%s users)",
                    self.predictor.versions,
                    self.predictor.snap.path,
                    len(self.predictor.snap.user_ids),
                )
                # Models, snapshot and the imported libraries are ~400k long-lived objects: a full
                # collection walks them all (~250 ms here, longer with a big snapshot) in the middle
                # of some request. Freezing moves them out of the collector's sight; new objects
                # are still collected.
                gc.collect()
                gc.freeze()
            except Exception as e:  # noqa: BLE001 - keep serving probes; /readyz reports not ready
                self.load_error = f"{type(e).__name__}: {e}"
                retry = float(os.environ.get("SIYU_LOAD_RETRY_SECONDS", "10"))
                log.error("siyu not ready (retrying in %ss): %s", retry, self.load_error)
                self._first_try.set()
                self._stop.wait(retry)
        self._first_try.set()
        self._watch(float(os.environ.get("SIYU_RELOAD_SECONDS", "30")))

    def _watch(self, period: float) -> None:
        """Every `period` seconds (0 = never), reload when a champion alias or the latest snapshot moved.

        The new predictor is built beside the old one and swapped in by one reference
        assignment: every request runs wholly on the old or wholly on the new models.
        """
        from serving.predictor import Predictor
        from serving.snapshot import latest_snapshot
        from training.model_registry import champion_versions

        pinned = os.environ.get("SIYU_SCORES") or None
        while period > 0 and not self._stop.wait(period):
            cur = self.predictor
            served = {lab: v for lab, v in cur.versions.items() if v is not None}
            try:
                if champion_versions(cur.cfg, served) == served and _file_id(
                    pinned or latest_snapshot(cur.cfg)
                ) == _file_id(cur.snap.path):
                    continue
                new = Predictor.load(cur.cfg, pinned)
            except Exception as e:  # noqa: BLE001 - the registry or a file is away for now: keep serving
                log.error("siyu reload check failed (still serving %s): %s: %s", cur.versions, type(e).__name__, e)
                continue
            self.predictor = new
            log.info("siyu reloaded: models %s -> %s, snapshot %s", cur.versions, new.versions, new.snap.path)
            del cur
            gc.unfreeze()  # let the old predictor go, then freeze the new long-lived objects (see above)
            gc.collect()
            gc.freeze()

    def _flush_forever(self) -> None:
        """Batch the queued request counts into the metrics every second (and at every /metrics scrape)."""
        while not self._stop.wait(1.0):
            flush_metrics()

    @bentoml.on_shutdown
    def _unfreeze(self) -> None:
        """Stop the load/reload thread; hand the frozen objects back to the collector (no leak reports at exit)."""
        self._stop.set()
        gc.unfreeze()

    def __is_ready__(self) -> bool:
        return self.predictor is not None

    def _not_ready(self) -> JSONResponse:
        return _error(503, "models or snapshot not loaded yet" + (f" ({self.load_error})" if self.load_error else ""))

    def _answer(self, p, items: list[dict] | str, asof: datetime) -> Response:
        """The response of predictor `p`: `items` as dicts (shaped to PredictResponse) or as JSON text."""
        head = json.dumps(
            {
                "model_versions": p.versions,
                "model_scorers": p.scorers,
                "snapshot_date": p.snap.asof.isoformat(),
                "asof": asof.isoformat(),
            },
            separators=(",", ":"),
        )
        if not isinstance(items, str):
            items = json.dumps(items, allow_nan=False, separators=(",", ":"), check_circular=False)
        # Serialised directly: a second validation pass through the response model would cost more than scoring.
        return Response((head[:-1] + ',"predictions":' + items + "}").encode(), media_type="application/json")

    @bentoml.api(route="/predict", input_spec=PredictRequest, output_spec=PredictResponse)
    async def predict(self, user_ids: list[str]) -> PredictResponse:
        """Score users of the latest snapshot by id (1-1000); unknown ids come back as `unknown_user`."""
        if self.predictor is None:
            return self._not_ready()
        return self.predict_now(user_ids)

    def predict_now(self, user_ids: list[str]) -> Response:
        """The /predict answer for validated ids (FastPredictMiddleware calls it directly)."""
        p = self.predictor  # once: a reload may swap it mid-request
        text, tiers, scores = p.predict_ids_json(user_ids)
        count("predict", tiers, scores)
        return self._answer(p, text, p.snap.asof)

    @bentoml.api(route="/predict_events", input_spec=PredictEventsRequest, output_spec=PredictResponse)
    def predict_events(self, events: list, asof: datetime | None = None) -> PredictResponse:
        """Score users from their raw events (validated like batch; features from the batch feature code)."""
        from serving.predictor import EventsRejected

        p = self.predictor  # once: a reload may swap it mid-request
        if p is None:
            return self._not_ready()
        rows = [e.model_dump() for e in events]
        try:
            items, used = p.predict_events(rows, asof)  # naive UTC (schemas.Asof)
        except EventsRejected as e:
            return _error(400, str(e), ["events", e.row, e.field])
        except SiyuError as e:  # any other contract problem of the posted events: the caller's to fix, not a 500
            return _error(400, str(e)[:500], ["events"])
        ok = [i for i in items if i["status"] == "ok"]
        count(
            "predict_events",
            [i["tier"] for i in ok],
            {lab: np.array([i[f"p_{lab}"] for i in ok if i[f"p_{lab}"] is not None], dtype=float) for lab in LABELS},
        )
        return self._answer(p, items, used)


SiyuService.add_asgi_middleware(DocsMiddleware)
SiyuService.add_asgi_middleware(BearerTokenMiddleware)
SiyuService.add_asgi_middleware(FastPredictMiddleware)  # last: inside auth
