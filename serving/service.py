"""The prediction API: one BentoML service (`bentoml serve serving.service:SiyuService`, or a Bento: bentofile.yaml).

Settings are the config's `serving:` section (siyu/config.py), read from SIYU_CONFIG (the
config file `siyu serve` passes on) and the environment overrides: SIYU_SCORES, SIYU_API_TOKEN
(bearer token; unset = open), MLFLOW_TRACKING_URI / SIYU_HOME, SIYU_RELOAD_SECONDS,
SIYU_ACCESS_LOG=1 (per-request access log), SIYU_TRACING=1 (OpenTelemetry spans on the
prediction routes too).
Models and snapshot load in the background so /livez answers at once and /readyz says 503
until they are in. The speed tricks of /predict live in serving/fastpath.py.
"""

from __future__ import annotations

from datetime import datetime

import bentoml
import numpy as np
from starlette.responses import JSONResponse

from serving import fastpath
from serving.asgi import DocsMiddleware
from serving.auth import BearerTokenMiddleware
from serving.live import LivePredictor
from serving.metrics import count, count_outcomes
from serving.schemas import PredictEventsRequest, PredictRequest, PredictResponse
from siyu.config import load_config
from siyu.contract import LABELS
from siyu.errors import SiyuError
from siyu.lgbm_threads import cap_threads


def _error(status: int, msg: str, loc: list | None = None) -> JSONResponse:
    detail = [{"loc": loc or [], "msg": msg}]
    return JSONResponse({"error": msg, "detail": detail}, status_code=status)


# BentoML wraps every request in OpenTelemetry spans even when none are sampled (its default
# sample rate is 0): about a third of a single-user request's CPU. The prediction routes skip
# it unless SIYU_TRACING=1 (then configure BentoML's tracing exporter and sample rate as usual).
_BOOT = load_config().serving  # what the decorator and the loader need before a config is in
_UNTRACED = [] if _BOOT.tracing else [r"/predict$", r"/predict_events$"]


# One worker: the 2-core budget is shared with batch jobs; scale out with more replicas.
# Per-request access logs cost about as much as a prediction; SIYU_ACCESS_LOG=1 turns them on.
@bentoml.service(
    name="siyu",
    traffic={"timeout": 30},
    workers=1,
    tracing={"excluded_urls": _UNTRACED or None},
    logging={"access": {"enabled": _BOOT.access_log}},
)
class SiyuService:
    """Tier, churn, promotion and KOC predictions with reasons, for snapshot users or raw events."""

    def __init__(self) -> None:
        # Requests run in threads beside the model loader: one LightGBM thread count for all of them
        # (a mixed count crashes LightGBM, siyu/lgbm_threads.py); one worker on a small machine.
        cap_threads(1)
        self.live = LivePredictor(_BOOT).start()
        fastpath.LIVE["live"] = self.live

    def __is_ready__(self) -> bool:
        return self.live.predictor is not None

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.live.stop()

    @bentoml.api(route="/predict", input_spec=PredictRequest, output_spec=PredictResponse)
    async def predict(self, user_ids: list[str]) -> PredictResponse:
        """Score users of the latest snapshot by id (1-1000); unknown ids come back as `unknown_user`."""
        p = self.live.predictor  # once: a reload may swap it mid-request
        if p is None:
            return self._not_ready()
        return fastpath.predict_ids(p, user_ids)

    @bentoml.api(route="/predict_events", input_spec=PredictEventsRequest, output_spec=PredictResponse)
    def predict_events(self, events: list, asof: datetime | None = None, history: bool = True) -> PredictResponse:
        """Score users from their raw events (validated like batch; features from the batch feature code)."""
        from serving.predictor import EventsRejected

        p = self.live.predictor
        if p is None:
            return self._not_ready()
        try:
            # aware asof: the predictor converts it to the brand zone
            items, used = p.predict_events([e.model_dump() for e in events], asof, history)
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
        count_outcomes(p, items=items)
        return fastpath.json_answer(p, items, used)

    def _not_ready(self) -> JSONResponse:
        err = self.live.load_error
        return _error(503, "models or snapshot not loaded yet" + (f" ({err})" if err else ""))


SiyuService.add_asgi_middleware(DocsMiddleware)
SiyuService.add_asgi_middleware(BearerTokenMiddleware)
fastpath.install(SiyuService)  # last: inside auth
