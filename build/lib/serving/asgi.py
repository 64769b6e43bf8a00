"""ASGI middlewares of the prediction API: `/docs` redirect and the `/predict` fast path."""

from __future__ import annotations

from pydantic import ValidationError

from serving.metrics import flush_metrics
from serving.schemas import PredictRequest

LIVE: dict = {}  # this worker's SiyuService instance (set in its __init__), for FastPredictMiddleware


class DocsMiddleware:
    """`GET /docs` -> BentoML's Swagger UI at `/` (the spec itself is at `/docs.json`)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] == "http"
            and scope.get("path") in ("/docs", "/docs/")
            and scope.get("method") in ("GET", "HEAD")
        ):
            await send(
                {
                    "type": "http.response.start",
                    "status": 307,
                    "headers": [(b"location", b"/"), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


class FastPredictMiddleware:
    """`POST /predict` with a valid body, answered here once the models are in.

    BentoML's route machinery (context, IO descriptor, argument binding, response
    conversion) costs more CPU than scoring one user. The body is validated with the
    same PredictRequest model; anything else (invalid body, not ready, other routes)
    goes on to the BentoML route unchanged, so its errors, docs and spec stay BentoML's.
    It sits inside BentoML's metrics, timeout and auth middlewares, so those still apply.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            if scope["type"] == "http" and scope["path"] == "/metrics":
                flush_metrics()  # the scrape sees every request this worker answered so far
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":  # client went away: let the route see it
                await self.app(scope, _replay(b"".join(chunks), msg, receive), send)
                return
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        svc = LIVE.get("svc")
        if svc is not None and svc.predictor is not None:
            try:
                user_ids = PredictRequest.model_validate_json(body).user_ids
            except ValidationError:
                user_ids = None
            if user_ids is not None:
                await svc.predict_now(user_ids)(scope, receive, send)
                return
        await self.app(scope, _replay(body, None, receive), send)


def _replay(body: bytes, then: dict | None, receive):
    """An ASGI `receive` that hands out an already-read body first."""
    pending = [{"type": "http.request", "body": body, "more_body": False}] + ([then] if then else [])

    async def replay():
        return pending.pop(0) if pending else await receive()

    return replay
