"""ASGI middleware of the prediction API: the `/docs` redirect (the /predict fast path is serving/fastpath.py)."""

from __future__ import annotations


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
