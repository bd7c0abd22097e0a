"""The REST API under /v1: a plain WSGI application (webob), no Ryu.

``DsrApi(service, status)`` is mounted into ryu-manager's web server by the
Ryu shell, and driven directly with ``webob.Request.blank`` in tests: reads
go to the ``Status`` facade, changes to the ``Service``. JSON in and
out; every error is a JSON object ``{"error": ..., "message": ..., "field": ...}``.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import uuid
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from ryu_dsr.rest import metrics, views
from webob import Request, Response

from ryu_dsr.auth import token_holder
from ryu_dsr.model import Conflict, InvalidInput, NotFound
from ryu_dsr.pacing import Lateness, Pacer, no_pause
from ryu_dsr.service import Service
from ryu_dsr.status import Status

LOG = logging.getLogger("ryu_dsr.rest")
NAME = r"(?P<{}>[^/]+)"
MAX_BODY = 64 << 20  # a PUT /v1/config of 10,000 VIPs is a few MB


def _route(pattern: str) -> re.Pattern:
    regex = re.sub(r"\{(\w+)\}", lambda m: NAME.format(m.group(1)), pattern)
    return re.compile(f"^{regex}$")


class Call:
    """One request as a handler sees it."""

    def __init__(self, body: Any, query: dict[str, str], who: str, pace: Pacer | None = None) -> None:
        self.body = body
        self.query = query
        self.who = who
        self.pace = pace or Pacer()  # a long read's pauses (other work runs meanwhile)


class DsrApi:
    """Routes: (method, path pattern) -> handler(call, **params).

    ``settle()``, if given, waits until the switches hold an accepted change
    and returns the switches that did not confirm it (dpid -> why); a change
    they did not confirm is answered 503 naming them."""

    def __init__(
        self,
        service: Service,
        status: Status,
        settle: Callable[[], dict[int, str]] | None = None,
        tokens: dict[str, str] | None = None,
        token_file: str = "",
        cluster: Callable[[], dict] | None = None,
        pause: Callable[[], None] = no_pause,
        lateness: Lateness | None = None,
    ) -> None:
        """``tokens`` (name -> token): changes need one as a bearer token;
        None: no authentication (``auth = none``)."""
        self.service = service
        self.status = status
        self.cluster = cluster
        self.pause = pause
        self.lateness = lateness
        self.settle = settle
        self.tokens = tokens
        self.token_file = token_file
        b, st = service, status
        self.routes: list[tuple[str, str, re.Pattern, Callable[..., tuple[int, Any]]]] = []
        add = self._add
        add("GET", "/v1/openapi.json", lambda c: (200, openapi_document()))
        add("GET", "/v1/stats", lambda c: _paged(views.all_stats(st, c.query, c.pace)))
        add("GET", "/v1/status", lambda c: _paged(views.status_view(st, c.query, c.pace)))
        add("GET", "/v1/vips/{vip}/stats", lambda c, vip: (200, views.vip_stats(st, vip)))
        add("GET", "/v1/pools/{pool}/stats", lambda c, pool: (200, views.pool_stats(st, pool)))
        add("GET", "/v1/pools/{pool}/history", lambda c, pool: (200, st.history(pool)))
        add("GET", "/v1/config", lambda c: (200, st.config.document()))
        add("GET", "/v1/topology", lambda c: (200, st.topology()))
        add("GET", "/v1/trace", lambda c: (200, st.trace(c.query)))
        add("PUT", "/v1/config", lambda c: (200, b.apply_document(c.body, _dry_run(c.query), c.who)))
        add("GET", "/v1/pools", lambda c: _paged(views.list_pools(st, c.query)))
        add("POST", "/v1/pools", lambda c: (201, views.pool_json(st, b.create_pool(c.body, c.who).name)))
        add("GET", "/v1/pools/{pool}", lambda c, pool: (200, views.pool_json(st, pool)))
        add(
            "PATCH",
            "/v1/pools/{pool}",
            lambda c, pool: (200, _changed(b.patch_pool(pool, c.body, c.who), views.pool_json(st, pool))),
        )
        add("DELETE", "/v1/pools/{pool}", lambda c, pool: (204, b.delete_pool(pool, c.who)))
        add(
            "GET",
            "/v1/pools/{pool}/backends",
            lambda c, pool: (200, [views.backend_json(st, pool, ip) for ip in st.config.pool(pool).backends]),
        )
        add(
            "POST",
            "/v1/pools/{pool}/backends",
            lambda c, pool: (201, views.backend_json(st, pool, b.add_backend(pool, c.body, c.who).ip)),
        )
        add(
            "GET",
            "/v1/pools/{pool}/backends/{backend}",
            lambda c, pool, backend: (200, views.backend_json(st, pool, backend)),
        )
        add(
            "PATCH",
            "/v1/pools/{pool}/backends/{backend}",
            lambda c, pool, backend: (
                200,
                _changed(b.patch_backend(pool, backend, c.body, c.who), views.backend_json(st, pool, backend)),
            ),
        )
        add(
            "DELETE",
            "/v1/pools/{pool}/backends/{backend}",
            lambda c, pool, backend: (204, b.delete_backend(pool, backend, c.who)),
        )
        add("GET", "/v1/vips", lambda c: _paged(views.list_vips(st, c.query)))
        add("POST", "/v1/vips", lambda c: (201, views.vip_json(st, b.create_vip(c.body, c.who).name)))
        add("GET", "/v1/vips/{vip}", lambda c, vip: (200, views.vip_json(st, vip)))
        add(
            "PATCH",
            "/v1/vips/{vip}",
            lambda c, vip: (200, _changed(b.patch_vip(vip, c.body, c.who), views.vip_json(st, vip))),
        )
        add("DELETE", "/v1/vips/{vip}", lambda c, vip: (204, b.delete_vip(vip, c.who)))
        add("GET", "/v1/switches", lambda c: (200, views.switches_json(st)))
        add("GET", "/v1/cluster", lambda c: (200, cluster() if cluster else {"mode": "standalone", "role": "master"}))
        add("POST", "/v1/state/adopt", lambda c: (200, b.adopt_state(c.body, c.who)))

    def _add(self, method: str, pattern: str, handler: Callable[..., tuple[int, Any]]) -> None:
        self.routes.append((method, pattern, _route(pattern), handler))

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, request: Request) -> Response:
        """The response to one request; no exception and no traceback ever
        leaves: an unexpected error is logged with an id and answered 500
        with that id."""
        try:
            return self._handle(request)
        except Exception:  # noqa: BLE001  (the last line of defence)
            incident = uuid.uuid4().hex[:12]
            LOG.exception("REST %s %s failed (error id %s)", request.method, request.environ.get("PATH_INFO"), incident)
            return _error(
                500, "internal", f"the controller failed to answer; the log has the details under id {incident}"
            )

    def _handle(self, request: Request) -> Response:
        try:
            path = request.path_info.rstrip("/") or "/"
        except UnicodeDecodeError:
            return _error(400, "invalid", "the path is not valid UTF-8 after percent-decoding", "path")
        if path == "/metrics":  # Prometheus text; open to read, like every GET
            if request.method != "GET":
                return _error(405, "method_not_allowed", "/metrics answers GET only")
            return Response(
                body=metrics.render(self.status, self.cluster, Pacer(self.pause), self.lateness),
                content_type=None,
                headerlist=[("Content-Type", metrics.CONTENT_TYPE)],
            )
        if path == "/status":  # the status page: static HTML that reads GET /v1/status
            if request.method != "GET":
                return _error(405, "method_not_allowed", "/status answers GET only")
            return Response(
                body=status_page(),
                content_type=None,
                headerlist=[
                    ("Content-Type", "text/html; charset=utf-8"),
                    (
                        "Content-Security-Policy",
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
                    ),
                    ("X-Content-Type-Options", "nosniff"),
                    ("Cache-Control", "no-cache"),
                ],
            )
        allowed = []
        for method, _pattern, regex, handler in self.routes:
            found = regex.match(path)
            if not found:
                continue
            allowed.append(method)
            if method != request.method:
                continue
            who = request.client_addr or "local"
            if method != "GET" and self.tokens is not None:
                holder = token_holder(self.tokens, request.headers.get("Authorization"))
                if holder is None:
                    response = _error(
                        401,
                        "unauthorized",
                        "this change needs the header Authorization: Bearer TOKEN "
                        f"(the controller's token file: {self.token_file or 'see dsr.token_file'})",
                    )
                    response.www_authenticate = ("Bearer", {"realm": "ryu_dsr"})
                    return response
                who = f"token {holder} from {who}"
            if method in ("POST", "PATCH", "PUT") and request.content_type != "application/json":
                # A browser may send a cross-site "simple" request as
                # text/plain or a form without asking first: only JSON is taken.
                return _error(
                    415,
                    "unsupported_media_type",
                    f"the body must be sent as Content-Type: application/json, not {request.content_type or 'none'}",
                    "Content-Type",
                )
            try:
                body = self._body(request) if method in ("POST", "PATCH", "PUT") else None
                call = Call(body, dict(request.GET), who, Pacer(self.pause))
                result = handler(call, **found.groupdict())
            except InvalidInput as error:
                return _error(400, "invalid", str(error), error.field)
            except NotFound as error:
                return _error(404, "not_found", str(error))
            except Conflict as error:
                return _error(409, "conflict", str(error))
            except OSError as error:
                LOG.error("cannot save state: %s", error)
                return _error(500, "not_saved", f"the change was not saved, nothing changed: {error}")
            status, payload = result[0], result[1]
            writes = method != "GET" and not (method == "PUT" and payload.get("dry_run"))
            if writes and self.settle is not None:
                unconfirmed = self.settle()
                if unconfirmed:
                    names = "; ".join(f"switch {dpid:016x}: {why}" for dpid, why in sorted(unconfirmed.items()))
                    return _error(
                        503,
                        "not_confirmed",
                        f"the change is saved but not confirmed by every switch ({names}); "
                        "it is applied when the switch is back in line",
                    )
            if status == 204:
                return Response(status=204)
            response = _json(status, payload, call.pace) if len(result) > 2 else _json(status, payload)
            if len(result) > 2 and result[2]:
                response.headers["X-Next-Cursor"] = result[2]
                query = dict(request.GET, cursor=result[2])
                response.headers["Link"] = f'<{request.path_info}?{urlencode(query)}>; rel="next"'
            return response
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
        if request.content_length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            # sent in chunks (no length): the server's input decodes them; webob would see no body
            raw = request.environ["wsgi.input"].read(MAX_BODY + 1)
            if len(raw) > MAX_BODY:
                raise InvalidInput("body", f"must be at most {MAX_BODY} bytes")
        else:
            raw = request.body
        if not raw.strip():
            raise InvalidInput("body", "must be a JSON object; the request had no body")
        try:
            return json.loads(raw)
        except ValueError as error:
            raise InvalidInput("body", f"is not valid JSON: {error}") from None
        except RecursionError:
            raise InvalidInput("body", "is nested too deeply") from None


def _changed(_done: None, view: Any) -> Any:
    """The view of an object after the change that came first (a PATCH
    answers the object as it is now)."""
    return view


def _paged(listed: tuple[list, Any]) -> tuple[int, list, str | None]:
    items, page = listed
    return 200, items, page.next


def _dry_run(query: dict[str, str]) -> bool:
    value = query.get("dry_run", "false")
    if value not in ("true", "false"):
        raise InvalidInput("dry_run", "must be true or false")
    return value == "true"


def _json(status: int, payload: Any, pause: Callable[[], None] | None = None) -> Response:
    """JSON, indented for a person; a page (a list, stats, status: with
    ``pause``, a ``Pacer``) without indents, which Python writes five times
    faster, and piece by piece, pausing as the pacer says: a page may hold
    thousands of objects."""
    text = _compact(payload, pause) if pause is not None else json.dumps(payload, indent=1)
    return Response(status=status, content_type="application/json", charset="utf-8", body=text.encode() + b"\n")


def _compact(payload: Any, pause: Callable[[], None]) -> str:
    """Compact JSON of a page; its top-level lists and objects written an
    element at a time."""
    dumps = functools.partial(json.dumps, separators=(",", ":"))
    if not isinstance(payload, dict):
        return _pieces(payload, dumps, pause)
    return "{" + ",".join(f"{dumps(key)}:{_pieces(value, dumps, pause)}" for key, value in payload.items()) + "}"


def _pieces(value: Any, dumps: Callable[[Any], str], pause: Callable[[], None]) -> str:
    if isinstance(value, list):
        wrap, pieces = "[]", (dumps(item) for item in value)
    elif isinstance(value, dict):
        wrap, pieces = "{}", (f"{dumps(key)}:{dumps(item)}" for key, item in value.items())
    else:
        return dumps(value)
    out = []
    for piece in pieces:
        out.append(piece)
        pause()
    return wrap[0] + ",".join(out) + wrap[1]


def _error(status: int, error: str, message: str, field: str | None = None) -> Response:
    payload = {"error": error, "message": message}
    if field is not None:
        payload["field"] = field
    return _json(status, payload)


@functools.cache
def status_page() -> bytes:
    return resources.files("ryu_dsr.rest").joinpath("status.html").read_bytes()


def openapi_document() -> dict:
    return json.loads(resources.files("ryu_dsr.rest").joinpath("openapi.json").read_text())
