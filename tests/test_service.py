"""The prediction API: in-process ASGI checks (fast) and the real `bentoml serve` over HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from serving_world import serving_world
from starlette.testclient import TestClient

from serving.schemas import EXAMPLE_EVENTS_REQUEST, EXAMPLE_REQUEST

TOKEN = "test-token-7f3a"


@pytest.fixture(scope="module")
def world():
    return serving_world()


def _wait_ready(get, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get("/readyz").status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError("service never became ready")


@pytest.fixture(scope="module")
def client(world, tmp_path_factory):
    """The service's ASGI app in-process, with the token check on.

    The snapshot appears only after start-up, so the fixture also checks that the
    service stays up and not ready (503) until it can load, then recovers by itself.
    One app per process: BentoML's own metrics cannot be registered twice.
    """
    scores = tmp_path_factory.mktemp("late") / "scores.parquet"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIYU_CONFIG", str(world.cfg_path))
        mp.setenv("SIYU_SCORES", str(scores))
        mp.setenv("SIYU_API_TOKEN", TOKEN)
        mp.setenv("SIYU_LOAD_RETRY_SECONDS", "0.2")
        from serving.service import SiyuService

        with TestClient(SiyuService.to_asgi(), headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            assert c.get("/livez").status_code == 200
            assert c.get("/readyz").status_code == 503
            r = c.post("/predict", json=EXAMPLE_REQUEST)
            assert r.status_code == 503 and "not loaded" in r.json()["error"]
            shutil.copy(world.scores, scores)
            _wait_ready(c.get)
            yield c


def test_predict_example(client, world):
    r = client.post("/predict", json=EXAMPLE_REQUEST)
    assert r.status_code == 200, r.text
    body = r.json()
    from serving.schemas import PredictResponse
    from training.model_registry import resolve_alias

    PredictResponse.model_validate(body)  # the hot path serialises dicts: they must match the schema
    assert body["model_versions"]["churn"] == resolve_alias(world.cfg, "churn")
    assert body["snapshot_date"].startswith(world.asof.date().isoformat())
    items = body["predictions"]
    assert [i["status"] for i in items] == ["ok", "ok", "unknown_user"]
    for item in items[:2]:
        assert {"push_effect_churn", "push_effect_spend", "contact", "contact_reason", "fatigue"} <= set(item)
        for lab in ("churn", "promotion", "koc"):
            score = item[lab]
            assert (score is None) == (item[f"p_{lab}"] is None)
            if score:
                assert 0 <= score["probability"] <= 1 and 0 <= score["percentile"] <= 100
                assert len(score["reasons"]) == 3 and all(r["sentence"] for r in score["reasons"])


@pytest.mark.parametrize(
    "body, loc",
    [
        ({"user_ids": []}, ["user_ids"]),
        ({"user_ids": [f"u{i}" for i in range(1001)]}, ["user_ids"]),
        ({"user_ids": ["u1"], "extra": 1}, ["extra"]),
        ({"user_ids": [1]}, ["user_ids", 0]),
        ({"user_ids": "u1"}, ["user_ids"]),
        ({}, ["user_ids"]),
    ],
)
def test_predict_bad_input_is_400_naming_the_field(client, body, loc):
    r = client.post("/predict", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["detail"][0]["loc"] == loc


def test_malformed_json_is_400(client):
    r = client.post("/predict", content=b'{"user_ids": ["u1"', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(
    "event, loc",
    [
        ({"user_id": "n1", "ts": "not a time", "event": "follow"}, ["events", 1, "ts"]),
        ({"user_id": "n1", "ts": "2025-05-01", "event": "teleport"}, ["events", 1, "event"]),
        ({"user_id": "n1", "ts": "2025-05-01", "event": "purchase", "amount": -3}, ["events", 1, "amount"]),
        ({"user_id": "n1", "ts": "2025-05-01", "event": "review", "rating": 9}, ["events", 1, "rating"]),
        ({"user_id": "n1", "ts": "2025-05-01", "event": "follow", "colour": "red"}, ["events", 1, "colour"]),
        ({"user_id": "n1", "ts": "2025-05-01", "event": "purchase", "amount": "lots"}, ["events", 1, "amount"]),
    ],
)
def test_predict_events_invalid_rows_are_400(client, event, loc):
    good = {"user_id": "n1", "ts": "2025-04-01", "event": "follow"}
    r = client.post("/predict_events", json={"events": [good, event]})
    assert r.status_code == 400, r.text
    assert r.json()["detail"][0]["loc"] == loc


def test_predict_events_new_user(client):
    r = client.post("/predict_events", json=EXAMPLE_EVENTS_REQUEST)
    assert r.status_code == 200, r.text
    (item,) = r.json()["predictions"]
    assert item["user_id"] == "new-1" and item["status"] == "ok" and item["tier"] == "buyer"
    assert item["p_promotion"] is not None and len(item["promotion"]["reasons"]) == 3


@pytest.mark.parametrize("asof", ["0001-01-01T01:00:00+03:03", "9999-12-31T23:00:00-05:00", "1969-12-31"])
def test_predict_events_asof_out_of_range_is_400(client, asof):
    # Found by the OpenAPI fuzz: converting year 1 with an offset to UTC overflowed into a 500.
    r = client.post("/predict_events", json={**EXAMPLE_EVENTS_REQUEST, "asof": asof})
    assert r.status_code == 400, r.text
    assert "asof must be between" in r.text


def test_predict_events_asof_offset_is_converted_to_utc(client):
    r = client.post("/predict_events", json={**EXAMPLE_EVENTS_REQUEST, "asof": "2025-12-05T08:00:00+08:00"})
    assert r.status_code == 200, r.text
    assert r.json()["asof"].startswith("2025-12-05T00:00:00")


def test_fast_path_answers_exactly_like_the_bentoml_route(client, monkeypatch):
    from serving import fastpath

    fast = client.post("/predict", json=EXAMPLE_REQUEST)
    monkeypatch.delitem(fastpath.LIVE, "live")  # the middleware then hands every request to the route
    routed = client.post("/predict", json=EXAMPLE_REQUEST)
    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content
    assert fast.headers["content-type"] == routed.headers["content-type"]


def test_concurrent_requests_get_their_own_answers(client, monkeypatch):
    """Requests batched in one event-loop turn get, byte for byte, what each gets alone."""
    import asyncio

    from serving import fastpath

    p = fastpath.LIVE["live"].predictor
    ids = list(p.snap.user_ids[:40])
    reqs = [[ids[0]], [ids[1], "nobody"], [ids[2]], ids[3:20], [ids[20]], *[[u] for u in ids[21:40]]]
    alone = [fastpath.predict_ids(p, r).body for r in reqs]
    calls = []
    many = p.predict_many_json
    monkeypatch.setattr(p, "predict_many_json", lambda rs: calls.append(len(rs)) or many(rs))
    batcher = fastpath.Batcher(max_rows=16)

    async def together():
        return await asyncio.gather(*(batcher.answer(p, r) for r in reqs))

    got = asyncio.run(together())
    assert [g.body for g in got] == alone
    assert max(calls) > 1 and sum(calls) == len(reqs) and 1 in calls  # batched; the 17-id request went alone


@pytest.mark.parametrize("body", [b'{"user_ids": []}', b'{"user_ids": ["u1"], "x": 1}', b"not json", b""])
def test_fast_path_hands_invalid_bodies_to_the_route_intact(body):
    import asyncio

    from serving.fastpath import FastPredictMiddleware

    seen = {}

    async def inner(scope, receive, send):
        seen["body"] = (await receive())["body"]

    parts = [body[:3], body[3:]]  # one list for all calls: the body arrives in two messages

    async def receive_in_two_parts():
        part = parts.pop(0)
        return {"type": "http.request", "body": part, "more_body": bool(parts)}

    scope = {"type": "http", "path": "/predict", "method": "POST"}
    asyncio.run(FastPredictMiddleware(inner)(scope, receive_in_two_parts, None))
    assert seen["body"] == body


def test_auth_and_open_probes(client):
    bare = {"Authorization": ""}
    assert client.post("/predict", json=EXAMPLE_REQUEST, headers=bare).status_code == 401
    assert client.post("/predict", json=EXAMPLE_REQUEST, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/predict_events", json=EXAMPLE_EVENTS_REQUEST, headers=bare).status_code == 401
    for path in ("/livez", "/readyz", "/docs.json"):  # /metrics needs the real server (see below)
        assert client.get(path, headers=bare).status_code == 200, path
    assert client.get("/docs", headers=bare, follow_redirects=False).status_code == 307


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_bentoml_serve(world, tmp_path):
    """`siyu serve` starts the real BentoML server; call it over HTTP like another system would."""
    port = _free_port()
    env = {**os.environ, "SIYU_API_TOKEN": TOKEN, "SIYU_HOME": str(tmp_path)}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--scores",
            str(world.scores),
            "--config",
            str(world.cfg_path),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as c:

            def get(path):
                try:
                    return c.get(path)
                except httpx.TransportError:
                    assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
                    return httpx.Response(599)

            _wait_ready(get, timeout=180)
            r = c.post("/predict", json=EXAMPLE_REQUEST)
            assert r.status_code == 200 and r.json()["predictions"][2]["status"] == "unknown_user"
            ids = [f"u{i}" for i in range(1000)]
            r = c.post("/predict", json={"user_ids": ids})
            assert r.status_code == 200 and len(r.json()["predictions"]) == 1000
            assert c.post("/predict", json=EXAMPLE_REQUEST, headers={"Authorization": ""}).status_code == 401
            assert c.post("/predict", json={"user_ids": []}).status_code == 400
            assert c.post("/predict_events", json=EXAMPLE_EVENTS_REQUEST).status_code == 200
            metrics = c.get("/metrics", headers={"Authorization": ""})  # open, like the probes
            assert metrics.status_code == 200
            assert 'siyu_predictions_total{endpoint="predict",tier=' in metrics.text
            assert 'siyu_score_bucket{label="churn"' in metrics.text and "bentoml_service_request" in metrics.text
            assert "/predict_events" in c.get("/docs.json").json()["paths"]
        assert TOKEN not in (tmp_path / "serve.log").read_text(), "the token must never be logged"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_bentoml_build_on_a_fresh_copy(tmp_path):
    """`bentoml build` packages the service from the tracked files alone (what a fresh clone holds)."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split()
    src = tmp_path / "clone"
    for f in files:
        if (repo / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / f, src / f)
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    bentoml = str(Path(sys.executable).parent / "bentoml")
    out = subprocess.run([bentoml, "build", "--output", "tag"], cwd=src, env=env, capture_output=True, text=True)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    tag = out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    assert tag.startswith("siyu:"), out.stdout
    bento = tmp_path / "bentoml" / "bentos" / "siyu" / tag.split(":")[1]
    assert (bento / "src" / "serving" / "service.py").is_file() and (bento / "src" / "mlproject.yaml").is_file()
    assert not (bento / "src" / "tests").exists()
    assert "lightgbm==" in (bento / "env" / "python" / "requirements.txt").read_text()


def test_observe_many_equals_one_observe_per_value():
    """The batched histogram update leaves the same buckets, count and sum as observe() per value."""
    import numpy as np
    import prometheus_client as pc

    from serving.metrics import observe_many

    reg = pc.CollectorRegistry()
    bounds = [0.01, 0.1, 0.5, 1.0]
    a = pc.Histogram("a", "a", buckets=bounds, registry=reg)
    b = pc.Histogram("b", "b", buckets=bounds, registry=reg)
    values = np.array([0.0, 0.01, 0.010001, 0.3, 0.5, 0.99, 1.0, 0.3, 2.0])
    for v in values:
        a.observe(float(v))
    observe_many(b, values)
    observe_many(b, values[:0])
    samples = {
        name: {(s.name[1:], tuple(sorted(s.labels.items()))): s.value for s in m.samples}
        for name, m in ((m.name, m) for m in reg.collect())
    }
    assert samples["a"] == pytest.approx(samples["b"])


def test_metrics_flush_counts_every_queued_user():
    from serving import metrics

    served, hist = metrics._child("served", "buyer", "unit-test"), metrics._child("score", "unit-test")
    before, before_sum = served._value.get(), hist._sum.get()
    for _ in range(5):
        metrics.count("unit-test", ["buyer", "buyer"], {"unit-test": np.array([0.25, np.nan])})
    metrics.flush_metrics()
    assert served._value.get() == before + 10
    assert hist._sum.get() == pytest.approx(before_sum + 5 * 0.25)
