"""A packet's walk through plain rules, as Open vSwitch runs them.

A packet is a dict of header fields (Ryu's OXM names, plus ``size``). The
walk looks a packet up table by table (highest priority wins), runs the
apply-actions in order, then write-metadata and goto. It knows the Nicira
extensions the pipeline uses: register moves (low bits), resubmit (a
nested walk from a table, gotos included, whose miss does nothing),
multipath, learn, the connection tracker and the select group (the hash
in ``dp_hash``, then the bucket runs on a copy of the packet).

``Walk`` leaves to its subclasses where rules come from (``lookup``), the
hashes (``dp_hash``, ``multipath``), learning and tracking, and what a hit
leaves behind (``hit``): the unit tests' simulator keeps tables, counters
and pins; ``ryu_dsr.trace`` asks the controller's rule model and writes
down each step.
"""

from __future__ import annotations

import copy
import ipaddress
from abc import ABC, abstractmethod
from dataclasses import dataclass

from ryu_dsr.flows.rules import (
    DecTtl,
    Drop,
    Group,
    LearnPin,
    Move,
    Multipath,
    Output,
    Resubmit,
    Rule,
    SetField,
    Track,
)

IP_FIELDS = {"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa", "ipv6_src", "ipv6_dst", "ipv6_nd_target"}
MAC_FIELDS = {"eth_src", "eth_dst", "arp_sha", "arp_tha", "ipv6_nd_sll", "ipv6_nd_tll"}
# Open vSwitch checks a set-field's prerequisites against the packet as it is then
ND_OPTION = {"ipv6_nd_sll": 135, "ipv6_nd_tll": 136}
L4 = {6: ("tcp_src", "tcp_dst"), 17: ("udp_src", "udp_dst")}
ZERO_BY_DEFAULT = ("reg", "metadata", "tcp_flags", "ct_label")
MAX_DEPTH = 64  # Open vSwitch's limit of nested resubmits


def default(name: str):
    """A field a packet does not carry: registers and metadata read 0."""
    return 0 if name.startswith(ZERO_BY_DEFAULT) else None


def as_int(name: str, value) -> int:
    if name in IP_FIELDS:
        return int(ipaddress.ip_address(value))
    if name in MAC_FIELDS:
        return int(value.replace(":", ""), 16)
    return int(value)


def matches(packet: dict, match) -> bool:
    for name, want in match:
        if name == "in_port":
            if packet.get("in_port") != want:
                return False
            continue
        have = packet.get(name, default(name))
        if have is None:
            return False
        if isinstance(want, tuple):
            value, mask = (as_int(name, want[0]), as_int(name, want[1]))
            if as_int(name, have) & mask != value & mask:
                return False
        elif as_int(name, have) != as_int(name, want):
            return False
    return True


def best(rules, packet: dict) -> Rule | None:
    """The highest-priority rule of ``rules`` that matches ``packet``."""
    found = None
    for rule in rules:
        if matches(packet, rule.match) and (found is None or rule.priority > found.priority):
            found = rule
    return found


def addresses(packet: dict) -> tuple[str, str]:
    """(source, destination) of an IPv4 or IPv6 packet."""
    if "ipv6_src" in packet:
        return packet["ipv6_src"], packet["ipv6_dst"]
    return packet["ipv4_src"], packet["ipv4_dst"]


@dataclass
class Emitted:
    port: object  # an int, or 'controller', 'flood', 'normal'
    packet: dict


class Walk(ABC):
    """Runs packets through rules; subclasses say where rules come from."""

    ports: list[int]  # the switch's ports, for 'flood'

    # -- what subclasses provide --

    @abstractmethod
    def lookup(self, table: int, packet: dict) -> Rule | None:
        """The rule of ``table`` the packet meets (None: a miss)."""

    @abstractmethod
    def group(self, group_id: int) -> tuple:
        """The actions of a select group's one bucket."""

    @abstractmethod
    def dp_hash(self, packet: dict) -> int:
        """The datapath hash a select group gives the packet."""

    @abstractmethod
    def multipath(self, packet: dict, action: Multipath) -> int:
        """The link ``action`` picks for the packet."""

    @abstractmethod
    def learn(self, pin: LearnPin, packet: dict) -> None:
        """What a learn action leaves behind (a pin, or a note of it)."""

    @abstractmethod
    def track(self, track: Track, packet: dict, out: list[Emitted], depth: int) -> None:
        """The connection tracker: commit, or look up and walk on."""

    @abstractmethod
    def hit(self, table: int, rule: Rule | None, packet: dict, depth: int) -> None:
        """What a lookup's outcome leaves behind (None: a miss): counters, a step of a trace."""

    # -- the walk --

    def walk(self, table: int | None, packet: dict, out: list[Emitted], depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise RecursionError("resubmits nested too deep")
        while table is not None:
            rule = self.lookup(table, packet)
            self.hit(table, rule, packet, depth)
            if rule is None:
                break
            self.run(rule.actions, packet, out, depth)
            if rule.write_metadata is not None:
                value, mask = rule.write_metadata
                packet["metadata"] = (packet.get("metadata", 0) & ~mask) | (value & mask)
            table = rule.goto

    def run(self, actions, packet: dict, out: list[Emitted], depth: int) -> None:
        for action in actions:
            if isinstance(action, Output):
                self.output(action.port, packet, out)
            elif isinstance(action, SetField):
                wants = ND_OPTION.get(action.field)
                if wants is not None and packet.get("icmpv6_type") != wants:
                    raise ValueError(f"set_field {action.field} on a packet that is not ICMPv6 type {wants}")
                packet[action.field] = action.value
            elif isinstance(action, Move):
                value = packet[action.src]
                if isinstance(value, int):  # bits of a number; addresses move whole
                    mask = (1 << action.n_bits) - 1
                    bits = ((value >> action.src_ofs) & mask) << action.dst_ofs
                    value = (packet.get(action.dst, 0) & ~(mask << action.dst_ofs)) | bits
                packet[action.dst] = value
            elif isinstance(action, Resubmit):
                self.walk(action.table, packet, out, depth + 1)
            elif isinstance(action, Group):
                bucket = dict(packet, **packet.get("_ports", {}))  # recirculated: parsed again
                bucket.pop("_ports", None)
                bucket["dp_hash"] = packet.get("dp_hash") or self.dp_hash(bucket)
                self.run(self.group(action.group_id), bucket, out, depth + 1)
            elif isinstance(action, Multipath):
                packet[action.dst] = self.multipath(packet, action)
            elif isinstance(action, LearnPin):
                self.learn(action, packet)
            elif isinstance(action, Track):
                self.track(action, packet, out, depth)
            elif isinstance(action, DecTtl):
                if packet.get("eth_type") not in (0x0800, 0x86DD):
                    raise ValueError("dec_ttl on a packet that is not IP")
                packet["ttl"] = packet.get("ttl", 64) - 1
            elif not isinstance(action, Drop):
                raise TypeError(action)

    def output(self, port, packet: dict, out: list[Emitted]) -> None:
        view = {k: v for k, v in packet.items() if not k.startswith(("reg", "_")) and k not in ("metadata", "in_port")}
        if port == "in_port":
            out.append(Emitted(packet["in_port"], copy.deepcopy(view)))
        elif port == "flood":
            out += [Emitted(p, copy.deepcopy(view)) for p in self.ports if p != packet["in_port"]]
        elif port == packet["in_port"]:
            pass  # OpenFlow: never back out of the port it came in by, unless sent to IN_PORT
        else:
            out.append(Emitted(port, copy.deepcopy(view)))
