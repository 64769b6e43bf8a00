"""Bearer-token check for the prediction API (BentoML has no server-side token check).

When `SIYU_API_TOKEN` is set (the config's `serving.api_token`), every path except the probes, metrics and API
docs needs `Authorization: Bearer <token>`; anything else gets 401. Deny by
default: a new endpoint is protected without anyone remembering to list it.
The token is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import json

from siyu.config import load_config

OPEN_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics", "/docs", "/docs.json", "/schema.json", "/"})
OPEN_PREFIXES = ("/static_content/", "/assets/")


def is_open(path: str) -> bool:
    """Whether a path stays reachable without the token (probes, metrics, docs)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def token_ok(header: bytes | None, token: bytes) -> bool:
    """Constant-time check of an `Authorization` header value against the expected token."""
    if not header:
        return False
    scheme, _, given = header.partition(b" ")
    # compare_digest: the time taken does not depend on how much of the token matched.
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)


class BearerTokenMiddleware:
    """ASGI middleware enforcing the bearer token on non-open HTTP paths.

    Args:
        app: the wrapped ASGI app.
        token: expected token; None takes the config's `serving.api_token` (from SIYU_API_TOKEN; unset: no check).
    """

    def __init__(self, app, token: str | None = None):
        self.app = app
        if token is None:
            secret = load_config().serving.api_token
            token = secret.get_secret_value() if secret else ""
        self.token = token.encode() if token else None

    async def __call__(self, scope, receive, send):
        if self.token is None or scope["type"] != "http" or is_open(scope.get("path", "")):
            return await self.app(scope, receive, send)
        header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), None)
        if token_ok(header, self.token):
            return await self.app(scope, receive, send)
        body = json.dumps({"error": "missing or invalid bearer token (header Authorization: Bearer <token>)"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="siyu"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
