"""Operator settings: defaults, types and rules in one table.

``ryu_dsr/__init__.py`` registers each entry as an option of the ``[dsr]``
section of a ryu-manager config file (``--config-file conf/ryu_dsr.conf``);
``Settings.from_mapping`` checks the values with a message per rule.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, make_dataclass
from typing import Any

from ryu_dsr.discovery import MIN_KEY_BYTES
from ryu_dsr.fabric import parse_port_roles
from ryu_dsr.flows.pipeline import MAX_SLOTS_OVS
from ryu_dsr.model import InvalidInput, parse_address, parse_choice, parse_int, parse_mac
from ryu_dsr.routes import parse_routes


@dataclass(frozen=True)
class Option:
    name: str
    kind: type
    default: Any
    help: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None


OPTIONS = (
    Option(
        "state_file",
        str,
        "/var/lib/ryu_dsr/state.db",
        "SQLite file where accepted changes are saved (a 0.1 JSON state file there is imported); empty: not saved",
    ),
    Option(
        "etcd_endpoints",
        str,
        "",
        "etcd client URLs (http://HOST:PORT, comma separated): the state is kept in etcd and shared by every "
        "controller pointed at it, one of them master of the switches; empty: one controller, state_file",
    ),
    Option("etcd_prefix", str, "/ryu_dsr", "where in etcd's key space this cluster's keys are"),
    Option(
        "etcd_ca_cert",
        str,
        "",
        "PEM file of the CA that signed etcd's server certificate (https:// endpoints); empty: the system's CAs",
    ),
    Option(
        "etcd_cert",
        str,
        "",
        "PEM file of this controller's client certificate for etcd (its --client-cert-auth; with RBAC on, "
        "its common name is the etcd user); needs etcd_key",
    ),
    Option("etcd_key", str, "", "PEM file of the private key of etcd_cert"),
    Option(
        "etcd_lease_ttl",
        int,
        5,
        "seconds a controller stays a candidate (and master) after it last reached etcd; a dead master is "
        "replaced after this",
        low=2,
        high=300,
    ),
    Option(
        "etcd_max_txn_ops",
        int,
        128,
        "operations per etcd transaction (etcd's --max-txn-ops); a change of more objects is written in steps",
        low=8,
        high=1 << 20,
    ),
    Option("node_name", str, "", "this controller's name in the cluster; empty: host name and REST port"),
    Option("declared_file", str, "", "JSON file of pools and VIPs applied at start (same shape as REST bodies)"),
    Option(
        "l2_mode",
        str,
        "learning",
        "L2 forwarding: 'learning' (rules per learned host) or 'normal' (OFPP_NORMAL)",
        ("learning", "normal"),
    ),
    Option(
        "hash_mode",
        str,
        "auto",
        "'ovs' (datapath hash + handovers pinned by learn), 'plain' (OpenFlow 1.3 masks), or 'auto' by switch",
        ("auto", "ovs", "plain"),
    ),
    Option(
        "table_size",
        int,
        4096,
        "most consistent-hash slots per pool in ovs mode, a power of two; a pool's table has 64 per backend, "
        "rounded up to a power of two",
        low=1,
        high=MAX_SLOTS_OVS,
    ),
    Option(
        "plain_slot_bits",
        int,
        10,
        "plain mode: low bits of the client address used as slot (2^bits slots)",
        low=1,
        high=16,
    ),
    Option(
        "pin_idle_timeout",
        int,
        300,
        "seconds an idle connection keeps its backend after the hash changes",
        low=1,
        high=65535,
    ),
    Option(
        "pin_fin_timeout",
        int,
        20,
        "seconds a TCP connection keeps its pin after FIN or RST; keep it above Open vSwitch's datapath flow idle "
        "time (10 s), or a client that reuses its port may find its new connection's pin gone",
        low=0,
        high=65535,
    ),
    Option(
        "handover_window",
        int,
        300,
        "seconds after a slot's backend moves during which TCP packets of the slot that do not open a connection "
        "still go to the old backend and pin their connection there (SYN goes to the new one)",
        low=0,
        high=86400,
    ),
    Option(
        "udp_handover_window",
        int,
        10,
        "seconds after a slot's backend moves during which its UDP datagrams still go to the old backend and pin "
        "their flow there (UDP cannot tell a new flow); then new flows go to the new backend",
        low=0,
        high=86400,
    ),
    Option(
        "handover_quiet",
        int,
        30,
        "seconds a moved slot's TCP window stays open once the connections it protects went quiet (no packet "
        "of an unpinned older connection, none of the old backend's pins); handover_window is the most it lasts",
        low=1,
        high=86400,
    ),
    Option(
        "handover_tracking",
        str,
        "auto",
        "how a moved slot's new TCP connections keep their backend during the handover window: conntrack (the "
        "connection tracker's label, in the datapath, at full speed; the zone needs a timeout policy), learn (a "
        "pin per connection, learned in Open vSwitch's slow path), or auto: conntrack on each switch where the "
        "controller set the zone's timeout policy over OVSDB (ovsdb_remote), learn elsewhere",
        choices=("auto", "conntrack", "learn"),
    ),
    Option(
        "conntrack_zone",
        int,
        1493,
        "the connection-tracking zone of the handover (the controller gives it a timeout policy over OVSDB)",
        low=1,
        high=65535,
    ),
    Option(
        "ovsdb_remote",
        str,
        "tcp:{address}:6640",
        "where the controller reaches each switch's OVSDB to set the handover zone's timeout policy: "
        "tcp:HOST:PORT or unix:PATH, {address} being the address the switch's OpenFlow connection comes from "
        "(the switch needs ovs-vsctl set-manager ptcp:6640:ADDRESS); empty: never (handovers use learn, "
        "unless handover_tracking = conntrack)",
    ),
    Option(
        "pin_limit",
        int,
        100000,
        "most pins (connections kept on a backend during handovers) per backend on a switch; 0: no limit",
        low=0,
        high=1 << 24,
    ),
    Option(
        "drain_timeout",
        int,
        0,
        "seconds a draining backend (weight 0) keeps its connections; 0: until they end",
        low=0,
        high=86400,
    ),
    Option(
        "packet_in_limit",
        int,
        2000,
        "frames a second a switch may send to the controller for MAC learning (a flood of new source MACs stops "
        "there; the frames are still forwarded); health answers are not counted; 0: no limit",
        low=0,
        high=1 << 20,
    ),
    Option(
        "stats_interval",
        float,
        10.0,
        "seconds between reads of the switches' traffic counters (VIPs and backends); 0: not read",
        low=0,
        high=3600,
    ),
    Option(
        "topology_file",
        str,
        "",
        "a JSON file of the links between switches (for switches that cannot pass the controller's discovery "
        'frames): {"links": [{"a": {"dpid": 1, "port": 5}, "b": {"dpid": 2, "port": 1}}]}; empty: links are found',
    ),
    Option(
        "discovery_key_file",
        str,
        "",
        "a file whose bytes (at least 16) are the key that seals the controller's link-discovery frames, the "
        "same for every controller of a cluster; empty: a key is made at the first start and kept with the state "
        "(state_file or etcd), so the controllers of a cluster share it",
    ),
    Option(
        "port_roles",
        str,
        "",
        "switch ports pinned to a role, DPID:PORT=host or DPID:PORT=link, comma separated: a host port never "
        "becomes a link whatever frames come in there, a link port never learns hosts; empty: roles are found",
    ),
    Option(
        "routes",
        str,
        "",
        "where dscp backends are (L3DSR): PREFIX via GATEWAY, comma separated, like 192.168.50.0/24 via "
        "10.0.0.254; the gateway is on the switch's segment and found by ARP (IPv6: Neighbor Solicitation)",
    ),
    Option(
        "router_ports",
        str,
        "",
        "switch ports that lead to IPv6 routers, DPID:PORT, comma separated: their Router Advertisements are "
        "let through; from every other host port they are dropped (a host cannot make itself the clients' "
        "router)",
    ),
    Option("probe_mac", str, "02:d4:00:00:00:01", "source MAC of the controller's ARP probes"),
    Option(
        "gre_port",
        str,
        "dsr-gre",
        "name of the switches' GRE port for gre backends (type=gre, options:remote_ip=flow, "
        "options:packet_type=legacy_l3; tools/dsr_switch.py --gre-port adds it); a switch without it sends them nothing",
    ),
    Option(
        "probe_ip",
        str,
        "",
        "source addresses of TCP/HTTP health probes, one per family, comma separated: unused addresses of "
        "the switch's segment (the switch answers ARP or Neighbor Solicitations for them); IPv4 checks need "
        "one, IPv6 checks use probe_mac's link-local address without one (not for dscp backends: it is not "
        "routed); empty: only ARP checks of IPv4 backends",
    ),
    Option(
        "resolve_interval", float, 1.0, "seconds between ARP probes for a backend not yet found", low=0.1, high=3600
    ),
    Option("max_hosts", int, 4096, "learned MAC addresses kept per switch", low=16, high=1 << 20),
    Option(
        "auth",
        str,
        "token",
        "'token': REST changes need Authorization: Bearer <token from token_file>; 'none': anyone who reaches "
        "the REST port may change everything (logged as a warning at every start)",
        ("token", "none"),
    ),
    Option(
        "rest_idle_timeout",
        float,
        10.0,
        "seconds a REST connection may say nothing before it is closed (idle connections cannot exhaust the server)",
        low=0.5,
        high=3600,
    ),
    Option(
        "rest_max_per_client",
        int,
        64,
        "connections one client address may hold to the REST API at once; one more is answered 503 and closed "
        "(the server has 1,024 in all); 0: no limit",
        low=0,
        high=1024,
    ),
    Option("token_file", str, "/var/lib/ryu_dsr/api-token", "bearer tokens (NAME:TOKEN per line); made at first start"),
    Option(
        "switches",
        str,
        "",
        "datapath ids (hex, comma separated) of the switches the controller takes; any other switch that connects "
        "is refused and logged; empty: every switch that reaches the OpenFlow port (restrict it here, or with "
        "OpenFlow over TLS)",
    ),
    Option(
        "on_empty_state",
        str,
        "keep",
        "a start with no saved state finds VIP rules on a switch: 'keep' them until POST /v1/state/adopt, "
        "or 'adopt' the empty state (delete them)",
        ("keep", "adopt"),
    ),
)


def parse_router_ports(text: str, where: str) -> set[tuple[int, int]]:
    """``DPID:PORT`` items, comma separated (datapath ids in hex)."""
    ports = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = re.fullmatch(r"(?:0x)?([0-9a-fA-F]{1,16}):([0-9]{1,10})", item)
        if not match or not 1 <= int(match[2]) <= 0xFFFFFF00:
            raise InvalidInput(where, f"{item!r} is not DPID:PORT (like 0000000000000001:7)")
        ports.add((int(match[1], 16), int(match[2])))
    return ports


class _SettingsMethods:
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Any:
        """Checked settings; unknown names and broken rules raise InvalidInput
        naming the option."""
        known = {option.name: option for option in OPTIONS}
        for name in values:
            if name not in known:
                raise InvalidInput(f"dsr.{name}", "unknown option")
        checked = {}
        for name, value in values.items():
            option = known[name]
            where = f"dsr.{name}"
            if option.kind is int:
                value = parse_int(value, where, int(option.low), int(option.high))
            elif option.kind is float:
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float))
                    or not option.low <= value <= option.high
                ):
                    raise InvalidInput(where, f"must be a number from {option.low} to {option.high}")
                value = float(value)
            elif not isinstance(value, str):
                raise InvalidInput(where, "must be a string")
            if option.choices:
                value = parse_choice(value, where, option.choices)
            if name == "table_size" and value & (value - 1):
                raise InvalidInput(where, "must be a power of two (a slot is picked by the low bits of a hash)")
            if name == "ovsdb_remote" and value and not re.fullmatch(r"tcp:[^:\s]+:\d{1,5}|unix:/\S+", value):
                raise InvalidInput(
                    where, "must be tcp:HOST:PORT or unix:PATH ({address}: the switch's address), or empty"
                )
            if name == "probe_mac":
                value = parse_mac(value, where)
            if name == "probe_ip" and value:
                addresses = [parse_address(part.strip(), where) for part in value.split(",") if part.strip()]
                if len(addresses) > 2 or len({":" in a for a in addresses}) != len(addresses):
                    raise InvalidInput(where, "must be one address, or one IPv4 and one IPv6 address, comma separated")
                value = ",".join(addresses)
            if name == "etcd_endpoints":
                value = ",".join(parse_endpoints(value, where))
            if name == "etcd_prefix" and not re.fullmatch(r"/[A-Za-z0-9_./-]*[A-Za-z0-9_.-]", value):
                raise InvalidInput(where, "must be a key path like /ryu_dsr (letters, digits, _ . - /)")
            if name == "routes":
                value = ", ".join(f"{net} via {gateway}" for net, gateway in parse_routes(value, where))
            if name == "router_ports":
                value = ",".join(f"{dpid:016x}:{port}" for dpid, port in sorted(parse_router_ports(value, where)))
            if name == "port_roles":
                pinned = parse_port_roles(value, where)
                value = ",".join(f"{dpid:016x}:{port}={role}" for (dpid, port), role in sorted(pinned.items()))
            if name == "discovery_key_file" and value:
                check_key_file(value, where)
            if name == "switches":
                value = ",".join(f"{dpid:016x}" for dpid in sorted(parse_dpids(value, where)))
            if name in ("etcd_ca_cert", "etcd_cert", "etcd_key") and value and not os.access(value, os.R_OK):
                raise InvalidInput(where, f"cannot read {value!r}")
            checked[name] = value
        _check_etcd_tls(checked)
        return cls(**checked)

    @classmethod
    def from_files(cls, paths: list[str]) -> Any:
        """Checked settings from the ``[dsr]`` sections of ryu-manager's
        config files (later files win), every value read as text and held
        to its option's rule: a misspelled option or a value of the wrong
        kind stops the start with one line naming it."""
        values: dict[str, Any] = {}
        known = {option.name: option for option in OPTIONS}
        for path in paths:
            # no default section: [DEFAULT] (ryu-manager's own options) stays apart from [dsr]
            parser = configparser.ConfigParser(interpolation=None, strict=False, default_section="\x00")
            try:
                with open(path) as handle:
                    parser.read_file(handle)
            except (OSError, configparser.Error) as error:
                raise InvalidInput(str(path), f"cannot read the config file: {error}".replace("\n", " ")) from None
            if not parser.has_section("dsr"):
                continue
            for name in parser.options("dsr"):
                option = known.get(name)
                if option is None:
                    raise InvalidInput(f"dsr.{name}", f"unknown option (in {path})")
                values[name] = _from_text(option, parser.get("dsr", name, raw=True).strip(), f"dsr.{name}")
        return cls.from_mapping(values)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_key_file(path: str, where: str) -> None:
    """A key file is readable and holds at least ``MIN_KEY_BYTES`` bytes."""
    try:
        with open(path, "rb") as handle:
            key = handle.read().strip()
    except OSError as error:
        raise InvalidInput(where, f"cannot read {path!r}: {error.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise InvalidInput(where, f"{path!r} must hold at least {MIN_KEY_BYTES} bytes (it holds {len(key)})")


def parse_dpids(text: str, where: str) -> set[int]:
    """Datapath ids written as Open vSwitch shows them: hex, with or
    without 0x or colons ("0000000000000001", "0x1", "00:00:00:00:00:00:00:01")."""
    dpids = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        digits = item.lower().removeprefix("0x").replace(":", "")
        if not re.fullmatch(r"[0-9a-f]{1,16}", digits):
            raise InvalidInput(where, f"{item!r} is not a datapath id (up to 16 hex digits, like 0000000000000001)")
        dpids.add(int(digits, 16))
    return dpids


def _check_etcd_tls(values: Mapping[str, Any]) -> None:
    """Certificates for etcd come as a pair, and only with https:// endpoints."""
    if bool(values.get("etcd_cert")) != bool(values.get("etcd_key")):
        where = "dsr.etcd_key" if values.get("etcd_cert") else "dsr.etcd_cert"
        raise InvalidInput(where, "etcd_cert and etcd_key go together: set both or neither")
    given = [name for name in ("etcd_ca_cert", "etcd_cert") if values.get(name)]
    plain = [url for url in values.get("etcd_endpoints", "").split(",") if url and not url.startswith("https://")]
    if given and (plain or not values.get("etcd_endpoints")):
        raise InvalidInput(
            f"dsr.{given[0]}", "needs every etcd_endpoints URL to be https:// (certificates are for TLS)"
        )


def parse_endpoints(text: str, where: str) -> list[str]:
    """etcd client URLs: http:// or https://, a host and a port."""
    endpoints = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}", item):
            raise InvalidInput(where, f"{item!r} is not an etcd client URL (like http://127.0.0.1:2379)")
        endpoints.append(item)
    return endpoints


def _from_text(option: Option, text: str, where: str) -> Any:
    if option.kind is int:
        if not re.fullmatch(r"-?[0-9]+", text):
            raise InvalidInput(where, f"must be an integer from {int(option.low)} to {int(option.high)}, not {text!r}")
        return int(text)
    if option.kind is float:
        try:
            return float(text)
        except ValueError:
            raise InvalidInput(where, f"must be a number from {option.low} to {option.high}, not {text!r}") from None
    return text


# One frozen dataclass field per option, its default from the table above.
Settings = make_dataclass(
    "Settings",
    [(option.name, option.kind, option.default) for option in OPTIONS],
    bases=(_SettingsMethods,),
    frozen=True,
)
