"""JSON views of the controller's objects for the REST API (read through
the ``Status`` facade), and list paging."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

from ryu_dsr.model import InvalidInput, parse_address, parse_int, parse_name
from ryu_dsr.pacing import no_pause
from ryu_dsr.status import Status

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000


def backend_json(status: Status, pool_name: str, ip: str) -> dict:
    backend = status.config.backend(pool_name, ip)
    out = backend.to_json()
    out["status"] = status.backend_status(pool_name, ip)
    return out


def pool_json(status: Status, name: str) -> dict:
    pool = status.config.pool(name)
    out = pool.to_json()
    out["backends"] = [backend_json(status, name, ip) for ip in pool.backends]
    out["slots"] = status.slots(name)
    out["handover"] = status.handover(name)
    out["failing_open"] = status.failing_open(name)
    return out


def vip_json(status: Status, name: str, backends: dict | None = None) -> dict:
    """A VIP and how many backends of its pool take new connections
    (``backends``: that count, when the caller has it for the pool)."""
    vip = status.config.vip(name)
    out = vip.to_json()
    out["status"] = backends if backends is not None else pool_backends_up(status, vip.pool)
    return out


def pool_backends_up(status: Status, name: str) -> dict:
    pool = status.config.pools[name]
    up = sum(1 for b in pool.backends.values() if status.backend_state(name, b)[0] == "up")
    return {"backends_up": up, "backends": len(pool.backends)}


TRAFFIC_NOTE = (
    "VIP request packets and bytes, and new TCP connections (SYN), counted by the switches' rules and "
    "read every stats_interval seconds; rates are over the last interval. A backend's figures are its "
    "MAC's: summed over the pools it is in."
)


def vip_stats(status: Status, name: str) -> dict:
    vip = status.config.vip(name)
    return {"vip": name, "pool": vip.pool, "traffic": status.vip_traffic(name)}


def pool_stats(status: Status, name: str, vips: bool = True) -> dict:
    """A pool's traffic: its backends' and (``vips``) its VIPs'."""
    pool = status.config.pool(name)
    return {
        "pool": name,
        "backends": {ip: status.backend_traffic(name, ip) for ip in pool.backends},
        "vips": {vip: status.vip_traffic(vip) for vip in sorted(status.config.vips_by_pool.get(name, ()))}
        if vips
        else {},
    }


def all_stats(status: Status, query: dict[str, str], pause: Callable[[], None] = no_pause) -> tuple[dict, Page]:
    """Traffic of a page of pools (``limit``, ``cursor``: pool names), their
    backends and their VIPs; the cost follows the page (``pause`` is asked
    after each VIP and pool: a ``Pacer``, so a page of thousands of VIPs is
    no single long step)."""
    _only(query, {"limit", "cursor"})
    page = Page(query)
    config = status.config
    names = page.take((), config.pool_order)
    vips, pools = {}, {}
    for name in names:
        for vip in config.vips_by_pool.get(name, ()):
            vips[vip] = status.vip_traffic(vip)
            pause()
        pools[name] = pool_stats(status, name, vips=False)["backends"]
        pause()
    return {
        "note": TRAFFIC_NOTE,
        "polls": status.polls,
        "vips": dict(sorted(vips.items())),
        "pools": pools,
        "switches": switches_json(status),
    }, page


def status_view(status: Status, query: dict[str, str], pause: Callable[[], None] = no_pause) -> tuple[dict, Page]:
    """What the status page shows, for a page of pools: each pool with its
    backends (state, weight, slots, pins, traffic) and its VIPs (address and
    traffic), the switches, and how many pools and VIPs there are."""
    _only(query, {"limit", "cursor"})
    page = Page(query)
    config = status.config
    pools = []
    for name in page.take((), config.pool_order):
        traffic = pool_stats(status, name, vips=False)  # each VIP's below, a pause after each
        pool = pool_json(status, name)
        for backend in pool["backends"]:
            backend["traffic"] = traffic["backends"][backend["ip"]]
        up = pool_backends_up(status, name)
        vips = []
        for vip in sorted(config.vips_by_pool.get(name, ())):
            vips.append(vip_json(status, vip, up) | {"traffic": status.vip_traffic(vip)})
            pause()
        pools.append(pool | {"vips": vips})
        pause()
    return {
        "pools_total": len(config.pools),
        "vips_total": len(config.vips),
        "polls": status.polls,
        "switches": switches_json(status),
        "pools": pools,
    }, page


def switches_json(status: Status) -> list[dict]:
    return [switch.to_json() for switch in status.switches()]


class Page:
    """``limit`` and ``cursor`` query parameters: names after the cursor,
    in name order."""

    def __init__(self, query: dict[str, str]) -> None:
        self.limit = parse_int(_int(query.get("limit", str(DEFAULT_LIMIT)), "limit"), "limit", 1, MAX_LIMIT)
        cursor = query.get("cursor")
        self.cursor = parse_name(cursor, "cursor") if cursor is not None else None
        self.next: str | None = None

    def take(self, names: Iterable[str], ordered: list[str] | None = None) -> list[str]:
        """A page of ``names`` (a filter's few), or of ``ordered`` (every
        name, kept sorted by the config: no pass over all of them)."""
        if ordered is None:
            ordered = sorted(names)
        start = bisect.bisect_right(ordered, self.cursor) if self.cursor is not None else 0
        chosen = ordered[start : start + self.limit + 1]
        if len(chosen) > self.limit:
            chosen = chosen[: self.limit]
            self.next = chosen[-1]
        return chosen


def _int(value: str, where: str) -> int:
    if not value.isdigit():
        raise InvalidInput(where, "must be a positive integer")
    return int(value)


def list_pools(status: Status, query: dict[str, str]) -> tuple[list[dict], Page]:
    _only(query, {"limit", "cursor", "backend"})
    page = Page(query)
    config = status.config
    if "backend" in query:
        names = page.take(config.pools_by_backend.get(parse_address(query["backend"], "backend"), ()))
    else:
        names = page.take((), config.pool_order)
    return [pool_json(status, n) for n in names], page


def list_vips(status: Status, query: dict[str, str]) -> tuple[list[dict], Page]:
    _only(query, {"limit", "cursor", "pool", "ip"})
    page = Page(query)
    config = status.config
    filters = []
    if "pool" in query:
        filters.append(set(config.vips_by_pool.get(parse_name(query["pool"], "pool"), ())))
    if "ip" in query:
        filters.append(set(config.vips_by_ip.get(parse_address(query["ip"], "ip"), {})))
    names = page.take(set.intersection(*filters)) if filters else page.take((), config.vip_order)
    return [vip_json(status, n) for n in names], page


def _only(query: dict[str, str], allowed: set[str]) -> None:
    for key in query:
        if key not in allowed:
            raise InvalidInput(key, f"unknown query parameter; allowed: {', '.join(sorted(allowed))}")
