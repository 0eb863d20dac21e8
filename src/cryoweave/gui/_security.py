"""Access rules of the web GUI: a token on every request, and no cross-site mutations.

* Token: when the app has one, every request (pages, static files, API, event stream) must
  carry it: ``Authorization: Bearer T``, the ``X-Cryoweave-Token`` header, ``?token=T`` (the
  URL the command prints) or the ``cryoweave_token`` cookie that the page sets. Otherwise 401.
* Cross-site requests: a request that changes something (POST, PUT, PATCH, DELETE) must carry
  the ``X-Cryoweave-Request`` header, which a cross-site form or image cannot send and a
  cross-site script may only send after a CORS preflight that this server never grants; an
  ``Origin`` header, when present, must be this server's own origin. Otherwise 403.
"""

from __future__ import annotations

import hmac
import json
import secrets
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

TOKEN_COOKIE = "cryoweave_token"
TOKEN_HEADER = "x-cryoweave-token"
CSRF_HEADER = "x-cryoweave-request"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# every response: scripts and styles from this server only, never framed (clickjacking), the
# token-bearing URL never sent as a referrer
RESPONSE_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; "
                                 b"style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def request_token(scope: dict[str, Any]) -> str | None:
    """The token a request carries, wherever it carries it."""
    headers = _headers(scope)
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if TOKEN_HEADER in headers:
        return headers[TOKEN_HEADER]
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("token"):
        return query["token"][0]
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:  # a malformed cookie header is no token
        return None
    return cookie[TOKEN_COOKIE].value if TOKEN_COOKIE in cookie else None


def cross_site_problem(scope: dict[str, Any]) -> str | None:
    """Why a mutating request looks cross-site (None when it is fine)."""
    if scope.get("method", "GET") in SAFE_METHODS:
        return None
    headers = _headers(scope)
    if headers.get(CSRF_HEADER) != "1":
        return f"missing the {CSRF_HEADER} header (requests that change things need it)"
    origin = headers.get("origin")
    if origin is not None and origin != "null":
        host = headers.get("host", "")
        if origin not in (f"http://{host}", f"https://{host}"):
            return f"cross-origin request from {origin} refused"
    elif origin == "null":
        return "cross-origin request from an opaque origin refused"
    if headers.get("sec-fetch-site") == "cross-site":
        return "cross-site request refused"
    return None


class SecurityMiddleware:
    """ASGI middleware applying the token and cross-site rules to every HTTP request."""

    def __init__(self, app: Any, token: str | None):
        self.app = app
        self.token = token

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.token is not None:
            given = request_token(scope)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                await _deny(send, 401, "a valid token is required (open the URL that "
                                       "`cryoweave gui` printed)")
                return
        problem = cross_site_problem(scope)
        if problem is not None:
            await _deny(send, 403, problem)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                   *RESPONSE_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _deny(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="cryoweave"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
