"""JSON views of the balancer's objects for the REST API, and list paging."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

from ryu_dsr.model import InvalidInput, parse_int, parse_ipv4, parse_name

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000


def backend_json(balancer: Any, pool_name: str, ip: str) -> dict:
    backend = balancer.config.backend(pool_name, ip)
    out = backend.to_json()
    out["status"] = balancer.backend_status(pool_name, ip)
    return out


def pool_json(balancer: Any, name: str) -> dict:
    pool = balancer.config.pool(name)
    out = pool.to_json()
    out["backends"] = [backend_json(balancer, name, ip) for ip in pool.backends]
    out["slots"] = len(balancer.planner.table(name))
    out["handover"] = balancer.handover_status(name)
    out["failing_open"] = name in balancer.failing_open
    return out


def vip_json(balancer: Any, name: str) -> dict:
    vip = balancer.config.vip(name)
    out = vip.to_json()
    pool = balancer.config.pools[vip.pool]
    up = sum(1 for b in pool.backends.values() if balancer.backend_state(vip.pool, b)[0] == "up")
    out["status"] = {"backends_up": up, "backends": len(pool.backends)}
    return out


TRAFFIC_NOTE = (
    "VIP request packets and bytes, and new TCP connections (SYN), counted by the switches' rules and "
    "read every stats_interval seconds; rates are over the last interval. A backend's figures are its "
    "MAC's: summed over the pools it is in."
)


def vip_stats(balancer: Any, name: str) -> dict:
    vip = balancer.config.vip(name)
    return {"vip": name, "pool": vip.pool, "traffic": balancer.vip_traffic(name)}


def pool_stats(balancer: Any, name: str) -> dict:
    pool = balancer.config.pool(name)
    vips = sorted(balancer.config.vips_by_pool.get(name, ()))
    return {
        "pool": name,
        "backends": {ip: balancer.backend_traffic(name, ip) for ip in pool.backends},
        "vips": {vip: balancer.vip_traffic(vip) for vip in vips},
    }


def all_stats(balancer: Any, query: dict[str, str]) -> tuple[dict, Page]:
    """Traffic of a page of pools (``limit``, ``cursor``: pool names), their
    backends and their VIPs; the cost follows the page."""
    _only(query, {"limit", "cursor"})
    page = Page(query)
    config = balancer.config
    names = page.take((), config.pool_order)
    vips = sorted(vip for name in names for vip in config.vips_by_pool.get(name, ()))
    return {
        "note": TRAFFIC_NOTE,
        "polls": balancer.traffic.polls,
        "vips": {name: balancer.vip_traffic(name) for name in vips},
        "pools": {name: pool_stats(balancer, name)["backends"] for name in names},
        "switches": switches_json(balancer),
    }, page


def status_view(balancer: Any, query: dict[str, str]) -> tuple[dict, Page]:
    """What the status page shows, for a page of pools: each pool with its
    backends (state, weight, slots, pins, traffic) and its VIPs (address and
    traffic), the switches, and how many pools and VIPs there are."""
    _only(query, {"limit", "cursor"})
    page = Page(query)
    config = balancer.config
    pools = []
    for name in page.take((), config.pool_order):
        traffic = pool_stats(balancer, name)
        pool = pool_json(balancer, name)
        for backend in pool["backends"]:
            backend["traffic"] = traffic["backends"][backend["ip"]]
        vips = [vip_json(balancer, vip) | {"traffic": traffic["vips"][vip]} for vip in traffic["vips"]]
        pools.append(pool | {"vips": vips})
    return {
        "pools_total": len(config.pools),
        "vips_total": len(config.vips),
        "polls": balancer.traffic.polls,
        "switches": switches_json(balancer),
        "pools": pools,
    }, page


def switches_json(balancer: Any) -> list[dict]:
    return [
        {
            "dpid": sw.dpid,
            "mode": sw.mode,
            "description": sw.description,
            "flows": len(sw.rules.installed),
            "hosts": len(sw.hosts),
            "ports_down": sorted(sw.ports_down),
            "errors": sw.errors,
            "resyncs": sw.resyncs,
            "flow_mods": sw.flow_mods,
            "kept_owners": len(sw.kept),
            "in_line": not (sw.rules.pending or sw.resyncing or sw.failure),
            "last_poll": _poll(balancer.traffic.took.get(sw.dpid)),
            "packet_ins": dict(sw.packet_ins),
        }
        for sw in balancer.switches.values()
    ]


def topology_json(balancer: Any) -> dict:
    """Switches, links (and whether each is on the flooding tree) and the
    hosts at the edge: learned ones, and backends where they were found."""
    out = balancer.fabric.to_json()
    hosts = {
        mac: {"mac": mac, "dpid": dpid, "port": port, "backends": []} for mac, (dpid, port) in balancer.host_at.items()
    }
    for ip, (mac, dpid, port) in sorted(balancer.at.items()):
        if mac is None or dpid is None:
            continue
        hosts.setdefault(mac, {"mac": mac, "dpid": dpid, "port": port, "backends": []})["backends"].append(ip)
    out["hosts"] = sorted(hosts.values(), key=lambda h: (h["dpid"], h["port"], h["mac"]))
    return out


def _poll(took: tuple[float, int] | None) -> dict | None:
    """The last stats poll of a switch: from request to counted, and how
    many counting flows it read."""
    return None if took is None else {"seconds": round(took[0], 4), "flows": took[1]}


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


def list_pools(balancer: Any, query: dict[str, str]) -> tuple[list[dict], Page]:
    _only(query, {"limit", "cursor", "backend"})
    page = Page(query)
    config = balancer.config
    if "backend" in query:
        names = page.take(config.pools_by_backend.get(parse_ipv4(query["backend"], "backend"), ()))
    else:
        names = page.take((), config.pool_order)
    return [pool_json(balancer, n) for n in names], page


def list_vips(balancer: Any, query: dict[str, str]) -> tuple[list[dict], Page]:
    _only(query, {"limit", "cursor", "pool", "ip"})
    page = Page(query)
    config = balancer.config
    filters = []
    if "pool" in query:
        filters.append(set(config.vips_by_pool.get(parse_name(query["pool"], "pool"), ())))
    if "ip" in query:
        filters.append(set(config.vips_by_ip.get(parse_ipv4(query["ip"], "ip"), {})))
    names = page.take(set.intersection(*filters)) if filters else page.take((), config.vip_order)
    return [vip_json(balancer, n) for n in names], page


def _only(query: dict[str, str], allowed: set[str]) -> None:
    for key in query:
        if key not in allowed:
            raise InvalidInput(key, f"unknown query parameter; allowed: {', '.join(sorted(allowed))}")
