"""etcd v3 through its JSON gateway (``/v3/...``), with the ``etcd3gw``
client: key ranges, transactions, leases and a watch stream that is read
here, so that its end is noticed and it is opened again from the last
revision seen.

Under ryu-manager every socket is an eventlet one, so a call blocks only
the green thread that makes it. Keys and values are text (UTF-8); the
gateway's base64 is undone here.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import requests
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import ConnectionFailedError, ConnectionTimeoutError, Etcd3Exception, InternalServerError

LOG = logging.getLogger("ryu_dsr.etcd")
WATCH_IDLE_SECONDS = 10.0  # a watch stream silent this long is opened again (from the last revision seen)


class EtcdUnavailable(OSError):
    """No endpoint answered; nothing was written."""


class EtcdRefused(OSError):
    """etcd answered with an error (a request too large, say); nothing was written."""


class Compacted(Exception):
    """A watch asked for revisions etcd no longer has (compacted away, or
    an etcd that starts again from nothing): read everything again."""

    def __init__(self, revision: int, why: str = "compacted its history up to") -> None:
        super().__init__(f"etcd {why} revision {revision}")
        self.revision = revision


@dataclass(frozen=True)
class Kv:
    key: str
    value: str
    create_revision: int
    mod_revision: int


@dataclass(frozen=True)
class Event:
    """A put (``value`` set) or a delete (``value`` None) of one key."""

    key: str
    value: str | None
    revision: int
    create_revision: int = 0


def _why(error: Exception | None) -> str:
    """A short reason for a failed call (requests' own text is a paragraph)."""
    text = getattr(error, "detail_text", None) or str(error or "")
    found = re.search(r"\[Errno -?\d+\] ([^'\"()]+)", text)
    if found:
        return found[1].strip()
    found = re.search(r"\[SSL: \w+\] ([^'\"()]+)", text)  # a TLS handshake refused, by either side
    if found:
        return f"TLS: {found[1].strip()}"
    if "SSLEOFError" in text:
        return "TLS: etcd closed the connection in the handshake (no client certificate, or one it does not accept)"
    found = re.search(r"SSL\w*Error\(\w*\(?-?\d*,? ?'([^'(]+)", text)
    if found:
        return f"TLS: {found[1].strip()}"
    if "timed out" in text.lower():
        return "timed out"
    return text[:200] or type(error).__name__


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode()


def prefix_end(prefix: str) -> str:
    """The end of the key range of every key that starts with ``prefix``."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return raw.decode()


def _kv(item: dict) -> Kv:
    return Kv(
        unb64(item.get("key")),
        unb64(item.get("value")),
        int(item.get("create_revision", 0)),
        int(item.get("mod_revision", 0)),
    )


# -- transaction parts --


def put(key: str, value: str, lease: int = 0) -> dict:
    body = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = lease
    return {"request_put": body}


def delete(key: str) -> dict:
    return {"request_delete_range": {"key": b64(key)}}


def compare(key: str, target: str, value: int) -> dict:
    """``target`` of ``key`` equals ``value``: MOD (mod_revision), CREATE
    (create_revision) or VERSION. A missing key has 0 for each."""
    field = {"MOD": "mod_revision", "CREATE": "create_revision", "VERSION": "version"}[target]
    return {"key": b64(key), "result": "EQUAL", "target": target, field: str(value)}


class Etcd:
    """Calls to the first endpoint that answers (in the order given, the
    last one that answered first)."""

    def __init__(
        self,
        endpoints: Iterable[str],
        timeout: float = 2.0,
        ca_cert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        """``ca_cert``: the CA that signed etcd's server certificate (https);
        ``cert`` and ``key``: this client's certificate, for etcd's
        --client-cert-auth."""
        self.clients = []
        for endpoint in endpoints:
            url = requests.utils.urlparse(endpoint)
            # Our own session: requests lets REQUESTS_CA_BUNDLE (and proxy
            # variables) of the environment override a session's CA.
            session = requests.Session()
            session.trust_env = False
            session.verify = ca_cert or True
            if cert and key:
                session.cert = (cert, key)
            client = Etcd3Client(
                url.hostname, url.port or 2379, url.scheme or "http", timeout=timeout, api_path="/v3/", session=session
            )
            self.clients.append(client)
        if not self.clients:
            raise ValueError("no etcd endpoint")
        self.current = 0
        self.timeout = timeout

    @property
    def endpoint(self) -> str:
        return self.clients[self.current].base_url

    def call(self, path: str, body: dict) -> dict:
        last: Exception | None = None
        for attempt in range(len(self.clients)):
            index = (self.current + attempt) % len(self.clients)
            client = self.clients[index]
            try:
                answer = client.post(client.get_url(path), json=body)
            except (ConnectionFailedError, ConnectionTimeoutError, InternalServerError) as error:
                last = error  # down, or without a leader: the next endpoint
                continue
            except Etcd3Exception as error:
                raise EtcdRefused(f"etcd {path}: {error.detail_text or error}") from None
            except requests.RequestException as error:
                last = error
                continue
            self.current = index
            return answer
        raise EtcdUnavailable(f"etcd unreachable ({', '.join(c.base_url for c in self.clients)}): {_why(last)}")

    # -- keys --

    def range_prefix(self, prefix: str, sort_by_create: bool = False, limit: int = 0) -> tuple[int, list[Kv]]:
        """(revision of the read, every key under ``prefix``)."""
        body: dict = {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}
        if sort_by_create:
            body.update(sort_order="ASCEND", sort_target="CREATE")
        if limit:
            body["limit"] = limit
        answer = self.call("kv/range", body)
        return int(answer["header"]["revision"]), [_kv(item) for item in answer.get("kvs", [])]

    def txn(self, compares: list[dict], success: list[dict], failure: list[dict] = ()) -> tuple[bool, int, list]:
        """(whether every compare held, the revision after it, the responses
        of the branch taken)."""
        answer = self.call("kv/txn", {"compare": compares, "success": success, "failure": list(failure)})
        return bool(answer.get("succeeded")), int(answer["header"]["revision"]), answer.get("responses", [])

    # -- leases --

    def grant(self, ttl: int) -> int:
        return int(self.call("lease/grant", {"TTL": ttl, "ID": 0})["ID"])

    def keepalive(self, lease: int) -> int:
        """The lease's TTL now; 0 if it is gone (expired or revoked)."""
        answer = self.call("lease/keepalive", {"ID": lease})
        return int(answer.get("result", {}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        self.call("kv/lease/revoke", {"ID": lease})

    # -- watching --

    def watch(
        self,
        prefix: str,
        start_revision: int,
        handle: Callable[[int, list[Event]], None],
        idle: float = WATCH_IDLE_SECONDS,
    ) -> int:
        """Read one watch stream of every key under ``prefix`` from
        ``start_revision``: ``handle(revision, events)`` once per revision,
        in order. Returns the revision to watch from next when the stream
        ends (etcd went away, or it said nothing for ``idle`` seconds);
        raises Compacted when etcd no longer has ``start_revision``."""
        create = {
            "key": b64(prefix),
            "range_end": b64(prefix_end(prefix)),
            "start_revision": start_revision,
            "progress_notify": True,
        }
        client = self.clients[self.current]
        following = start_revision
        try:
            response = client.session.post(
                client.get_url("watch"), json={"create_request": create}, stream=True, timeout=(self.timeout, idle)
            )
        except requests.RequestException as error:
            raise EtcdUnavailable(f"etcd watch at {client.base_url}: {error}") from None
        try:
            for line in response.iter_lines():
                if not line.strip():
                    continue
                result = json.loads(line).get("result") or {}
                if int(result.get("compact_revision", 0) or 0):
                    raise Compacted(int(result["compact_revision"]))
                if result.get("canceled"):
                    raise EtcdRefused(f"etcd cancelled the watch: {result.get('cancel_reason', '')}")
                now = int(result.get("header", {}).get("revision", 0) or 0)
                if result.get("created") and now < start_revision - 1:
                    raise Compacted(now, "is back at")  # a new etcd cluster (or a restored backup)
                groups: dict[int, list[Event]] = {}
                for item in result.get("events", []):
                    kv = item.get("kv", {})
                    revision = int(kv.get("mod_revision", 0))
                    value = None if item.get("type") == "DELETE" else unb64(kv.get("value"))
                    event = Event(unb64(kv.get("key")), value, revision, int(kv.get("create_revision", 0)))
                    groups.setdefault(revision, []).append(event)
                for revision in sorted(groups):
                    handle(revision, groups[revision])
                    following = revision + 1
        except (requests.RequestException, ValueError) as error:
            LOG.debug("etcd watch stream ended: %s", error)
        finally:
            response.close()
        return following
