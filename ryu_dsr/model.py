"""Desired state (pools, backends, VIPs) and the one place it is validated.

REST bodies, the declared-config file, ``PUT /v1/config`` and the saved state
all go through the parsers here, so every input gets the same rules and the
same messages. A change is planned first (``Config.plan_*``: parsed and
checked against indexes, costing what it touches), saved, and only then
applied, so an invalid or unsaved request changes nothing.
"""

from __future__ import annotations

import bisect
import copy
import re
from dataclasses import dataclass, field
from typing import Any

from ryu_dsr.flows.family import family_of

PROTOCOLS = {"tcp": 6, "udp": 17}
# How a backend is reached: on the segment; routed, its address written over the VIP's and a
# DSCP naming the VIP (L3DSR); or routed, the request carried whole in GRE (as Maglev's)
FORWARDING = ("l2", "dscp", "gre")
ROUTED = ("dscp", "gre")  # behind a router: reached through its route's gateway
# DSCP values that name VIP addresses (L3DSR): all but 0 (best effort) and
# EF, CS6 and CS7 (kept for voice and network control)
DSCP_VALUES = tuple(v for v in range(1, 64) if v not in (46, 48, 56))
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
    if not isinstance(value, str) or not NAME_RULE.fullmatch(value):  # fullmatch: "$" lets "web\n" through
        raise InvalidInput(
            where, "must be 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
        )
    return value


def parse_address(value: Any, where: str) -> str:
    """An IP address of a host, in its family's one canonical text
    (``flows.family``: the family says what is valid)."""
    if not isinstance(value, str):
        raise InvalidInput(where, 'must be an IPv4 or IPv6 address as a string, like "10.0.0.10" or "2001:db8::10"')
    try:
        return family_of(value).address(value)
    except ValueError as error:
        raise InvalidInput(where, str(error)) from None


def parse_mac(value: Any, where: str) -> str:
    if not isinstance(value, str) or not MAC_RULE.fullmatch(value.lower()):
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
        if not re.fullmatch(r"(0x)?[0-9a-fA-F]{1,16}", value) or int(value, 16) == 0:
            raise InvalidInput(where, "must be an integer from 1 or a string of 1-16 hex digits, not 0")
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


def check_object(body: Any, where: str, allowed: set[str], read_only: set[str] = frozenset()) -> dict:
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
    return family_of(ip).vip_mac(ip)


# --- objects -----------------------------------------------------------------


@dataclass
class Backend:
    ip: str
    weight: int = DEFAULT_WEIGHT
    mac: str | None = None
    dpid: int | None = None
    port: int | None = None
    uid: int = 0
    forwarding: str = "l2"  # 'l2' (on the switch's segment), 'dscp' or 'gre' (behind a router)

    FIELDS = {"ip", "weight", "mac", "location", "forwarding"}
    MUTABLE = {"weight", "mac", "location"}

    def to_json(self) -> dict[str, Any]:
        location = None if self.dpid is None else {"dpid": self.dpid, "port": self.port}
        return {
            "ip": self.ip,
            "weight": self.weight,
            "mac": self.mac,
            "location": location,
            "forwarding": self.forwarding,
        }


BACKEND_STATES = ("up", "draining", "unhealthy", "down", "unresolved")  # what a backend of a pool is now
HEALTH_KINDS = ("arp", "tcp", "http", "none")
HEALTH_TARGETS = ("backend", "vip")
PASSIVE_ACTIONS = ("report", "fail")


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
    passive: str = "report"  # fail: a backend the switch sees answering too few connections fails at once
    # When no backend of the pool passes, checks are ignored: all take new
    # connections (the checks, or a saturated switch, are likelier at fault
    # than every backend at once, and an empty table serves nobody).
    fail_open: bool = True
    # Partial fail-open (Envoy's panic threshold): below this share (percent) of
    # the pool's backends passing, all that can take connections do; 0: only
    # when none passes.
    panic_threshold: int = 0

    FIELDS = (
        "kind",
        "port",
        "path",
        "expect_status",
        "interval",
        "timeout",
        "rise",
        "fall",
        "target",
        "passive",
        "fail_open",
        "panic_threshold",
    )

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}


def parse_number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidInput(where, f"must be a number from {low} to {high}")
    return float(value)


def parse_health_check(body: Any, where: str, base: HealthCheck | None = None) -> HealthCheck:
    """A health check from JSON; fields not given keep ``base``'s values."""
    check_object(body, where, set(HealthCheck.FIELDS))
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
    if "passive" in body:
        check.passive = parse_choice(body["passive"], at("passive"), PASSIVE_ACTIONS)
    if "fail_open" in body:
        if not isinstance(body["fail_open"], bool):
            raise InvalidInput(at("fail_open"), "must be true or false")
        check.fail_open = body["fail_open"]
    if "panic_threshold" in body:
        check.panic_threshold = parse_int(body["panic_threshold"], at("panic_threshold"), 0, 100)
    if check.panic_threshold and not check.fail_open:
        raise InvalidInput(at("panic_threshold"), "needs fail_open (it says when the pool fails open)")
    if check.timeout > check.interval:
        raise InvalidInput(at("timeout"), f"must not exceed the interval ({check.interval} s)")
    if check.passive == "fail" and check.kind == "none":
        raise InvalidInput(at("passive"), "fail needs a check kind other than none (its checks bring the backend back)")
    if check.kind in ("tcp", "http") and check.port is None:
        raise InvalidInput(at("port"), f"is required for a {check.kind} check")
    if check.kind in ("arp", "none") and check.target == "vip":
        raise InvalidInput(at("target"), f"vip needs a tcp or http check, not {check.kind}")
    return check


@dataclass(frozen=True)
class AgentCheck:
    """A backend reports its own state and load (HAProxy's ``agent-check``):
    the controller connects to ``port`` on the backend's address, in-band
    like a health check, and reads one line: a share of the backend's weight
    (``75%``), ``drain``, ``down`` (or ``fail``, ``stopped``, ``maint``),
    ``up`` (or ``ready``), alone or together (``up 50%``). The configured
    weight stays the ceiling; a share moves only by ``step`` percent or
    more (hysteresis, so a noisy report does not move slots back and
    forth), and the shares applied move toward those reported by at most
    ``max_move`` of the pool's effective weight each ``interval`` (a
    report of 10 % does not move a third of the pool's slots at once);
    ``drain`` and ``down`` apply at once. An agent that does not answer
    changes nothing."""

    port: int
    interval: float = 2.0
    timeout: float = 1.0
    step: int = 10
    max_move: float = 0.2

    FIELDS = ("port", "interval", "timeout", "step", "max_move")

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}


def parse_agent_check(body: Any, where: str) -> AgentCheck | None:
    """An agent check from JSON; null: none."""
    if body is None:
        return None
    check_object(body, where, set(AgentCheck.FIELDS))
    if "port" not in body:
        raise InvalidInput(_where(where, "port"), "is required: the TCP port the backend's agent answers on")
    port = parse_int(body["port"], _where(where, "port"), 1, 65535)
    interval = parse_number(body.get("interval", 2.0), _where(where, "interval"), 0.1, 3600)
    timeout = parse_number(body.get("timeout", 1.0), _where(where, "timeout"), 0.01, 60)
    if timeout > interval:
        raise InvalidInput(_where(where, "timeout"), f"must not exceed the interval ({interval} s)")
    step = parse_int(body.get("step", 10), _where(where, "step"), 1, 100)
    max_move = parse_number(body.get("max_move", 0.2), _where(where, "max_move"), 0.01, 1)
    return AgentCheck(port, interval, timeout, step, max_move)


@dataclass(frozen=True)
class Adaptive:
    """Weights that follow the load the switch measures (least connections
    in spirit, over the hashed table): every ``interval`` seconds, a
    backend that holds its connections more than ``hysteresis`` longer
    than the rest of the pool (active connections over new ones a second)
    gets the share of its weight weighted least connections would give it,
    one as fast as the rest climbs back toward its configured weight (the
    ceiling; never below ``floor`` of it). All moves of one interval
    together shift at most ``max_move`` of the pool's weight, each through
    the handover."""

    policy: str = "least_connections"
    interval: float = 5.0
    max_move: float = 0.1
    hysteresis: float = 0.25
    floor: float = 0.1
    min_connections: int = 8  # fewer active connections in the pool: too little to tell, nothing moves

    FIELDS = ("policy", "interval", "max_move", "hysteresis", "floor", "min_connections")

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}


ADAPTIVE_POLICIES = ("least_connections",)


def parse_adaptive(body: Any, where: str) -> Adaptive | None:
    """An adaptive policy from JSON; null: weights as configured."""
    if body is None:
        return None
    check_object(body, where, set(Adaptive.FIELDS))
    at = lambda name: _where(where, name)  # noqa: E731
    base = Adaptive()
    return Adaptive(
        parse_choice(body.get("policy", base.policy), at("policy"), ADAPTIVE_POLICIES),
        parse_number(body.get("interval", base.interval), at("interval"), 1, 3600),
        parse_number(body.get("max_move", base.max_move), at("max_move"), 0.01, 1),
        parse_number(body.get("hysteresis", base.hysteresis), at("hysteresis"), 0, 10),
        parse_number(body.get("floor", base.floor), at("floor"), 0.01, 1),
        parse_int(body.get("min_connections", base.min_connections), at("min_connections"), 1, 1_000_000),
    )


@dataclass
class Pool:
    name: str
    description: str = ""
    backends: dict[str, Backend] = field(default_factory=dict)
    uid: int = 0
    health_check: HealthCheck = field(default_factory=HealthCheck)
    # Seconds over which a backend that starts taking connections (added, found,
    # back from failing its checks) ramps from a small share to its weight; 0: off.
    slow_start: float = 0.0
    agent_check: AgentCheck | None = None  # the backends report their own load
    adaptive: Adaptive | None = None  # weights follow the load the switch measures

    FIELDS = {"name", "description", "backends", "health_check", "slow_start", "agent_check", "adaptive"}
    MUTABLE = {"description", "health_check", "slow_start", "agent_check", "adaptive"}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "health_check": self.health_check.to_json(),
            "slow_start": self.slow_start,
            "agent_check": self.agent_check.to_json() if self.agent_check else None,
            "adaptive": self.adaptive.to_json() if self.adaptive else None,
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
    # The port the backends listen on, when not ``port``: the switch
    # rewrites requests' destination port and replies' source port (None:
    # no translation).
    backend_port: int | None = None
    # The DSCP value that names the VIP's address to its dscp backends
    # (L3DSR); given, or chosen when its pool has dscp backends.
    dscp: int | None = None

    FIELDS = {"name", "ip", "protocol", "port", "backend_port", "pool", "hash", "mac", "description", "dscp"}
    MUTABLE = {"ip", "protocol", "port", "backend_port", "pool", "hash", "mac", "description", "dscp"}

    @property
    def ip_proto(self) -> int:
        return PROTOCOLS[self.protocol]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ip": self.ip,
            "protocol": self.protocol,
            "port": self.port,
            "backend_port": self.backend_port,
            "pool": self.pool,
            "hash": self.hash,
            "mac": self.mac,
            "description": self.description,
            "dscp": self.dscp,
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
            check_object(location, loc_where, {"dpid", "port"})
            if "dpid" not in location or "port" not in location:
                raise InvalidInput(loc_where, "needs both dpid and port")
            backend.dpid = parse_dpid(location["dpid"], _where(loc_where, "dpid"))
            backend.port = parse_int(location["port"], _where(loc_where, "port"), 1, 0xFFFFFF00)


def parse_backend(body: Any, where: str = "") -> Backend:
    check_object(body, where, Backend.FIELDS, {"status", "uid"})
    if "ip" not in body:
        raise InvalidInput(_where(where, "ip"), "is required")
    backend = Backend(ip=parse_address(body["ip"], _where(where, "ip")))
    _apply_backend_fields(backend, body, where)
    if "forwarding" in body:
        backend.forwarding = parse_choice(body["forwarding"], _where(where, "forwarding"), FORWARDING)
    if backend.forwarding in ROUTED and (backend.mac is not None or backend.dpid is not None):
        raise InvalidInput(
            _where(where, "mac" if backend.mac is not None else "location"),
            f"a {backend.forwarding} backend is reached through its route's gateway: give it no MAC or location",
        )
    if backend.forwarding == "gre" and ":" in backend.ip:
        raise InvalidInput(
            _where(where, "ip"),
            "a gre backend needs an IPv4 address (the tunnel's outer header: Open vSwitch carries an IP packet"
            " in GRE over IPv4 only, not over IPv6; the VIPs it serves may be of either family)",
        )
    return backend


def parse_pool(body: Any, where: str = "") -> Pool:
    check_object(body, where, Pool.FIELDS, {"uid"})
    if "name" not in body:
        raise InvalidInput(_where(where, "name"), "is required")
    pool = Pool(name=parse_name(body["name"], _where(where, "name")))
    if "description" in body:
        pool.description = parse_text(body["description"], _where(where, "description"))
    if "health_check" in body:
        pool.health_check = parse_health_check(body["health_check"], _where(where, "health_check"))
    if "slow_start" in body:
        pool.slow_start = parse_number(body["slow_start"], _where(where, "slow_start"), 0, 3600)
    if "agent_check" in body:
        pool.agent_check = parse_agent_check(body["agent_check"], _where(where, "agent_check"))
    if "adaptive" in body:
        pool.adaptive = parse_adaptive(body["adaptive"], _where(where, "adaptive"))
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
        vip.ip = parse_address(body["ip"], _where(where, "ip"))
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
    if "dscp" in body:
        value = body["dscp"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value not in DSCP_VALUES):
            raise InvalidInput(_where(where, "dscp"), "must be a DSCP value from 1 to 63 but 46, 48 and 56, or null")
        vip.dscp = value
    if "backend_port" in body:
        port = body["backend_port"]
        vip.backend_port = None if port is None else parse_int(port, _where(where, "backend_port"), 1, 65535)
    if vip.backend_port == vip.port:
        vip.backend_port = None  # the VIP's own port: nothing to translate
    if vip.backend_port is not None and vip.port is None:
        raise InvalidInput(_where(where, "backend_port"), "needs the VIP's port (a VIP on all ports keeps each port)")


def parse_vip(body: Any, where: str = "") -> Vip:
    check_object(body, where, Vip.FIELDS, {"uid", "status"})
    for required in ("name", "ip", "protocol", "pool"):
        if required not in body:
            raise InvalidInput(_where(where, required), "is required")
    vip = Vip(name=parse_name(body["name"], _where(where, "name")), ip="", protocol="tcp", pool="")
    _apply_vip_fields(vip, body, where)
    return vip


# --- the desired state --------------------------------------------------------


@dataclass
class Change:
    """A checked change of the desired state: the new version of every pool
    and VIP it touches (None: deleted)."""

    pools: dict[str, Pool | None] = field(default_factory=dict)
    vips: dict[str, Vip | None] = field(default_factory=dict)
    next_uid: int = 1

    def __bool__(self) -> bool:
        return bool(self.pools or self.vips)

    def summary(self, config: Config) -> dict[str, dict[str, list[str]]]:
        """Names created, changed and deleted against ``config`` (not yet
        applied), for dry runs and logs."""

        def split(items: dict, existing: dict) -> dict[str, list[str]]:
            out: dict[str, list[str]] = {"create": [], "change": [], "delete": []}
            for name, value in sorted(items.items()):
                out["delete" if value is None else "change" if name in existing else "create"].append(name)
            return out

        return {"pools": split(self.pools, config.pools), "vips": split(self.vips, config.vips)}


class Config:
    """What the operator said: pools (with backends) and VIPs, with the
    indexes every check needs, so no check walks every VIP."""

    def __init__(self) -> None:
        self.pools: dict[str, Pool] = {}
        self.vips: dict[str, Vip] = {}
        self.next_uid = 1
        self.vips_by_ip: dict[str, dict[str, Vip]] = {}
        self.vips_by_pool: dict[str, set[str]] = {}
        self.pools_by_backend: dict[str, set[str]] = {}
        self.vips_by_dscp: dict[int, set[str]] = {}  # DSCP value -> the VIPs it names (one address)
        self.pool_order: list[str] = []  # names, sorted: a page of a list costs its size
        self.vip_order: list[str] = []

    # -- lookups --

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

    def address_vips(self, ip: str) -> list[Vip]:
        """The VIPs on one address, lowest uid first."""
        return sorted(self.vips_by_ip.get(ip, {}).values(), key=lambda v: v.uid)

    # -- checks of one object against the indexes --

    def _check_vip(self, vip: Vip, change: Change) -> None:
        pools = change.pools
        if vip.pool not in self.pools and not pools.get(vip.pool):
            raise InvalidInput("pool", f"no pool named {vip.pool!r}")
        if vip.pool in pools and pools[vip.pool] is None:
            raise InvalidInput("pool", f"no pool named {vip.pool!r}")
        self._check_dscp(vip, change)
        owners = self.pools_by_backend.get(vip.ip, set()) - set(pools)
        owners |= {name for name, pool in pools.items() if pool is not None and vip.ip in pool.backends}
        if owners:
            raise Conflict(f"VIP {vip.name} ip {vip.ip} is a backend of pool {sorted(owners)[0]}")
        for other in self.vips_by_ip.get(vip.ip, {}).values():
            if other.name == vip.name or other.name in change.vips:
                continue
            if other.mac != vip.mac:
                raise Conflict(f"VIP {vip.name} mac {vip.mac}: other VIPs on {vip.ip} answer ARP with {other.mac}")
            if other.protocol == vip.protocol and (other.port is None or vip.port is None or other.port == vip.port):
                what = "all ports" if vip.port is None or other.port is None else f"port {vip.port}"
                raise Conflict(f"VIP {vip.name} overlaps VIP {other.name}: {vip.ip} {vip.protocol} {what}")
            if other.protocol == vip.protocol and (vip.backend_port or other.backend_port):
                # Replies are told apart by their source port: each port may
                # be one VIP's port or one VIP's backend port, not both.
                shared = {vip.port, vip.backend_port} & {other.port, other.backend_port} - {None}
                if shared:
                    raise Conflict(
                        f"VIP {vip.name} overlaps VIP {other.name}: {vip.ip} {vip.protocol} port {min(shared)} "
                        "is used by both as port or backend_port (their replies could not be told apart)"
                    )

    def _pool_after(self, name: str, change: Change) -> Pool | None:
        return change.pools[name] if name in change.pools else self.pools.get(name)

    def _check_dscp(self, vip: Vip, change: Change) -> None:
        """L3DSR: a pool with dscp backends serves VIPs of their family
        (the switch writes the backend's address over the VIP's), and one
        DSCP value names one VIP address."""
        pool = self._pool_after(vip.pool, change)
        routed = [b for b in pool.backends.values() if b.forwarding == "dscp"] if pool else []
        for backend in routed:
            if (":" in backend.ip) != (":" in vip.ip):
                raise Conflict(
                    f"VIP {vip.name} {vip.ip} and dscp backend {backend.ip} of pool {vip.pool} are of two address "
                    "families: the switch writes the backend's address over the VIP's"
                )
        if vip.dscp is None and routed:
            vip.dscp = self._choose_dscp(vip, change)
        if vip.dscp is None:
            return
        named = [change.vips[n] if n in change.vips else self.vips[n] for n in self.vips_by_dscp.get(vip.dscp, ())]
        for other in [*named, *change.vips.values()]:
            if other is not None and other.dscp == vip.dscp and other.name != vip.name and other.ip != vip.ip:
                raise Conflict(f"VIP {vip.name} dscp {vip.dscp} already names {other.ip} (VIP {other.name})")
        for other in [*self.vips_by_ip.get(vip.ip, {}).values(), *change.vips.values()]:
            if (
                other is not None
                and other.ip == vip.ip
                and other.name != vip.name
                and other.dscp not in (None, vip.dscp)
            ):
                raise Conflict(f"VIP {vip.name} dscp {vip.dscp}: VIP {other.name} on {vip.ip} has dscp {other.dscp}")

    def _choose_dscp(self, vip: Vip, change: Change) -> int:
        """The address's value if a VIP on it has one, else the lowest free."""
        for other in [*self.vips_by_ip.get(vip.ip, {}).values(), *change.vips.values()]:
            if other is not None and other.ip == vip.ip and other.dscp is not None:
                return other.dscp
        taken = set(self.vips_by_dscp) | {v.dscp for v in change.vips.values() if v is not None}
        free = next((value for value in DSCP_VALUES if value not in taken), None)
        if free is None:
            raise Conflict(f"VIP {vip.name}: no DSCP value left ({len(DSCP_VALUES)} VIP addresses use dscp backends)")
        return free

    def _routed_vips(self, pool: Pool, change: Change) -> None:
        """A pool that reaches dscp backends: its VIPs checked, and given
        DSCP values, within ``change``."""
        if not any(b.forwarding == "dscp" for b in pool.backends.values()):
            return
        for name in sorted(self.vips_by_pool.get(pool.name, ())):
            if name in change.vips:
                continue
            vip = copy.copy(self.vips[name])
            self._check_dscp(vip, change)
            if vip.dscp != self.vips[name].dscp:
                change.vips[name] = vip

    def _check_backend_ip(self, pool_name: str, ip: str) -> None:
        if self.vips_by_ip.get(ip):
            name = min(self.vips_by_ip[ip])
            raise Conflict(f"VIP {name} ip {ip} is a backend of pool {pool_name}")

    def _take_uid(self, change: Change) -> int:
        uid = change.next_uid
        if uid >= 1 << 24:
            raise Conflict("no object ids left (2^24 used); restart from an exported config")
        change.next_uid += 1
        return uid

    def _new_change(self) -> Change:
        return Change(next_uid=self.next_uid)

    # -- planning: each returns a checked Change; self is untouched --

    def plan_pool(self, pool: Pool) -> Change:
        if pool.name in self.pools:
            raise Conflict(f"a pool named {pool.name!r} exists")
        change = self._new_change()
        pool.uid = self._take_uid(change)
        for backend in pool.backends.values():
            self._check_backend_ip(pool.name, backend.ip)
            backend.uid = self._take_uid(change)
        change.pools[pool.name] = pool
        return change

    def plan_pool_patch(self, name: str, body: Any) -> Change:
        pool = self.pool(name)
        check_object(body, "", Pool.FIELDS, {"uid"})
        for key in body:
            if key not in Pool.MUTABLE:
                raise InvalidInput(
                    key, "cannot be changed; use the backends endpoints" if key == "backends" else "cannot be changed"
                )
        new = copy.copy(pool)
        if "description" in body:
            new.description = parse_text(body["description"], "description")
        if "health_check" in body:
            new.health_check = parse_health_check(body["health_check"], "health_check", pool.health_check)
        if "slow_start" in body:
            new.slow_start = parse_number(body["slow_start"], "slow_start", 0, 3600)
        if "agent_check" in body:
            new.agent_check = parse_agent_check(body["agent_check"], "agent_check")
        if "adaptive" in body:
            new.adaptive = parse_adaptive(body["adaptive"], "adaptive")
        change = self._new_change()
        change.pools[name] = new
        return change

    def plan_pool_delete(self, name: str) -> Change:
        self.pool(name)
        users = sorted(self.vips_by_pool.get(name, ()))
        if users:
            raise Conflict(f"pool {name!r} is used by VIP(s): {', '.join(users)}")
        change = self._new_change()
        change.pools[name] = None
        return change

    def _with_backends(self, pool: Pool, backends: dict[str, Backend]) -> Change:
        new = copy.copy(pool)
        new.backends = backends
        change = self._new_change()
        change.pools[pool.name] = new
        return change

    def plan_backend(self, pool_name: str, backend: Backend) -> Change:
        pool = self.pool(pool_name)
        if backend.ip in pool.backends:
            raise Conflict(f"pool {pool_name!r} has a backend {backend.ip} already")
        self._check_backend_ip(pool_name, backend.ip)
        change = self._with_backends(pool, dict(pool.backends))
        backend.uid = self._take_uid(change)
        change.pools[pool_name].backends[backend.ip] = backend
        self._routed_vips(change.pools[pool_name], change)
        return change

    def plan_backend_patch(self, pool_name: str, ip: str, body: Any) -> Change:
        old = self.backend(pool_name, ip)
        check_object(body, "", Backend.FIELDS, {"status", "uid"})
        for key in body:
            if key not in Backend.MUTABLE:
                raise InvalidInput(key, "cannot be changed; delete and add the backend instead")
        patched = copy.copy(old)
        _apply_backend_fields(patched, body, "")
        pool = self.pools[pool_name]
        backends = dict(pool.backends)
        backends[ip] = patched
        return self._with_backends(pool, backends)

    def plan_backend_delete(self, pool_name: str, ip: str) -> Change:
        self.backend(pool_name, ip)
        pool = self.pools[pool_name]
        backends = dict(pool.backends)
        del backends[ip]
        return self._with_backends(pool, backends)

    def plan_vip(self, vip: Vip) -> Change:
        if vip.name in self.vips:
            raise Conflict(f"a VIP named {vip.name!r} exists")
        change = self._new_change()
        if not vip.mac:
            vip.mac = default_vip_mac(vip.ip)
        self._check_vip(vip, change)
        vip.uid = self._take_uid(change)
        change.vips[vip.name] = vip
        return change

    def plan_vip_patch(self, name: str, body: Any) -> Change:
        vip = self.vip(name)
        check_object(body, "", Vip.FIELDS, {"uid", "status"})
        for key in body:
            if key not in Vip.MUTABLE:
                raise InvalidInput(key, "cannot be changed")
        patched = copy.copy(vip)
        derived_mac = vip.mac == default_vip_mac(vip.ip)
        _apply_vip_fields(patched, body, "")
        if (derived_mac and "ip" in body and "mac" not in body) or not patched.mac:
            patched.mac = default_vip_mac(patched.ip)  # follow the new address
        change = self._new_change()
        self._check_vip(patched, change)
        change.vips[name] = patched
        return change

    def plan_vip_delete(self, name: str) -> Change:
        self.vip(name)
        change = self._new_change()
        change.vips[name] = None
        return change

    def plan_document(self, data: Any, replace: bool = True) -> Change:
        """The change that makes the desired state equal to a config document
        ``{"pools": [...], "vips": [...]}`` (REST shapes). With ``replace``
        False (a declared file at start) objects not named are kept. The
        whole document is checked before anything is planned; objects that
        are already as declared are not part of the change."""
        pools, vips = parse_document(data)
        for name, (_where_of, vip) in vips.items():  # a VIP's DSCP value stays unless the document moves it
            old = self.vips.get(name)
            if vip.dscp is None and old is not None and old.ip == vip.ip:
                vip.dscp = old.dscp
        if not replace:
            pools = {**{n: (f"pool {n}", _clone_pool(p)) for n, p in self.pools.items()}, **pools}
            vips = {**{n: (f"VIP {n}", copy.copy(v)) for n, v in self.vips.items()}, **vips}
        scratch = Config()
        for where, pool in pools.values():
            try:
                scratch.apply(scratch.plan_pool(pool))
            except (InvalidInput, Conflict) as error:
                raise _located(error, where) from None
        for where, vip in vips.values():
            try:
                scratch.apply(scratch.plan_vip(vip))
            except (InvalidInput, Conflict) as error:
                raise _located(error, where) from None
        change = self._new_change()
        for name, pool in scratch.pools.items():
            old = self.pools.get(name)
            if old is not None and _pool_json(old) == _pool_json(pool):
                continue
            pool.uid = old.uid if old else self._take_uid(change)
            for backend in pool.backends.values():
                previous = old.backends.get(backend.ip) if old else None
                backend.uid = previous.uid if previous else self._take_uid(change)
            change.pools[name] = pool
        for name, vip in scratch.vips.items():
            old = self.vips.get(name)
            if old is not None and old.to_json() == vip.to_json():
                continue
            vip.uid = old.uid if old else self._take_uid(change)
            change.vips[name] = vip
        for name in self.pools:
            if name not in scratch.pools:
                change.pools[name] = None
        for name in self.vips:
            if name not in scratch.vips:
                change.vips[name] = None
        return change

    # -- applying a planned change --

    def apply(self, change: Change) -> None:
        for name in change.vips:
            old = self.vips.pop(name, None)
            _reorder(self.vip_order, name, change.vips[name] is not None)
            if old is not None:
                self.vips_by_ip[old.ip].pop(name, None)
                if not self.vips_by_ip[old.ip]:
                    del self.vips_by_ip[old.ip]
                self.vips_by_pool[old.pool].discard(name)
                if old.dscp is not None:
                    self.vips_by_dscp[old.dscp].discard(name)
                    if not self.vips_by_dscp[old.dscp]:
                        del self.vips_by_dscp[old.dscp]
        for name, pool in change.pools.items():
            old = self.pools.pop(name, None)
            _reorder(self.pool_order, name, pool is not None)
            if old is not None:
                for ip in old.backends:
                    self.pools_by_backend[ip].discard(name)
                    if not self.pools_by_backend[ip]:
                        del self.pools_by_backend[ip]
            if pool is not None:
                self.pools[name] = pool
                self.vips_by_pool.setdefault(name, set())
                for ip in pool.backends:
                    self.pools_by_backend.setdefault(ip, set()).add(name)
            elif not self.vips_by_pool.get(name):
                self.vips_by_pool.pop(name, None)
        for name, vip in change.vips.items():
            if vip is not None:
                self.vips[name] = vip
                self.vips_by_ip.setdefault(vip.ip, {})[name] = vip
                self.vips_by_pool.setdefault(vip.pool, set()).add(name)
                if vip.dscp is not None:
                    self.vips_by_dscp.setdefault(vip.dscp, set()).add(name)
        self.next_uid = max(self.next_uid, change.next_uid)

    # -- export and the saved form --

    def document(self) -> dict[str, list]:
        """The desired state in the shape of ``PUT /v1/config``."""
        return {
            "pools": [_pool_json(p) for p in self.pools.values()],
            "vips": [v.to_json() for v in self.vips.values()],
        }

    @staticmethod
    def saved_pool(pool: Pool) -> dict[str, Any]:
        entry = _pool_json(pool)
        entry["uid"] = pool.uid
        for item, backend in zip(entry["backends"], pool.backends.values()):
            item["uid"] = backend.uid
        return entry

    @staticmethod
    def saved_vip(vip: Vip) -> dict[str, Any]:
        return dict(vip.to_json(), uid=vip.uid)

    @staticmethod
    def pool_from_saved(item: Any, where: str, high_uid: int = (1 << 24) - 1) -> Pool:
        """One pool in its saved form (uids included), every rule run again."""
        check_object(item, where, Pool.FIELDS | {"uid"})
        plain = {k: v for k, v in item.items() if k != "uid"}
        backends = item.get("backends", [])
        if isinstance(backends, list):
            plain["backends"] = [
                {k: v for k, v in b.items() if k != "uid"} if isinstance(b, dict) else b for b in backends
            ]
        pool = parse_pool(plain, where)
        pool.uid = parse_int(item.get("uid"), f"{where}.uid", 1, high_uid)
        for j, (b_item, backend) in enumerate(zip(backends, pool.backends.values())):
            backend.uid = parse_int(b_item.get("uid"), f"{where}.backends[{j}].uid", 1, high_uid)
        return pool

    @staticmethod
    def vip_from_saved(item: Any, where: str, high_uid: int = (1 << 24) - 1) -> Vip:
        """One VIP in its saved form, every rule run again."""
        check_object(item, where, Vip.FIELDS | {"uid"})
        vip = parse_vip({k: v for k, v in item.items() if k != "uid"}, where)
        vip.uid = parse_int(item.get("uid"), f"{where}.uid", 1, high_uid)
        if not vip.mac:
            vip.mac = default_vip_mac(vip.ip)
        return vip

    @classmethod
    def from_saved(cls, pools: list, vips: list, next_uid: Any) -> Config:
        """Rebuild saved objects, running every rule again, so a hand-edited
        store that breaks one is refused with the field named."""
        config = cls()
        change = Change(next_uid=parse_int(next_uid, "state.next_uid", 1, (1 << 24) - 1))
        uids: set[int] = set()

        def take(uid: int, where: str) -> None:
            if uid in uids:
                raise InvalidInput(where, f"uid {uid} is used twice")
            uids.add(uid)

        for i, item in enumerate(pools):
            where = f"pools[{i}]"
            pool = cls.pool_from_saved(item, where, change.next_uid - 1)
            take(pool.uid, f"{where}.uid")
            for j, backend in enumerate(pool.backends.values()):
                take(backend.uid, f"{where}.backends[{j}].uid")
            if pool.name in change.pools:
                raise InvalidInput(f"{where}.name", f"pool {pool.name!r} is listed twice")
            change.pools[pool.name] = pool
        config.apply(change)
        change = Change(next_uid=change.next_uid)
        for i, item in enumerate(vips):
            where = f"vips[{i}]"
            vip = cls.vip_from_saved(item, where, change.next_uid - 1)
            take(vip.uid, f"{where}.uid")
            if vip.name in change.vips:
                raise InvalidInput(f"{where}.name", f"VIP {vip.name!r} is listed twice")
            try:
                config._check_vip(vip, change)
            except (InvalidInput, Conflict) as error:
                raise _located(error, where) from None
            change.vips[vip.name] = vip
            config.apply(change)
            change = Change(next_uid=change.next_uid)
        return config


def _reorder(order: list[str], name: str, present: bool) -> None:
    """Keep a sorted list of names in step with one name's presence."""
    at = bisect.bisect_left(order, name)
    there = at < len(order) and order[at] == name
    if present and not there:
        order.insert(at, name)
    elif not present and there:
        del order[at]


def _pool_json(pool: Pool) -> dict[str, Any]:
    return pool.to_json()


def _clone_pool(pool: Pool) -> Pool:
    new = copy.copy(pool)
    new.backends = {ip: copy.copy(b) for ip, b in pool.backends.items()}
    return new


def _located(error: Exception, where: str) -> Exception:
    """The same error, its field placed inside the document."""
    if isinstance(error, InvalidInput):
        return InvalidInput(_where(where, error.field), error.rule)
    return Conflict(f"{where}: {error}")


def parse_document(data: Any) -> tuple[dict[str, tuple[str, Pool]], dict[str, tuple[str, Vip]]]:
    """Pools and VIPs of a config document, by name, with where each was."""
    check_object(data, "", {"pools", "vips"})
    pools = _parse_named(data, "pools", parse_pool, "pool")
    vips = _parse_named(data, "vips", parse_vip, "VIP")
    return pools, vips


def _parse_named(data: dict, where: str, parse: Any, what: str) -> dict[str, tuple[str, Any]]:
    """One list of a config document, by name, with where each item was."""
    items = data.get(where, [])
    if not isinstance(items, list):
        raise InvalidInput(where, "must be a list")
    out: dict[str, tuple[str, Any]] = {}
    for i, item in enumerate(items):
        parsed = parse(item, f"{where}[{i}]")
        if parsed.name in out:
            raise InvalidInput(f"{where}[{i}].name", f"{what} {parsed.name!r} is listed twice")
        out[parsed.name] = (f"{where}[{i}]", parsed)
    return out
