"""Desired state (pools, backends, VIPs) and the one place it is validated.

REST bodies, the declared-config file and the saved state file all go through
the parsers here, so every input gets the same rules and the same messages.
Every change is made on a copy and checked whole before it is accepted, so an
invalid request changes nothing.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

PROTOCOLS = {"tcp": 6, "udp": 17}
HASH_FIELDS = ("source_ip", "5tuple")
MAX_WEIGHT = 1000
DEFAULT_WEIGHT = 100
NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAC_RULE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class InvalidInput(ValueError):
    """A field breaks a rule: HTTP 400."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class Conflict(Exception):
    """The change contradicts existing state: HTTP 409."""


class NotFound(Exception):
    """No such object: HTTP 404."""


# --- field parsers -----------------------------------------------------------


def _where(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def parse_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME_RULE.match(value):
        raise InvalidInput(
            where, "must be 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
        )
    return value


def parse_ipv4(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(where, 'must be an IPv4 address as a string, like "10.0.0.10"')
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidInput(where, f"{value!r} is not an IPv4 address") from None
    if address.is_multicast or address.is_unspecified or address.is_loopback or str(address) == "255.255.255.255":
        raise InvalidInput(where, f"{value} is not a unicast host address")
    return str(address)


def parse_mac(value: Any, where: str) -> str:
    if not isinstance(value, str) or not MAC_RULE.match(value.lower()):
        raise InvalidInput(where, 'must be a MAC address like "02:00:00:00:00:01"')
    mac = value.lower()
    if int(mac[:2], 16) & 1:
        raise InvalidInput(where, f"{mac} is a multicast MAC address")
    if mac == "00:00:00:00:00:00":
        raise InvalidInput(where, "must not be all zeros")
    return mac


def parse_int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(where, f"must be an integer from {low} to {high}")
    return value


def parse_dpid(value: Any, where: str) -> int:
    if isinstance(value, str):
        if not re.fullmatch(r"(0x)?[0-9a-fA-F]{1,16}", value):
            raise InvalidInput(where, "must be an integer or a string of 1-16 hex digits")
        return int(value, 16)
    return parse_int(value, where, 1, (1 << 64) - 1)


def parse_choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidInput(where, f"must be one of: {', '.join(choices)}")
    return value


def parse_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > 200:
        raise InvalidInput(where, "must be a string of at most 200 characters")
    return value


def _check_object(body: Any, where: str, allowed: set[str], read_only: set[str] = frozenset()) -> dict:
    if not isinstance(body, dict):
        raise InvalidInput(where or "body", "must be a JSON object")
    for key in body:
        if key in read_only:
            raise InvalidInput(_where(where, key), "is read-only")
        if key not in allowed:
            raise InvalidInput(_where(where, key), f"unknown field; allowed: {', '.join(sorted(allowed))}")
    return body


def default_vip_mac(ip: str) -> str:
    """A locally administered unicast MAC derived from the VIP address."""
    return "02:d5:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


# --- objects -----------------------------------------------------------------


@dataclass
class Backend:
    ip: str
    weight: int = DEFAULT_WEIGHT
    mac: str | None = None
    dpid: int | None = None
    port: int | None = None
    uid: int = 0

    FIELDS = {"ip", "weight", "mac", "location"}
    MUTABLE = {"weight", "mac", "location"}

    def to_json(self) -> dict[str, Any]:
        location = None if self.dpid is None else {"dpid": self.dpid, "port": self.port}
        return {"ip": self.ip, "weight": self.weight, "mac": self.mac, "location": location}


HEALTH_KINDS = ("arp", "tcp", "http", "none")
HEALTH_TARGETS = ("backend", "vip")


@dataclass
class HealthCheck:
    """How a pool's backends are checked, from the switch (in-band).

    The defaults take a dead backend out within about a second: a probe
    every 0.3 s, a 0.25 s timeout, out after 2 failures, back after 2
    successes. ``target: vip`` sends TCP and HTTP probes to the VIP's address
    with the backend's MAC, proving the backend really serves the VIP.
    """

    kind: str = "arp"
    port: int | None = None
    path: str = "/"
    expect_status: int = 200
    interval: float = 0.3
    timeout: float = 0.25
    rise: int = 2
    fall: int = 2
    target: str = "backend"

    FIELDS = ("kind", "port", "path", "expect_status", "interval", "timeout", "rise", "fall", "target")

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}


def parse_number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidInput(where, f"must be a number from {low} to {high}")
    return float(value)


def parse_health_check(body: Any, where: str, base: HealthCheck | None = None) -> HealthCheck:
    """A health check from JSON; fields not given keep ``base``'s values."""
    _check_object(body, where, set(HealthCheck.FIELDS))
    check = copy.copy(base) if base is not None else HealthCheck()
    at = lambda name: _where(where, name)  # noqa: E731
    if "kind" in body:
        check.kind = parse_choice(body["kind"], at("kind"), HEALTH_KINDS)
    if "port" in body:
        check.port = None if body["port"] is None else parse_int(body["port"], at("port"), 1, 65535)
    if "path" in body:
        path = body["path"]
        if not isinstance(path, str) or not path.startswith("/") or len(path) > 200 or any(c in path for c in " \r\n"):
            raise InvalidInput(
                at("path"), "must start with '/' and have no spaces or line breaks (at most 200 characters)"
            )
        check.path = path
    if "expect_status" in body:
        check.expect_status = parse_int(body["expect_status"], at("expect_status"), 100, 599)
    if "interval" in body:
        check.interval = parse_number(body["interval"], at("interval"), 0.05, 3600)
    if "timeout" in body:
        check.timeout = parse_number(body["timeout"], at("timeout"), 0.01, 60)
    if "rise" in body:
        check.rise = parse_int(body["rise"], at("rise"), 1, 100)
    if "fall" in body:
        check.fall = parse_int(body["fall"], at("fall"), 1, 100)
    if "target" in body:
        check.target = parse_choice(body["target"], at("target"), HEALTH_TARGETS)
    if check.timeout > check.interval:
        raise InvalidInput(at("timeout"), f"must not exceed the interval ({check.interval} s)")
    if check.kind in ("tcp", "http") and check.port is None:
        raise InvalidInput(at("port"), f"is required for a {check.kind} check")
    if check.kind in ("arp", "none") and check.target == "vip":
        raise InvalidInput(at("target"), f"vip needs a tcp or http check, not {check.kind}")
    return check


@dataclass
class Pool:
    name: str
    description: str = ""
    backends: dict[str, Backend] = field(default_factory=dict)
    uid: int = 0
    health_check: HealthCheck = field(default_factory=HealthCheck)
    # Slot tables last programmed, by table size (backend ip per slot):
    # runtime data, persisted so a restart reproduces them and a change moves
    # only the slots that must move.
    slot_tables: dict[int, list[str | None]] = field(default_factory=dict)

    FIELDS = {"name", "description", "backends", "health_check"}
    MUTABLE = {"description", "health_check"}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "health_check": self.health_check.to_json(),
            "backends": [b.to_json() for b in self.backends.values()],
        }


@dataclass
class Vip:
    name: str
    ip: str
    protocol: str
    pool: str
    port: int | None = None  # None: all ports
    hash: str = "source_ip"
    mac: str = ""
    description: str = ""
    uid: int = 0

    FIELDS = {"name", "ip", "protocol", "port", "pool", "hash", "mac", "description"}
    MUTABLE = {"ip", "protocol", "port", "pool", "hash", "mac", "description"}

    @property
    def ip_proto(self) -> int:
        return PROTOCOLS[self.protocol]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ip": self.ip,
            "protocol": self.protocol,
            "port": self.port,
            "pool": self.pool,
            "hash": self.hash,
            "mac": self.mac,
            "description": self.description,
        }


def _apply_backend_fields(backend: Backend, body: dict, where: str) -> None:
    if "weight" in body:
        backend.weight = parse_int(body["weight"], _where(where, "weight"), 0, MAX_WEIGHT)
    if "mac" in body:
        backend.mac = None if body["mac"] is None else parse_mac(body["mac"], _where(where, "mac"))
    if "location" in body:
        location = body["location"]
        if location is None:
            backend.dpid = backend.port = None
        else:
            loc_where = _where(where, "location")
            _check_object(location, loc_where, {"dpid", "port"})
            if "dpid" not in location or "port" not in location:
                raise InvalidInput(loc_where, "needs both dpid and port")
            backend.dpid = parse_dpid(location["dpid"], _where(loc_where, "dpid"))
            backend.port = parse_int(location["port"], _where(loc_where, "port"), 1, 0xFFFFFF00)


def parse_backend(body: Any, where: str = "") -> Backend:
    _check_object(body, where, Backend.FIELDS, {"status", "uid"})
    if "ip" not in body:
        raise InvalidInput(_where(where, "ip"), "is required")
    backend = Backend(ip=parse_ipv4(body["ip"], _where(where, "ip")))
    _apply_backend_fields(backend, body, where)
    return backend


def parse_pool(body: Any, where: str = "") -> Pool:
    _check_object(body, where, Pool.FIELDS, {"uid"})
    if "name" not in body:
        raise InvalidInput(_where(where, "name"), "is required")
    pool = Pool(name=parse_name(body["name"], _where(where, "name")))
    if "description" in body:
        pool.description = parse_text(body["description"], _where(where, "description"))
    if "health_check" in body:
        pool.health_check = parse_health_check(body["health_check"], _where(where, "health_check"))
    backends = body.get("backends", [])
    if not isinstance(backends, list):
        raise InvalidInput(_where(where, "backends"), "must be a list")
    for i, item in enumerate(backends):
        backend = parse_backend(item, f"{_where(where, 'backends')}[{i}]")
        if backend.ip in pool.backends:
            raise InvalidInput(f"{_where(where, 'backends')}[{i}].ip", f"{backend.ip} is listed twice")
        pool.backends[backend.ip] = backend
    return pool


def _apply_vip_fields(vip: Vip, body: dict, where: str) -> None:
    if "ip" in body:
        vip.ip = parse_ipv4(body["ip"], _where(where, "ip"))
    if "protocol" in body:
        vip.protocol = parse_choice(body["protocol"], _where(where, "protocol"), tuple(PROTOCOLS))
    if "port" in body:
        vip.port = None if body["port"] is None else parse_int(body["port"], _where(where, "port"), 1, 65535)
    if "pool" in body:
        vip.pool = parse_name(body["pool"], _where(where, "pool"))
    if "hash" in body:
        vip.hash = parse_choice(body["hash"], _where(where, "hash"), HASH_FIELDS)
    if "mac" in body:
        vip.mac = "" if body["mac"] is None else parse_mac(body["mac"], _where(where, "mac"))
    if "description" in body:
        vip.description = parse_text(body["description"], _where(where, "description"))


def parse_vip(body: Any, where: str = "") -> Vip:
    _check_object(body, where, Vip.FIELDS, {"uid", "status"})
    for required in ("name", "ip", "protocol", "pool"):
        if required not in body:
            raise InvalidInput(_where(where, required), "is required")
    vip = Vip(name=parse_name(body["name"], _where(where, "name")), ip="", protocol="tcp", pool="")
    _apply_vip_fields(vip, body, where)
    return vip


# --- the whole state -----------------------------------------------------------


@dataclass
class State:
    pools: dict[str, Pool] = field(default_factory=dict)
    vips: dict[str, Vip] = field(default_factory=dict)
    next_uid: int = 1
    # Where ARP last found each backend (ip -> {"mac", "dpid", "port"}):
    # runtime data, saved so a restarted controller programs the same slots
    # at once instead of dropping traffic until its probes are answered.
    found: dict[str, dict] = field(default_factory=dict)

    def copy(self) -> State:
        return copy.deepcopy(self)

    def take_uid(self) -> int:
        uid = self.next_uid
        self.next_uid += 1
        return uid

    # -- invariants over the whole state, checked after every change --

    def check(self) -> None:
        backend_ips = {}
        for pool in self.pools.values():
            for ip in pool.backends:
                backend_ips.setdefault(ip, pool.name)
        vip_macs: dict[str, str] = {}
        seen: dict[tuple, str] = {}
        for vip in self.vips.values():
            if vip.pool not in self.pools:
                raise InvalidInput("pool", f"no pool named {vip.pool!r}")
            if vip.ip in backend_ips:
                raise Conflict(f"VIP {vip.name} ip {vip.ip} is a backend of pool {backend_ips[vip.ip]}")
            other_mac = vip_macs.setdefault(vip.ip, vip.mac)
            if other_mac != vip.mac:
                raise Conflict(f"VIP {vip.name} mac {vip.mac}: other VIPs on {vip.ip} answer ARP with {other_mac}")
            for (ip, proto, port), name in seen.items():
                if ip == vip.ip and proto == vip.protocol and (port is None or vip.port is None or port == vip.port):
                    what = "all ports" if vip.port is None or port is None else f"port {vip.port}"
                    raise Conflict(f"VIP {vip.name} overlaps VIP {name}: {vip.ip} {vip.protocol} {what}")
            seen[(vip.ip, vip.protocol, vip.port)] = vip.name

    # -- operations (each returns a new, checked state; self is untouched) --

    def pool(self, name: str) -> Pool:
        if name not in self.pools:
            raise NotFound(f"no pool named {name!r}")
        return self.pools[name]

    def vip(self, name: str) -> Vip:
        if name not in self.vips:
            raise NotFound(f"no VIP named {name!r}")
        return self.vips[name]

    def backend(self, pool: str, ip: str) -> Backend:
        backends = self.pool(pool).backends
        if ip not in backends:
            raise NotFound(f"pool {pool!r} has no backend {ip}")
        return backends[ip]

    def with_pool(self, pool: Pool, replace: bool = False) -> State:
        if pool.name in self.pools and not replace:
            raise Conflict(f"a pool named {pool.name!r} exists")
        new = self.copy()
        old = new.pools.get(pool.name)
        pool.uid = old.uid if old else new.take_uid()
        if old:
            pool.slot_tables = old.slot_tables
        for backend in pool.backends.values():
            previous = old.backends.get(backend.ip) if old else None
            backend.uid = previous.uid if previous else new.take_uid()
        new.pools[pool.name] = pool
        new.check()
        return new

    def with_pool_patch(self, name: str, body: Any) -> State:
        pool = self.pool(name)
        _check_object(body, "", Pool.FIELDS, {"uid"})
        for key in body:
            if key not in Pool.MUTABLE:
                raise InvalidInput(
                    key, "cannot be changed; use the backends endpoints" if key == "backends" else "cannot be changed"
                )
        new = self.copy()
        if "description" in body:
            new.pools[pool.name].description = parse_text(body["description"], "description")
        if "health_check" in body:
            new.pools[pool.name].health_check = parse_health_check(
                body["health_check"], "health_check", pool.health_check
            )
        new.check()
        return new

    def without_pool(self, name: str) -> State:
        self.pool(name)
        users = sorted(v.name for v in self.vips.values() if v.pool == name)
        if users:
            raise Conflict(f"pool {name!r} is used by VIP(s): {', '.join(users)}")
        new = self.copy()
        del new.pools[name]
        return new

    def with_backend(self, pool_name: str, backend: Backend) -> State:
        pool = self.pool(pool_name)
        if backend.ip in pool.backends:
            raise Conflict(f"pool {pool_name!r} has a backend {backend.ip} already")
        new = self.copy()
        backend.uid = new.take_uid()
        new.pools[pool_name].backends[backend.ip] = backend
        new.check()
        return new

    def with_backend_patch(self, pool_name: str, ip: str, body: Any) -> State:
        self.backend(pool_name, ip)
        _check_object(body, "", Backend.FIELDS, {"status", "uid"})
        for key in body:
            if key not in Backend.MUTABLE:
                raise InvalidInput(key, "cannot be changed; delete and add the backend instead")
        new = self.copy()
        _apply_backend_fields(new.pools[pool_name].backends[ip], body, "")
        new.check()
        return new

    def without_backend(self, pool_name: str, ip: str) -> State:
        self.backend(pool_name, ip)
        new = self.copy()
        del new.pools[pool_name].backends[ip]
        return new

    def with_vip(self, vip: Vip, replace: bool = False) -> State:
        if vip.name in self.vips and not replace:
            raise Conflict(f"a VIP named {vip.name!r} exists")
        if vip.pool not in self.pools:
            raise InvalidInput("pool", f"no pool named {vip.pool!r}")
        new = self.copy()
        old = new.vips.get(vip.name)
        vip.uid = old.uid if old else new.take_uid()
        if not vip.mac:
            vip.mac = default_vip_mac(vip.ip)
        new.vips[vip.name] = vip
        new.check()
        return new

    def with_vip_patch(self, name: str, body: Any) -> State:
        vip = self.vip(name)
        _check_object(body, "", Vip.FIELDS, {"uid", "status"})
        for key in body:
            if key not in Vip.MUTABLE:
                raise InvalidInput(key, "cannot be changed")
        patched = copy.deepcopy(vip)
        derived_mac = vip.mac == default_vip_mac(vip.ip)
        _apply_vip_fields(patched, body, "")
        if derived_mac and "ip" in body and "mac" not in body:
            patched.mac = ""  # follow the new address
        return self.with_vip(patched, replace=True)

    def without_vip(self, name: str) -> State:
        self.vip(name)
        new = self.copy()
        del new.vips[name]
        return new

    # -- serialisation of the saved state --

    def to_saved(self) -> dict[str, Any]:
        pools = []
        for pool in self.pools.values():
            entry = pool.to_json()
            entry["uid"] = pool.uid
            for item, backend in zip(entry["backends"], pool.backends.values()):
                item["uid"] = backend.uid
            if pool.slot_tables:
                entry["slot_tables"] = {str(size): table for size, table in pool.slot_tables.items()}
            pools.append(entry)
        vips = [dict(v.to_json(), uid=v.uid) for v in self.vips.values()]
        return {"version": 1, "next_uid": self.next_uid, "pools": pools, "vips": vips, "found": self.found}

    @classmethod
    def from_saved(cls, data: Any) -> State:
        """Rebuild a saved state; runs every rule again, so a hand-edited file
        that breaks one is refused with the field named."""
        _check_object(data, "state", {"version", "next_uid", "pools", "vips", "found"})
        if data.get("version") != 1:
            raise InvalidInput("state.version", "must be 1")
        state = cls(next_uid=parse_int(data.get("next_uid", 1), "state.next_uid", 1, (1 << 24) - 1))
        for i, item in enumerate(data.get("pools", [])):
            where = f"pools[{i}]"
            _check_object(item, where, Pool.FIELDS | {"uid", "slot_tables"})
            plain = {k: v for k, v in item.items() if k not in ("uid", "slot_tables")}
            plain["backends"] = [{k: v for k, v in b.items() if k != "uid"} for b in item.get("backends", [])]
            pool = parse_pool(plain, where)
            pool.uid = parse_int(item.get("uid"), f"{where}.uid", 1, state.next_uid - 1)
            for j, (b_item, backend) in enumerate(zip(item.get("backends", []), pool.backends.values())):
                backend.uid = parse_int(b_item.get("uid"), f"{where}.backends[{j}].uid", 1, state.next_uid - 1)
            tables = item.get("slot_tables", {})
            if not isinstance(tables, dict):
                raise InvalidInput(f"{where}.slot_tables", "must be an object of size: table")
            for size, table in tables.items():
                ok = size.isdigit() and isinstance(table, list) and len(table) == int(size)
                if not ok or not all(x is None or isinstance(x, str) for x in table):
                    raise InvalidInput(
                        f"{where}.slot_tables.{size}", "must be a list of backend IPs or nulls, as long as its size"
                    )
                pool.slot_tables[int(size)] = table
            if pool.name in state.pools:
                raise InvalidInput(f"{where}.name", f"pool {pool.name!r} is listed twice")
            state.pools[pool.name] = pool
        for i, item in enumerate(data.get("vips", [])):
            where = f"vips[{i}]"
            _check_object(item, where, Vip.FIELDS | {"uid"})
            vip = parse_vip({k: v for k, v in item.items() if k != "uid"}, where)
            vip.uid = parse_int(item.get("uid"), f"{where}.uid", 1, state.next_uid - 1)
            if not vip.mac:
                vip.mac = default_vip_mac(vip.ip)
            if vip.name in state.vips:
                raise InvalidInput(f"{where}.name", f"VIP {vip.name!r} is listed twice")
            state.vips[vip.name] = vip
        found = data.get("found", {})
        if not isinstance(found, dict):
            raise InvalidInput("state.found", "must be an object of ip: location")
        for ip, where in found.items():
            at = f"state.found.{ip}"
            _check_object(where, at, {"mac", "dpid", "port"})
            state.found[parse_ipv4(ip, at)] = {
                "mac": parse_mac(where.get("mac"), f"{at}.mac"),
                "dpid": None if where.get("dpid") is None else parse_dpid(where["dpid"], f"{at}.dpid"),
                "port": None if where.get("port") is None else parse_int(where["port"], f"{at}.port", 1, 0xFFFFFF00),
            }
        uids = [p.uid for p in state.pools.values()] + [v.uid for v in state.vips.values()]
        uids += [b.uid for p in state.pools.values() for b in p.backends.values()]
        if len(set(uids)) != len(uids):
            raise InvalidInput("state", "uids must be unique")
        state.check()
        return state


def apply_declared(state: State, data: Any) -> State:
    """Upsert the pools and VIPs of a declared-config document (the same
    shape as POST bodies) into ``state``; all or nothing."""
    _check_object(data, "", {"pools", "vips"})
    pools = data.get("pools", [])
    vips = data.get("vips", [])
    if not isinstance(pools, list):
        raise InvalidInput("pools", "must be a list")
    if not isinstance(vips, list):
        raise InvalidInput("vips", "must be a list")
    new = state
    for i, item in enumerate(pools):
        new = new.with_pool(parse_pool(item, f"pools[{i}]"), replace=True)
    for i, item in enumerate(vips):
        vip = parse_vip(item, f"vips[{i}]")
        if vip.pool not in new.pools:
            raise InvalidInput(f"vips[{i}].pool", f"no pool named {vip.pool!r}")
        new = new.with_vip(vip, replace=True)
    return new
