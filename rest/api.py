"""The REST API under /v1: a plain WSGI application (webob), no Ryu.

``DsrApi(balancer)`` is mounted into ryu-manager's web server by the Ryu
shell, and driven directly with ``webob.Request.blank`` in tests. JSON in and
out; every error is a JSON object ``{"error": ..., "message": ..., "field": ...}``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from importlib import resources
from typing import Any

from webob import Request, Response

from ryu_dsr.model import Conflict, InvalidInput, NotFound

LOG = logging.getLogger("ryu_dsr.rest")
NAME = r"(?P<{}>[^/]+)"
MAX_BODY = 1 << 20


def _route(pattern: str) -> re.Pattern:
    regex = re.sub(r"\{(\w+)\}", lambda m: NAME.format(m.group(1)), pattern)
    return re.compile(f"^{regex}$")


class DsrApi:
    """Routes: (method, path pattern) -> handler(balancer, body, **params)."""

    def __init__(self, balancer: Any) -> None:
        self.balancer = balancer
        b = balancer
        self.routes: list[tuple[str, str, re.Pattern, Callable[..., tuple[int, Any]]]] = []
        add = self._add
        add("GET", "/v1/openapi.json", lambda body: (200, openapi_document()))
        add("GET", "/v1/pools", lambda body: (200, b.list_pools()))
        add("POST", "/v1/pools", lambda body: (201, b.create_pool(body)))
        add("GET", "/v1/pools/{pool}", lambda body, pool: (200, b.pool_json(pool)))
        add("PATCH", "/v1/pools/{pool}", lambda body, pool: (200, b.patch_pool(pool, body)))
        add("DELETE", "/v1/pools/{pool}", lambda body, pool: (204, b.delete_pool(pool)))
        add("GET", "/v1/pools/{pool}/backends", lambda body, pool: (200, b.list_backends(pool)))
        add("POST", "/v1/pools/{pool}/backends", lambda body, pool: (201, b.add_backend(pool, body)))
        add(
            "GET",
            "/v1/pools/{pool}/backends/{backend}",
            lambda body, pool, backend: (200, b.backend_json(pool, backend)),
        )
        add(
            "PATCH",
            "/v1/pools/{pool}/backends/{backend}",
            lambda body, pool, backend: (200, b.patch_backend(pool, backend, body)),
        )
        add(
            "DELETE",
            "/v1/pools/{pool}/backends/{backend}",
            lambda body, pool, backend: (204, b.delete_backend(pool, backend)),
        )
        add("GET", "/v1/vips", lambda body: (200, b.list_vips()))
        add("POST", "/v1/vips", lambda body: (201, b.create_vip(body)))
        add("GET", "/v1/vips/{vip}", lambda body, vip: (200, b.vip_json(vip)))
        add("PATCH", "/v1/vips/{vip}", lambda body, vip: (200, b.patch_vip(vip, body)))
        add("DELETE", "/v1/vips/{vip}", lambda body, vip: (204, b.delete_vip(vip)))
        add("GET", "/v1/switches", lambda body: (200, b.list_switches()))

    def _add(self, method: str, pattern: str, handler: Callable[..., tuple[int, Any]]) -> None:
        self.routes.append((method, pattern, _route(pattern), handler))

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, request: Request) -> Response:
        path = request.path_info.rstrip("/") or "/"
        allowed = []
        for method, _pattern, regex, handler in self.routes:
            found = regex.match(path)
            if not found:
                continue
            allowed.append(method)
            if method != request.method:
                continue
            try:
                body = self._body(request) if method in ("POST", "PATCH") else None
                status, result = handler(body, **found.groupdict())
            except InvalidInput as error:
                return _error(400, "invalid", str(error), error.field)
            except NotFound as error:
                return _error(404, "not_found", str(error))
            except Conflict as error:
                return _error(409, "conflict", str(error))
            except OSError as error:
                LOG.error("cannot save state: %s", error)
                return _error(500, "not_saved", f"the change was not saved, nothing changed: {error}")
            if status == 204:
                return Response(status=204)
            return _json(status, result)
        if allowed:
            response = _error(
                405, "method_not_allowed", f"{request.method} is not allowed here; allowed: {', '.join(allowed)}"
            )
            response.allow = allowed
            return response
        return _error(404, "not_found", f"no resource at {request.path_info}")

    @staticmethod
    def _body(request: Request) -> Any:
        if request.content_length and request.content_length > MAX_BODY:
            raise InvalidInput("body", f"must be at most {MAX_BODY} bytes")
        raw = request.body
        if not raw.strip():
            raise InvalidInput("body", "must be a JSON object; the request had no body")
        try:
            return json.loads(raw)
        except ValueError as error:
            raise InvalidInput("body", f"is not valid JSON: {error}") from None


def _json(status: int, payload: Any) -> Response:
    return Response(
        status=status,
        content_type="application/json",
        charset="utf-8",
        body=json.dumps(payload, indent=1).encode() + b"\n",
    )


def _error(status: int, error: str, message: str, field: str | None = None) -> Response:
    payload = {"error": error, "message": message}
    if field is not None:
        payload["field"] = field
    return _json(status, payload)


def openapi_document() -> dict:
    return json.loads(resources.files("ryu_dsr.rest").joinpath("openapi.json").read_text())
