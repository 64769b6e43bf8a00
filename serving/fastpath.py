"""The prediction API's speed tricks, behind one module; each has a parity test against the plain way.

A single-user /predict through BentoML's plain route costs several times the scoring itself;
these keep it within 2x of a bare endpoint (benchmarks/bench_api.py):

1. `FastPredictMiddleware`: a valid `POST /predict` is answered before BentoML's route machinery
   (context, IO descriptor, argument binding, response conversion), with the same validation model.
   Parity: tests/test_service.py::test_fast_path_answers_exactly_like_the_bentoml_route.
2. JSON rendering: the items are written as JSON text straight from the score arrays
   (serving.render.JsonRenderer via `Predictor.predict_ids_json`) and `json_answer` wraps them
   without a second pass through the response model. Parity:
   tests/test_scoring.py::test_json_answer_is_byte_identical_to_the_dict_answer.
3. Batching: small requests that arrive together (one event-loop turn) are scored as one batch
   (`Batcher`): most of a one-user answer is fixed per-call cost of array operations, which a batch
   shares. Each request still gets exactly its answer alone. Parity:
   tests/test_service.py::test_concurrent_requests_get_their_own_answers.
4. Native LightGBM calls: one-row leaf indices from LightGBM's single-row C API, probability and
   decision-path reasons from the same leaves (serving.explain.PathExplainer, used by
   serving.scoring.Scorer when it reproduces `predict_proba`). Parity:
   tests/test_scoring.py::test_single_row_leaves_match_lightgbm, ::test_api_scores_equal_batch_scores.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

from pydantic import ValidationError
from starlette.responses import Response

from serving.metrics import count, count_outcomes, flush_metrics
from serving.native import SMALL_N
from serving.schemas import PredictRequest

LIVE: dict = {}  # "live": this worker's LivePredictor (set by the service's __init__)


def json_answer(p, items: list[dict] | str, asof: datetime) -> Response:
    """The response of predictor `p`: `items` as dicts (shaped to PredictResponse) or as JSON text."""
    head = json.dumps(
        {
            "model_versions": p.versions,
            "scorers": p.scorers,
            "snapshot_date": p.snap.asof.isoformat(),
            "snapshot": p.snapshot_info,
            "asof": asof.isoformat(),
        },
        separators=(",", ":"),
    )
    if not isinstance(items, str):
        items = json.dumps(items, allow_nan=False, separators=(",", ":"), check_circular=False)
    # Serialised directly: a second validation pass through the response model would cost more than scoring.
    return Response((head[:-1] + ',"predictions":' + items + "}").encode(), media_type="application/json")


def predict_ids(p, user_ids: list[str]) -> Response:
    """The /predict answer of predictor `p` for validated ids (counted in the metrics)."""
    return _answer(p, user_ids, p.predict_ids_json(user_ids))


def _answer(p, user_ids: list[str], scored: tuple) -> Response:
    text, tiers, scores = scored
    count("predict", tiers, scores)
    count_outcomes(p, scores, {"ok": len(tiers), "unknown_user": len(user_ids) - len(tiers)})
    return json_answer(p, text, p.snap.asof)


class Batcher:
    """Scores the small /predict requests waiting in one event-loop turn together, up to `max_rows` ids a batch."""

    def __init__(self, max_rows: int = SMALL_N) -> None:
        self.max_rows = max_rows  # within the per-row paths, so a batch changes no answer
        self.pending: list[tuple] = []
        self._loop = None  # the event loop whose turn will score `pending`

    async def answer(self, p, user_ids: list[str]) -> Response:
        """The response for `user_ids`, scored with whatever else is waiting."""
        if len(user_ids) > self.max_rows:
            return predict_ids(p, user_ids)
        loop = asyncio.get_running_loop()
        if self.pending and self._loop is not loop:  # left by a loop that closed before its turn ran
            self.pending = []
        fut = loop.create_future()
        if not self.pending:
            self._loop = loop
            loop.call_soon(self._run)
        self.pending.append((p, user_ids, fut))
        return await fut

    def _run(self) -> None:
        batch, self.pending = self.pending, []
        while batch:
            p, n, take = batch[0][0], 0, 0
            while take < len(batch) and batch[take][0] is p and n + len(batch[take][1]) <= self.max_rows:
                n += len(batch[take][1])
                take += 1
            chunk, batch = batch[: max(take, 1)], batch[max(take, 1) :]
            try:
                scored = p.predict_many_json([ids for _, ids, _ in chunk])
                answers = [(fut, _answer(p, ids, s)) for (_, ids, fut), s in zip(chunk, scored)]
            except Exception as e:  # noqa: BLE001 - each waiting request fails as it would alone
                answers = [(fut, e) for _, _, fut in chunk]
            for fut, a in answers:
                if fut.done():  # the client went away or the request timed out
                    continue
                if isinstance(a, Exception):
                    fut.set_exception(a)
                else:
                    fut.set_result(a)


BATCHER = Batcher()


class FastPredictMiddleware:
    """`POST /predict` with a valid body, answered here once the models are in.

    Anything else (invalid body, not ready, other routes) goes on to the BentoML route
    unchanged, so its errors, docs and spec stay BentoML's. It sits inside BentoML's
    metrics, timeout and auth middlewares, so those still apply.
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
        live = LIVE.get("live")
        p = live.predictor if live is not None else None  # once: a reload may swap it mid-request
        if p is not None:
            try:
                user_ids = PredictRequest.model_validate_json(body).user_ids
            except ValidationError:
                user_ids = None
            if user_ids is not None:
                await (await BATCHER.answer(p, user_ids))(scope, receive, send)
                return
        await self.app(scope, _replay(body, None, receive), send)


def _replay(body: bytes, then: dict | None, receive):
    """An ASGI `receive` that hands out an already-read body first."""
    pending = [{"type": "http.request", "body": body, "more_body": False}] + ([then] if then else [])

    async def replay():
        return pending.pop(0) if pending else await receive()

    return replay


def install(service) -> None:
    """Add the fast path to a BentoML service class (last, so it runs inside auth)."""
    service.add_asgi_middleware(FastPredictMiddleware)
