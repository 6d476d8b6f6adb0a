"""The ASGI gate in front of every route: API key, content type and body size, checked before FastAPI
reads a single byte of the body, so an unauthenticated or oversized upload is never parsed or stored.

    app.add_middleware(RequestGate, api_key="...", max_body_bytes=40_000_000, content_types={...})

Oversized bodies are caught twice: by Content-Length up front, and by counting streamed bytes (chunked
uploads, lying headers). Once the count passes the limit the app's own response, whatever it is, is
replaced by the 413. Every refusal reads and drops the rest of the body first (never stored; up to a byte
cap and a time cap, like a web server's lingering close) and only then answers and closes, so a client
still sending reads the answer instead of a connection reset: closing a socket with unread bytes in it
makes the kernel send a reset, which can wipe the answer before the client has read it.
At most `max_large_bodies` requests with bodies over 64 KB are in flight at once (else 429), so upload
memory is bounded by that times the body limit.
"""

from __future__ import annotations

import asyncio
import hmac
import json

LARGE_BODY = 65_536  # bytes; bodies above this (or of unknown length) count towards max_large_bodies
DRAIN_CAP = 256_000_000  # bytes of a refused body read and dropped so the client gets its answer cleanly
DRAIN_SECONDS = 30.0  # and at most this long (a slow sender is cut off)
PUBLIC_PATHS = ("/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect")


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def key_matches(headers: dict[str, str], api_key: str) -> bool:
    """`Authorization: Bearer KEY` or `X-API-Key: KEY`, compared in constant time."""
    given = headers.get("x-api-key", "")
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return bool(given) and hmac.compare_digest(given.encode(), api_key.encode())


class _TooLarge(Exception):
    pass


class RequestGate:
    def __init__(self, app, api_key: str | None, max_body_bytes: int, content_types: dict[tuple[str, str], str],
                 max_large_bodies: int = 8):
        self.app = app
        self.api_key = api_key
        self.max_body = int(max_body_bytes)
        self.content_types = content_types  # (METHOD, path) -> required media type
        self.max_large = int(max_large_bodies)  # bodies over LARGE_BODY bytes in flight at once (bounds memory)
        self._large = 0  # only touched on the event loop thread

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if self.api_key and path not in PUBLIC_PATHS and not key_matches(headers, self.api_key):
            await _refuse(receive, send, 401, "unauthorized", "missing or wrong API key (send 'Authorization: "
                          "Bearer KEY' or 'X-API-Key: KEY')", {"www-authenticate": "Bearer"})
            return
        wanted = self.content_types.get((method, path))
        if wanted is not None:
            got = headers.get("content-type", "").split(";")[0].strip().lower()
            if got != wanted:
                await _refuse(receive, send, 415, "unsupported_media_type",
                              f"{method} {path} takes {wanted}, got {got or 'no content type'!s}")
                return
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await _refuse(receive, send, 400, "bad_request", "Content-Length is not a number")
                return
            if int(length) > self.max_body:
                await _refuse(receive, send, 413, "payload_too_large",
                              f"request body of {length} bytes; the limit is {self.max_body} bytes")
                return
        large = length is None or int(length) > LARGE_BODY
        if large and method in ("POST", "PUT", "PATCH"):
            if self._large >= self.max_large:
                await _refuse(receive, send, 429, "too_many_uploads", f"{self.max_large} large uploads are already in "
                              "progress; retry shortly", {"retry-after": "1"})
                return
            self._large += 1
            try:
                await self._guarded(scope, receive, send)
            finally:
                self._large -= 1
            return
        await self._guarded(scope, receive, send)

    async def _guarded(self, scope, receive, send):
        seen = 0
        over = False
        replaced = False

        async def counting_receive():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    over = True
                    if message.get("more_body", False):
                        await _drain(receive)
                    raise _TooLarge()
            return message

        async def guarded_send(message):
            nonlocal replaced
            if over:  # whatever the app answers to a cut-off body, the client gets the 413
                if not replaced:
                    replaced = True
                    await _reply(send, 413, "payload_too_large", f"request body over {self.max_body} bytes")
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            pass
        if over and not replaced:
            await _reply(send, 413, "payload_too_large", f"request body over {self.max_body} bytes")


async def _reply(send, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
    body = error_body(code, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _refuse(receive, send, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
    """Drop the unread body, then answer (and close)."""
    await _drain(receive)
    await _reply(send, status, code, message, extra)


async def _drain(receive, cap: int = DRAIN_CAP, seconds: float = DRAIN_SECONDS) -> None:
    """Read and drop the request body until its end, `cap` bytes or `seconds`, whichever comes first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    dropped = 0
    while dropped <= cap:
        try:
            message = await asyncio.wait_for(receive(), timeout=max(deadline - loop.time(), 0.0))
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
