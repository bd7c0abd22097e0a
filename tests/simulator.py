"""An in-memory OpenFlow switch that runs the plain rules of ryu_dsr.flows.

It applies the commands the controller sends (adds, strict deletes, deletes
by cookie, group adds) and walks a packet through the tables with
``flows.walk`` (the walk the controller's trace uses too), keeping what a
switch keeps: flow counters, learned pins (the packet's registers and
5-tuple, at most ``limit`` flows per cookie), the connection tracker's
labels. Its hashes are stand-ins, deterministic and spread like Open
vSwitch's: multipath's is a CRC of the source address; the select group's
``dp_hash`` a symmetric 5-tuple hash (TCP ports in, UDP ports out, as in
Open vSwitch). A TCP packet without ``tcp_flags`` has none set (not a SYN).
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass, field

from ryu_dsr.flows.pipeline import OWNER_MASK, REG_BACKEND, REG_SLOT, Kind, Slots, Table, kind_of
from ryu_dsr.flows.rules import (
    Barrier,
    FlowAdd,
    FlowDelete,
    FlowDeleteByCookie,
    GroupAdd,
    LearnPin,
    MeterSet,
    Multipath,
    NormalFragments,
    PacketOut,
    Resubmit,
    Rule,
    SetField,
    Track,
    match_items,
)
from ryu_dsr.flows.walk import L4, Emitted, Walk, addresses, as_int, default, matches

__all__ = ["Emitted", "FakeSwitch"]


def _low_bits(value: int, bits: int):
    """A learned match on the low ``bits`` of a 32-bit register."""
    return value if bits == 32 else (value & ((1 << bits) - 1), (1 << bits) - 1)


def _index_rule(index: dict, rule: Rule) -> None:
    """Index by every field: exact ones by value, masked ones by value & mask."""
    names = tuple((name, as_int(name, value[1]) if isinstance(value, tuple) else None) for name, value in rule.match)
    match = {name: value[0] if isinstance(value, tuple) else value for name, value in rule.match}
    values = tuple(_key_value(name, match, mask) for name, mask in names)
    index.setdefault(names, {}).setdefault(values, []).append(rule)


def _key_value(name: str, packet: dict, mask: int | None = None):
    if name == "in_port":
        return packet.get("in_port")
    have = packet.get(name, default(name))
    if have is None:
        return None
    return as_int(name, have) if mask is None else as_int(name, have) & mask


def multipath_hash(packet: dict, fields: str, n_links: int) -> int:
    if fields == "nw_src":  # Open vSwitch: the whole source address, of either family
        return zlib.crc32(addresses(packet)[0].encode()) % n_links
    return datapath_hash(packet) % n_links


def datapath_hash(packet: dict) -> int:
    """A symmetric L3/L4 hash, never 0, as Open vSwitch's dp_hash: like it,
    the ports of TCP are in, those of UDP are not."""
    ports = L4.get(packet.get("ip_proto"), ("", "")) if packet.get("ip_proto") == 6 else ("", "")
    both = sorted(addresses(packet))
    l4 = sorted([packet.get(ports[0], 0), packet.get(ports[1], 0)])
    return zlib.crc32(f"{both}{packet.get('ip_proto')}{l4}".encode()) or 1


@dataclass
class FakeSwitch(Walk):
    ports: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    tables: dict[int, dict[tuple, Rule]] = field(default_factory=dict)
    packet_outs: list[PacketOut] = field(default_factory=list)
    groups: dict[int, tuple] = field(default_factory=dict)  # group id -> its one bucket's actions
    meters: dict[int, object] = field(default_factory=dict)
    learned: int = 0
    fragments: str = "as configured before"  # the fragment handling the controller set
    counts: dict = field(default_factory=dict)  # rule key -> [packets, bytes], as flow statistics
    refused: int = 0  # learns over the limit
    connections: dict = field(default_factory=dict)  # (zone, 5-tuple) -> ct_label, committed by ct
    _indexes: dict = field(default_factory=dict)
    _versions: dict = field(default_factory=dict)  # table -> changes, to keep indexes fresh

    # -- controller side --

    def _touch(self, table: int) -> None:
        self._versions[table] = self._versions.get(table, 0) + 1

    def apply(self, commands) -> None:
        for table in list(self.tables):
            self._touch(table)
        for command in commands:
            if isinstance(command, FlowAdd):
                self._touch(command.rule.table)
            if isinstance(command, FlowAdd):
                # A flow that replaces one keeps its counters unless the write says to reset them: Open
                # vSwitch forwards them (OpenFlow 1.3, without OFPFF_RESET_COUNTS), as ``ovs-ofctl add-flow``
                # over a flow shows.
                self.tables.setdefault(command.rule.table, {})[command.rule.key] = command.rule
                if command.reset:
                    self.counts.pop(command.rule.key, None)
            elif isinstance(command, FlowDelete):
                key = (command.table, command.priority, command.match)
                self.tables.get(command.table, {}).pop(key, None)
                self.counts.pop(key, None)
            elif isinstance(command, FlowDeleteByCookie):
                for table in self.tables.values():
                    for key in [
                        k for k, r in table.items() if r.cookie & command.mask == command.cookie & command.mask
                    ]:
                        del table[key]
                        self.counts.pop(key, None)
            elif isinstance(command, GroupAdd):
                self.groups[command.group_id] = command.actions
            elif isinstance(command, MeterSet):
                self.meters[command.meter_id] = command  # kept, not enforced
            elif isinstance(command, NormalFragments):
                self.fragments = "normal"
            elif isinstance(command, PacketOut):
                self.packet_outs.append(command)
            elif not isinstance(command, Barrier):
                raise TypeError(command)

    def flow_stats(self, tables) -> list[tuple]:
        """(table, priority, cookie, MAC matched, routed backend matched,
        packets, bytes) of every rule of ``tables``, as the controller reads
        a traffic poll."""
        out = []
        for table in tables:
            for rule in self.tables.get(table, {}).values():
                fields = dict(rule.match)
                mac = fields.get("eth_dst") or fields.get("eth_src")
                routed = fields.get(REG_BACKEND)
                out.append((rule.table, rule.priority, rule.cookie, mac, routed, *self.counts.get(rule.key, (0, 0))))
        return out

    def slot_counts(self, pool_uid: int) -> dict[int, int]:
        """Packets of each slot rule of a pool (slot -> packets), as the
        controller reads them to check a move."""
        owner = (int(Kind.POOL) << 56) | (pool_uid << 32)
        counts = {}
        for rule in self.tables.get(Table.SLOTS, {}).values():
            if rule.priority == Slots.SLOT and rule.cookie & OWNER_MASK == owner:
                counts[dict(rule.match)[REG_SLOT]] = self.counts.get(rule.key, (0, 0))[0]
        return counts

    def handover_counts(self) -> list[tuple]:
        """(table, priority, cookie, match, packets) of the handover rules
        (TRACKED's, a pool's MOVED), as the controller reads them to tell
        when a handover can end."""
        out = []
        for table, kind in ((Table.TRACKED, Kind.POOL), (Table.MOVED, Kind.HANDOVER)):
            for rule in self.tables.get(table, {}).values():
                if kind_of(rule.cookie) == kind:
                    fields = dict(rule.match)
                    out.append((table, rule.priority, rule.cookie, fields, self.counts.get(rule.key, (0, 0))[0]))
        return out

    def pin_packets(self, cookie: int) -> int:
        """Packets of the rules with this cookie (one backend's pins)."""
        return sum(
            self.counts.get(r.key, (0, 0))[0] for r in self.tables.get(Table.SLOTS, {}).values() if r.cookie == cookie
        )

    def flow_count(self, table: int, cookie: int) -> int:
        """Rules of ``table`` whose cookie is ``cookie``, as an aggregate
        stats reply counts them."""
        return sum(1 for rule in self.tables.get(table, {}).values() if rule.cookie == cookie)

    def installed(self) -> dict[tuple, int]:
        """key -> cookie, as a flow dump reads it."""
        return {key: rule.cookie for table in self.tables.values() for key, rule in table.items()}

    def rules(self, table: int | None = None) -> list[Rule]:
        return [r for t, rules in sorted(self.tables.items()) if table in (None, t) for r in rules.values()]

    def handover_rules(self) -> list[Rule]:
        """The rules of slots in a handover: slot rules that name backends
        for table MOVED, and (with the connection tracker) a moved slot's
        own TCP rules."""
        return [
            r
            for r in self.rules(Table.SLOTS)
            if r.priority in (Slots.HANDOVER, Slots.HANDOVER_SYN)
            or any(isinstance(a, Resubmit) and a.table == Table.MOVED for a in r.actions)
        ]

    # -- data plane --

    def lookup(self, table: int, packet: dict) -> Rule | None:
        """Highest-priority match; rules are indexed by their exact fields so
        a 4099-slot table is not scanned rule by rule."""
        best = None
        for names, by_values in self._index(table).items():
            values = tuple(_key_value(name, packet, mask) for name, mask in names)
            for rule in by_values.get(values, ()):
                if matches(packet, rule.match) and (best is None or rule.priority > best.priority):
                    best = rule
        return best

    def _index(self, table: int) -> dict:
        rules = self.tables.get(table, {})
        cached = self._indexes.get(table)
        if cached is not None and cached[0] == self._versions.get(table, 0) and cached[1] is rules:
            return cached[2]
        index: dict[tuple, dict[tuple, list[Rule]]] = {}
        for rule in rules.values():
            _index_rule(index, rule)
        self._indexes[table] = (self._versions.get(table, 0), rules, index)
        return index

    def send(self, packet: dict, in_port: int) -> list[Emitted]:
        """Walk one packet from ``in_port``; returns what leaves the switch."""
        out: list[Emitted] = []
        packet = dict(packet, in_port=in_port)
        if packet.get("ip_frag", 0) & 1 and self.fragments == "normal":
            # Open vSwitch's "normal" fragment handling: the tables read a
            # fragment's ports as 0, the first fragment's too; after a
            # recirculation the datapath reads the first fragment's again.
            ports = L4.get(packet.get("ip_proto"), ())
            packet["_ports"] = {name: packet[name] for name in ports}
            packet.update(dict.fromkeys(ports, 0))
        self.walk(0, packet, out)
        return out

    def hit(self, table: int, rule: Rule | None, packet: dict, depth: int) -> None:
        if rule is not None:
            counted = self.counts.setdefault(rule.key, [0, 0])
            counted[0] += 1
            counted[1] += packet.get("size", 100)

    def group(self, group_id: int) -> tuple:
        return self.groups[group_id]

    def dp_hash(self, packet: dict) -> int:
        return datapath_hash(packet)

    def multipath(self, packet: dict, action: Multipath) -> int:
        return multipath_hash(packet, action.fields, action.n_links)

    def track(self, track: Track, packet: dict, out: list[Emitted], depth: int) -> None:
        """Open vSwitch's ct: commit (a label) or look up, then (with a table)
        fork: a copy goes on in that table with the connection's ct_label,
        the packet itself on with this action list, untracked."""
        l4_src, l4_dst = L4[packet["ip_proto"]]
        key = (track.zone, *addresses(packet), packet["ip_proto"], packet[l4_src], packet[l4_dst])
        if track.label is not None:
            self.connections[key] = track.label
        if track.table is not None:
            self.walk(track.table, dict(packet, ct_label=self.connections.get(key, 0)), out, depth + 1)

    def learn(self, pin: LearnPin, packet: dict) -> None:
        l4_src, l4_dst = L4[pin.ip_proto]
        match = match_items(
            eth_type=pin.eth_type,
            ip_proto=pin.ip_proto,
            **{address: packet[address] for address in pin.addresses},
            **{l4_src: packet[l4_src], l4_dst: packet[l4_dst]},
            **{reg: _low_bits(packet.get(reg, 0), bits) for reg, bits in pin.regs},
        )
        table = self.tables.setdefault(pin.table, {})
        if pin.limit and sum(1 for r in table.values() if r.cookie == pin.cookie) >= pin.limit:
            self.refused += 1
            if pin.result:
                packet[pin.result] = packet.get(pin.result, 0) & ~1
            return
        if pin.result:
            packet[pin.result] = packet.get(pin.result, 0) | 1
        kept = tuple(SetField(reg, packet.get(reg, 0)) for reg in pin.keep)
        rule = Rule(
            pin.table,
            pin.priority,
            match,
            (SetField("eth_dst", packet["eth_dst"]), SetField(pin.flag_reg, 1), *kept),
        )
        object.__setattr__(rule, "cookie", pin.cookie)
        replaced = rule.key in table
        table[rule.key] = rule
        cached = self._indexes.get(pin.table)
        if replaced or cached is None or cached[1] is not table:
            self._touch(pin.table)
        else:
            _index_rule(cached[2], rule)  # keep the index fresh without rebuilding it
        self.learned += 1


def tcp(src_ip: str, dst_ip: str, sport: int, dport: int, eth_src: str, eth_dst: str) -> dict:
    return {
        "eth_src": eth_src,
        "eth_dst": eth_dst,
        "eth_type": 0x0800,
        "ipv4_src": src_ip,
        "ipv4_dst": dst_ip,
        "ip_proto": 6,
        "tcp_src": sport,
        "tcp_dst": dport,
    }


def tcp6(src_ip: str, dst_ip: str, sport: int, dport: int, eth_src: str, eth_dst: str) -> dict:
    """A TCP packet over IPv6."""
    packet = tcp("0.0.0.0", "0.0.0.0", sport, dport, eth_src, eth_dst)
    del packet["ipv4_src"], packet["ipv4_dst"]
    packet.update(eth_type=0x86DD, ipv6_src=src_ip, ipv6_dst=dst_ip)
    return packet


def as_ipv6(packet: dict, src_ip: str, dst_ip: str) -> dict:
    """``packet`` (TCP or UDP, as built above) carried over IPv6."""
    packet = {k: v for k, v in packet.items() if k not in ("ipv4_src", "ipv4_dst")}
    packet.update(eth_type=0x86DD, ipv6_src=src_ip, ipv6_dst=dst_ip)
    return packet


def solicitation(sha: str | None, src: str, target: str) -> dict:
    """An IPv6 Neighbor Solicitation for ``target`` (``sha``: its source
    link-layer option; None for none, as in duplicate address detection)."""
    return {
        "eth_src": sha or "02:00:00:00:0d:ad",
        "eth_dst": "33:33:ff:" + ":".join(f"{b:02x}" for b in ipaddress.IPv6Address(target).packed[13:]),
        "eth_type": 0x86DD,
        "ipv6_src": src,
        "ipv6_dst": "ff02::1:ff" + ipaddress.IPv6Address(target).exploded[-7:],
        "ip_proto": 58,
        "icmpv6_type": 135,
        "icmpv6_code": 0,
        "ipv6_nd_target": target,
        "ipv6_nd_sll": sha or "00:00:00:00:00:00",
        "nd_reserved": 0,
        "nd_options_type": 1 if sha else 0,
    }


def advertisement(tha: str, target: str, dst: str = "ff02::1") -> dict:
    """An IPv6 Neighbor Advertisement: ``target`` is at ``tha``."""
    return {
        "eth_src": tha,
        "eth_dst": "33:33:00:00:00:01",
        "eth_type": 0x86DD,
        "ipv6_src": target,
        "ipv6_dst": dst,
        "ip_proto": 58,
        "icmpv6_type": 136,
        "icmpv6_code": 0,
        "ipv6_nd_target": target,
        "ipv6_nd_tll": tha,
        "nd_reserved": 0x20000000,
        "nd_options_type": 2,
    }


def syn(src_ip: str, dst_ip: str, sport: int, dport: int, eth_src: str, eth_dst: str) -> dict:
    """The first packet of a TCP connection."""
    return dict(tcp(src_ip, dst_ip, sport, dport, eth_src, eth_dst), tcp_flags=0x002)


def udp(src_ip: str, dst_ip: str, sport: int, dport: int, eth_src: str, eth_dst: str) -> dict:
    packet = tcp(src_ip, dst_ip, sport, dport, eth_src, eth_dst)
    del packet["tcp_src"], packet["tcp_dst"]
    packet.update(ip_proto=17, udp_src=sport, udp_dst=dport)
    return packet


def fragment(packet: dict, later: bool) -> dict:
    """One fragment of an IP datagram: only the first carries the L4
    header (a later one's ports read as 0)."""
    if not later:
        return dict(packet, ip_frag=1)
    return packet | dict.fromkeys(L4.get(packet.get("ip_proto"), ()), 0) | {"ip_frag": 3}


def arp_request(sha: str, spa: str, tpa: str) -> dict:
    return {
        "eth_src": sha,
        "eth_dst": "ff:ff:ff:ff:ff:ff",
        "eth_type": 0x0806,
        "arp_op": 1,
        "arp_sha": sha,
        "arp_spa": spa,
        "arp_tha": "00:00:00:00:00:00",
        "arp_tpa": tpa,
    }
