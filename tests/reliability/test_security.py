"""Security: the API token is compared in constant time, never logged, and errors never echo whole payloads."""

from __future__ import annotations

import ast
import hmac
import inspect
import json

import httpx
import pytest

from reliability.results import record
from serving import auth

MAX_ERROR_BODY = 2048  # bytes: an error names the field and the problem, it does not repeat the request


def _compares_token_with_eq(tree: ast.AST) -> list[int]:
    """Lines where something named like a token is compared with == / != (a timing leak)."""
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
                n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
            }
            if any("token" in n.lower() or n == "given" for n in names):
                bad.append(node.lineno)
    return bad


def test_token_check_is_constant_time_in_the_code():
    """auth.py compares the token only through hmac.compare_digest, never with ==."""
    src = inspect.getsource(auth)
    tree = ast.parse(src)
    assert _compares_token_with_eq(tree) == [], "token compared with == / != in serving/auth.py"
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "compare_digest"
    ]
    assert calls, "no hmac.compare_digest call in serving/auth.py"
    mw = inspect.getsource(auth.BearerTokenMiddleware.__call__)
    assert "token_ok(" in mw, "the middleware does not go through token_ok"


def test_middleware_calls_compare_digest(monkeypatch):
    """Behaviour: every request to a protected path reaches hmac.compare_digest with the configured token."""
    import asyncio

    seen = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: seen.append((a, b)) or real(a, b))
    sent = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(msg):
        sent.append(msg)

    mw = auth.BearerTokenMiddleware(app, token="s3cret-token")
    for value in (b"Bearer s3cret-token", b"Bearer s3cret-tokeX", b"Bearer s", b"Bearer s3cret-token-longer"):
        sent.clear()
        scope = {"type": "http", "path": "/predict", "headers": [(b"authorization", value)]}
        asyncio.run(mw(scope, None, send))
        ok = value == b"Bearer s3cret-token"
        assert sent[0]["status"] == (200 if ok else 401), value
    assert len(seen) == 4 and all(b == b"s3cret-token" for _, b in seen)


def test_token_behaviour_over_http(api, user_ids):
    """Right token 200; missing, wrong, prefix, longer, wrong scheme 401; probes and docs stay open."""
    body = {"user_ids": user_ids[:1]}
    tok = api.token
    cases = {
        None: 401,
        f"Bearer {tok}": 200,
        f"bearer {tok}": 200,
        f"Bearer {tok[:-1]}": 401,
        f"Bearer {tok}x": 401,
        f"Basic {tok}": 401,
        "Bearer": 401,
        tok: 401,
    }
    for header, want in cases.items():
        h = {"Authorization": header} if header is not None else {}
        r = httpx.post(api.url + "/predict", json=body, headers=h, timeout=30)
        assert r.status_code == want, (header, r.status_code, r.text[:200])
        if want == 401:
            assert tok not in r.text
    for path in ("/livez", "/readyz", "/docs.json"):
        assert httpx.get(api.url + path, timeout=10).status_code == 200, path


def test_token_never_logged(api, user_ids):
    """After requests with the right and wrong tokens (and failing ones), neither is in the server log or /metrics."""
    wrong = "wrong-token-Zq81"
    for h in (api.headers, {"Authorization": f"Bearer {wrong}"}):
        httpx.post(api.url + "/predict", json={"user_ids": user_ids[:2]}, headers=h, timeout=30)
        httpx.post(api.url + "/predict", json={"user_ids": []}, headers=h, timeout=30)
        httpx.post(
            api.url + "/predict_events",
            json={"events": [{"user_id": "x", "ts": "bad", "event": "nope"}]},
            headers=h,
            timeout=30,
        )
    httpx.get(api.url + "/metrics", headers=api.headers, timeout=10)
    log = api.log_text()
    metrics = httpx.get(api.url + "/metrics", timeout=10).text
    assert "POST" in log or "/predict" in log, "the server log shows no requests: the check would prove nothing"
    leaked = [t for t in (api.token, wrong) if t in log or t in metrics]
    record("security_token_not_logged", not leaked, log_bytes=len(log), leaked=leaked)
    assert not leaked


@pytest.mark.parametrize("kind", ["too_many_ids", "bad_events", "not_json", "wrong_type"])
def test_errors_do_not_echo_payload(api, kind):
    """A large invalid payload gets a short 4xx that does not repeat the payload."""
    marker = "PAYLOADMARK"
    if kind == "too_many_ids":
        content = json.dumps({"user_ids": [f"{marker}{i:06d}" for i in range(20_000)]})
    elif kind == "bad_events":
        ev = [{"user_id": f"{marker}{i}", "ts": f"{marker}-not-a-time", "event": f"{marker}-{i}"} for i in range(999)]
        content = json.dumps({"events": ev})
    elif kind == "not_json":
        content = "{" + marker * 100_000
    else:
        content = json.dumps({"user_ids": marker * 200_000})
    r = httpx.post(
        api.url + ("/predict_events" if kind == "bad_events" else "/predict"),
        content=content,
        headers={**api.headers, "Content-Type": "application/json"},
        timeout=60,
    )
    record(
        f"security_error_size_{kind}",
        400 <= r.status_code < 500 and len(r.content) <= MAX_ERROR_BODY,
        payload_bytes=len(content),
        status=r.status_code,
        body_bytes=len(r.content),
    )
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert len(r.content) <= MAX_ERROR_BODY, f"{len(r.content)}-byte error body for a {len(content)}-byte payload"
    assert r.text.count(marker) <= 2, "the error repeats the payload"
