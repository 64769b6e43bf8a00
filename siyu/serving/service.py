"""The prediction API: one BentoML service (`bentoml serve siyu.serving.service:SiyuService`).

Settings come from the environment (`siyu serve` sets them): SIYU_CONFIG (config
file), SIYU_SCORES (snapshot; default the latest `siyu score` wrote),
SIYU_API_TOKEN (bearer token; unset = open), MLFLOW_TRACKING_URI / SIYU_HOME.
Models and snapshot load in a background thread so /livez answers at once and
/readyz says 503 until they are in; a failed load is logged and retried.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime, timezone

import bentoml
from starlette.responses import JSONResponse, Response

from siyu.errors import SiyuError
from siyu.serving.auth import BearerTokenMiddleware
from siyu.serving.schemas import PredictEventsRequest, PredictRequest, PredictResponse

log = logging.getLogger("siyu.serving")
_METRICS: dict = {}


def _metrics() -> dict:
    """Prometheus collectors, created once per process (after BentoML set up multiprocess mode)."""
    if not _METRICS:
        import prometheus_client as pc

        _METRICS["served"] = pc.Counter("siyu_predictions", "Users scored, by tier and endpoint", ["tier", "endpoint"])
        _METRICS["score"] = pc.Histogram("siyu_score", "Scores served, by label", ["label"],
                                         buckets=[0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0])
    return _METRICS


class DocsMiddleware:
    """`GET /docs` -> BentoML's Swagger UI at `/` (the spec itself is at `/docs.json`)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path") in ("/docs", "/docs/") and scope.get("method") in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 307,
                        "headers": [(b"location", b"/"), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


def _naive_utc(t: datetime | None) -> datetime | None:
    """An aware time as naive UTC (the project's convention); naive times already are UTC."""
    return t.astimezone(timezone.utc).replace(tzinfo=None) if t is not None and t.tzinfo else t


def _error(status: int, msg: str, loc: list | None = None) -> JSONResponse:
    detail = [{"loc": loc or [], "msg": msg}]
    return JSONResponse({"error": msg, "detail": detail}, status_code=status)


# One worker: the 2-core budget is shared with batch jobs; scale out with more replicas.
# Per-request access logs cost about as much as a prediction; SIYU_ACCESS_LOG=1 turns them on.
@bentoml.service(name="siyu", traffic={"timeout": 30}, workers=1,
                 logging={"access": {"enabled": os.environ.get("SIYU_ACCESS_LOG", "0") == "1"}})
class SiyuService:
    """Tier, churn, promotion and KOC predictions with reasons, for snapshot users or raw events."""

    def __init__(self) -> None:
        self.predictor = None
        self.load_error: str | None = None
        self._first_try = threading.Event()
        threading.Thread(target=self._load_forever, name="siyu-load", daemon=True).start()
        # A worker takes connections only once __init__ returns: wait for the first load attempt so a
        # replacement worker never answers 503 beside a ready sibling; bounded, so a failing load
        # (MLflow down) still brings the worker up to answer probes and report not-ready.
        self._first_try.wait(float(os.environ.get("SIYU_LOAD_WAIT_SECONDS", "60")))

    def _load_forever(self) -> None:
        """Load config, champions and snapshot; on failure log one line and retry (no crash loop)."""
        from siyu.config import load_config
        from siyu.serving.predictor import Predictor

        while self.predictor is None:
            try:
                cfg = load_config(os.environ.get("SIYU_CONFIG") or None)
                self.predictor = Predictor.load(cfg, os.environ.get("SIYU_SCORES") or None)
                log.info("siyu ready: models %s, snapshot %s (%s users)", self.predictor.versions,
                         self.predictor.snap.path, len(self.predictor.snap.user_ids))
            except Exception as e:  # noqa: BLE001 - keep serving probes; /readyz reports not ready
                self.load_error = f"{type(e).__name__}: {e}"
                retry = float(os.environ.get("SIYU_LOAD_RETRY_SECONDS", "10"))
                log.error("siyu not ready (retrying in %ss): %s", retry, self.load_error)
                self._first_try.set()
                time.sleep(retry)
        self._first_try.set()

    def __is_ready__(self) -> bool:
        return self.predictor is not None

    def _not_ready(self) -> JSONResponse:
        return _error(503, "models or snapshot not loaded yet" + (f" ({self.load_error})" if self.load_error else ""))

    def _answer(self, items: list[dict], asof: datetime, endpoint: str) -> Response:
        m = _metrics()
        for item in items:
            if item["status"] == "ok":
                m["served"].labels(item["tier"], endpoint).inc()
                for lab in ("churn", "promotion", "koc"):
                    if item.get(f"p_{lab}") is not None:
                        m["score"].labels(lab).observe(item[f"p_{lab}"])
        p = self.predictor
        # The items are built to the PredictResponse schema (a test validates them against it);
        # serialising them directly skips a second validation pass on the hot path.
        body = {"model_versions": p.versions, "snapshot_date": p.snap.asof.isoformat(), "asof": asof.isoformat(),
                "predictions": items}
        return Response(json.dumps(body, allow_nan=False, separators=(",", ":"), check_circular=False).encode(),
                        media_type="application/json")

    @bentoml.api(route="/predict", input_spec=PredictRequest, output_spec=PredictResponse)
    async def predict(self, user_ids: list[str]) -> PredictResponse:
        """Score users of the latest snapshot by id (1-1000); unknown ids come back as `unknown_user`."""
        if self.predictor is None:
            return self._not_ready()
        return self._answer(self.predictor.predict_ids(user_ids), self.predictor.snap.asof, "predict")

    @bentoml.api(route="/predict_events", input_spec=PredictEventsRequest, output_spec=PredictResponse)
    def predict_events(self, events: list, asof: datetime | None = None) -> PredictResponse:
        """Score users from their raw events (validated like batch; features from the batch feature code)."""
        from siyu.serving.predictor import EventsRejected

        if self.predictor is None:
            return self._not_ready()
        rows = [e.model_dump() for e in events]
        try:
            items, used = self.predictor.predict_events(rows, _naive_utc(asof))
        except EventsRejected as e:
            return _error(400, str(e), ["events", e.row, e.field])
        except SiyuError as e:  # any other contract problem of the posted events: the caller's to fix, not a 500
            return _error(400, str(e)[:500], ["events"])
        return self._answer(items, used, "predict_events")


SiyuService.add_asgi_middleware(DocsMiddleware)
SiyuService.add_asgi_middleware(BearerTokenMiddleware)
