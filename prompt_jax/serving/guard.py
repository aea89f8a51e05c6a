"""What every request to the server passes before any work: the API key, the body size, and
(for endpoints that take texts) the row count and text length. All limits live in `Limits`.

`Guard` is an ASGI middleware in front of the whole app, so every endpoint, one added later
included, inherits it without saying so:

- with an API key, every path but `PUBLIC_PATHS` (`/health`) needs `Authorization: Bearer
  <key>`, compared in constant time (digests of equal length); otherwise 401, before the body
  is read;
- a body over `Limits.max_body_bytes` gets 413: at once when its Content-Length says so, or
  as soon as a chunked body passes the limit; the app never sees it.

An endpoint that takes texts calls `Gate.rows` and `Gate.texts` on them before it tokenizes
anything. `document` writes all of this into the OpenAPI schema (the security scheme, 401 and
413) for every operation, so clients and schema-driven fuzzers see what the server does.
`check_bind` refuses to listen beyond loopback without a key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import socket
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse

PUBLIC_PATHS = frozenset({"/health"})
API_KEY_ENV = "PROMPT_JAX_API_KEY"
MIN_KEY_LENGTH = 16
ERROR_SCHEMA = {"type": "object", "properties": {"detail": {"type": "string"}},
                "required": ["detail"]}


@dataclasses.dataclass(frozen=True)
class Limits:
    """The limits every request meets before work starts.

    Attributes:
      max_body_bytes: a request body's size (JSON, an uploaded prompt in base64 included).
      max_text_chars: characters of one input text (text, and text_b apart); a longer one is
        cut to it before tokenization (overlong="truncate", said in the answer) or refused
        with 413 (overlong="reject").
      max_rows: input rows per request.
    """

    max_body_bytes: int = 2 * 2**20
    max_text_chars: int = 4096
    max_rows: int = 256

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if getattr(self, field.name) < 1:
                raise ValueError(f"{field.name} must be at least 1, got "
                                 f"{getattr(self, field.name)}")


@dataclasses.dataclass
class Refusals:
    """Requests refused (or rows cut) by the limits, by reason (read by GET /metrics)."""

    unauthorized: int = 0
    body_too_large: int = 0
    too_many_rows: int = 0
    text_too_long: int = 0
    texts_cut: int = 0


def check_key(api_key: str | None) -> None:
    """Raises ValueError for an API key too short to resist guessing."""
    if api_key is not None and len(api_key) < MIN_KEY_LENGTH:
        raise ValueError(f"an API key has at least {MIN_KEY_LENGTH} characters (e.g. "
                         f"`openssl rand -hex 32`)")


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) reaches this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback
                                   for a in addresses)


def check_bind(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuses to listen beyond loopback without an API key, unless told `insecure`.

    Raises:
      ValueError: naming the ways out.
    """
    check_key(api_key)
    if api_key is None and not insecure and not is_loopback(host):
        raise ValueError(f"refusing to listen on {host} without an API key: anyone who reaches "
                         f"the port could add or remove prompts. Set ${API_KEY_ENV} (or "
                         f"--api_key), or pass --insecure if the network is yours alone")


class Guard:
    """The ASGI middleware checking the API key and the body size (see the module docstring).

    Args:
      app: the ASGI app behind it.
      api_key: the key every non-public path needs (None: no authentication).
      limits: `max_body_bytes` is read here.
      refusals: counters it increments.
    """

    def __init__(self, app, *, api_key: str | None, limits: Limits, refusals: Refusals):
        check_key(api_key)
        self.app = app
        self.limits = limits
        self.refusals = refusals
        self._key = None if api_key is None else hashlib.sha256(api_key.encode()).digest()

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        digest = hashlib.sha256(given.strip()).digest()
        return hmac.compare_digest(digest, self._key) and scheme.lower() == b"bearer"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self._key is not None and scope["path"] not in PUBLIC_PATHS \
                and not self._authorized(headers):
            self.refusals.unauthorized += 1
            return await JSONResponse(
                {"detail": "a missing or wrong API key: send the header 'Authorization: Bearer "
                           "<key>'"}, 401, {"www-authenticate": "Bearer"})(scope, receive, send)
        limit = self.limits.max_body_bytes
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > limit:
            return await self._too_large(scope, receive, send)
        body, more = bytearray(), True
        while more:  # read it all (a chunked body too) before the app sees any of it
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: nobody to answer
            body += message.get("body", b"")
            if len(body) > limit:
                return await self._too_large(scope, receive, send)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # then disconnects, as the client's own receive says them

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        self.refusals.body_too_large += 1
        detail = (f"the request body exceeds the limit of {self.limits.max_body_bytes} bytes "
                  f"(--max_body_bytes)")
        await JSONResponse({"detail": detail}, 413)(scope, receive, send)


class Gate:
    """The per-row limits of endpoints that take texts, checked before any tokenization.

    Args:
      limits: `max_rows` and `max_text_chars` are read here.
      refusals: counters it increments.
      queue_limit: rows the server's queue holds (a request larger than it could never fit).
    """

    def __init__(self, limits: Limits, refusals: Refusals, queue_limit: int):
        self.limits = limits
        self.refusals = refusals
        self.queue_limit = queue_limit

    def rows(self, n: int) -> None:
        """Raises 413 for more rows than one request may hold."""
        limit = min(self.limits.max_rows, self.queue_limit)
        if n > limit:
            self.refusals.too_many_rows += 1
            which = "--max_rows" if limit == self.limits.max_rows else "the queue limit"
            raise HTTPException(status_code=413, detail=f"{n} inputs exceed the limit of "
                                f"{limit} per request ({which}); send fewer per request")

    def texts(self, text: str, text_b: str | None, overlong: str,
              where: str = "") -> tuple[str, str | None, int]:
        """A row's texts, each within `max_text_chars`, and the characters the row had when
        one was cut (else 0). Nothing here tokenizes.

        Raises:
          HTTPException: 413 for a longer text with overlong="reject".
        """
        limit = self.limits.max_text_chars
        size = len(text) + len(text_b or "")
        if len(text) > limit or len(text_b or "") > limit:
            if overlong == "reject":
                self.refusals.text_too_long += 1
                raise HTTPException(status_code=413, detail=f"{where}a text of "
                                    f"{max(len(text), len(text_b or ''))} characters exceeds "
                                    f"the limit of {limit} (--max_text_chars)")
            self.refusals.texts_cut += 1
            text, text_b = text[:limit], None if text_b is None else text_b[:limit]
        else:
            size = 0
        return text, text_b, size


def describe(limits: Limits, refusals: Refusals, api_key: str | None) -> dict[str, Any]:
    """The limits and refusals as GET /metrics shows them."""
    return {"limits": {**dataclasses.asdict(limits), "api_key": api_key is not None},
            "refused": dataclasses.asdict(refusals)}


def document(app: FastAPI, secured: bool) -> None:
    """Makes `app.openapi()` say what `Guard` does: the bearer scheme and 401 on every
    non-public operation (when `secured`), 413 on every operation that takes a body (and
    FastAPI's 400 for a body it cannot parse)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        error = {"content": {"application/json": {"schema": ERROR_SCHEMA}}}
        if secured:
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["bearer"] = {"type": "http", "scheme": "bearer",
                                 "description": f"the server's API key (${API_KEY_ENV})"}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "requestBody" in operation:
                    responses.setdefault("413", {"description": "too large", **error})
                    responses.setdefault("400", {"description": "a body that cannot be parsed "
                                                 "(not UTF-8, nested too deep)", **error})
                if secured and path not in PUBLIC_PATHS:
                    operation["security"] = [{"bearer": []}]
                    responses.setdefault("401", {
                        "description": "a missing or wrong API key", **error,
                        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
