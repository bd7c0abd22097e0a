"""Where a connection goes and why, in the balancer's words.

A trace walks one packet (a client's, to a VIP) through the rules the
controller computes for each switch it crosses (``flows.walk`` over
``RuleSource.rules_of``), asking only for the owners the packet can meet:
the base rules, its addresses' VIPs and guards, the slot its hash picks,
the hosts of its MACs. The select group's hash and multipath's are
Open vSwitch's own (``flows.ovs_hash``), so the slot is the one the switch
picks. Each rule met is said in words, the slot's backend is explained from
the pool (weights, health, drains, fail-open, handovers), and where the
packet leaves a switch for another one the walk goes on there.

Learned pins and the connection tracker's entries live on the switch, not
in the controller: a trace says where they would send and what it assumed.
``ofproto_trace`` gives, per switch, the flow to put to Open vSwitch's own
``ofproto/trace`` (``dp_hash`` included, so it needs no recirculation);
``dsrctl trace --check`` does that and reports a difference as a fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ryu_dsr.flows.compute import hash_group
from ryu_dsr.flows.family import family_of
from ryu_dsr.flows.ovs_hash import source_hash, symmetric_l4
from ryu_dsr.flows.pipeline import (
    BASE_OWNER,
    CONTRACT,
    HASH_GROUP,
    REG_LEARNED,
    REG_POOL,
    REG_SLOT,
    Kind,
    Moved,
    Owner,
    Slots,
    Table,
    kind_of,
    slot_owner,
    uid_of,
)
from ryu_dsr.flows.rules import LearnPin, Multipath, Output, Rule, Track
from ryu_dsr.flows.walk import Emitted, Walk, addresses, best
from ryu_dsr.model import InvalidInput, Vip, parse_address, parse_dpid, parse_mac

MAX_HOPS = 16  # switches a trace follows a packet through
TCP_SYN, TCP_ACK = 0x002, 0x010
CLIENT_MAC = "02:00:00:00:00:01"  # when the caller names none: an unknown host

# What a rule of each band does, in the balancer's words.
SAYS: dict[tuple[int, str], str] = {
    (Table.INGRESS, "CONTROL"): "an answer to the controller's own probe or a discovery frame: to the controller",
    (Table.INGRESS, "LINK"): "came in from another switch of the fabric: forwarded by destination MAC only",
    (Table.INGRESS, "RA_ROUTER"): "a Router Advertisement from a declared router's port: forwarded",
    (Table.INGRESS, "RA_GUARD"): "a Router Advertisement from a host port: dropped (RA guard)",
    (Table.INGRESS, "VIP_ARP_GUARD"): "a neighbour message speaking for a VIP address: to the controller only",
    (Table.INGRESS, "VIP_ARP"): "a neighbour request for a VIP: answered by the switch",
    (Table.INGRESS, "VIP_PORT"): "VIP {vip} matched (address, protocol and port)",
    (Table.INGRESS, "VIP_ALL_PORTS"): "VIP {vip} matched (address and protocol, every port)",
    (Table.INGRESS, "VIP_FRAGMENT"): "a UDP fragment for VIP address {address}: hashed without ports",
    (Table.INGRESS, "VIP_ICMP"): "ICMP 'too big' for a VIP address: copied to every backend behind it",
    (Table.INGRESS, "VIP_OTHER"): "traffic for VIP address {address} that no VIP serves (protocol or port): dropped",
    (Table.INGRESS, "VIP_SOURCE_PORT"): "a backend's reply from VIP address {address}: source port set back",
    (Table.INGRESS, "VIP_SOURCE"): "a backend's reply from VIP address {address}: counted, forwarded",
    (Table.INGRESS, "VIP_SOURCE_GUARD"): "sent from VIP address {address} by a host that is not its backend: dropped",
    (Table.INGRESS, "MISS"): "not VIP traffic: plain L2 forwarding",
    (Table.DECIDE, "COUNT_SYN"): "a new connection of VIP {vip} (counted): slot from the hash, pool {pool}",
    (Table.DECIDE, "FRAGMENT"): "a fragment of VIP {vip}: slot from the hash alone, pool {pool}",
    (Table.DECIDE, "SLOT"): "VIP {vip}: slot from the hash, pool {pool}",
    (Table.SLOTS, "PIN"): "a learned pin of this connection",
    (Table.SLOTS, "HANDOVER_SYN"): "slot {slot} is in a handover: a new connection goes to the slot's new backend",
    (Table.SLOTS, "HANDOVER"): "slot {slot} is in a handover: a packet of an older connection goes to the old backend",
    (Table.MOVED, "SYN"): "slot {slot} is in a handover: a new connection goes to the backend the slot names, pinned",
    (Table.MOVED, "NO_BACKEND"): "slot {slot} is in a handover and takes no new connection: dropped",
    (Table.MOVED, "OLDER"): "slot {slot} is in a handover: a packet of an older connection goes to the old backend",
    (Table.SLOTS, "SLOT"): "slot {slot} of pool {pool}: its backend",
    (Table.CHOSEN, "ROUTED_SYN"): "a new connection of a routed backend (counted): routed as its other packets",
    (Table.CHOSEN, "ROUTED"): "an L3DSR backend: destination address rewritten to it, the VIP's DSCP set, TTL down",
    (Table.CHOSEN, "COUNT_SYN"): "a new connection of a backend (counted)",
    (Table.CHOSEN, "COUNT"): "a request packet of a backend (counted)",
    (Table.CHOSEN, "CHOSEN"): "a backend was chosen: on to L2 forwarding",
    (Table.ETH_SRC, "HOST"): "source MAC known on this port",
    (Table.ETH_SRC, "MISS"): "source MAC not known here: forwarded, and shown to the controller to learn",
    (Table.ETH_DST, "HOST"): "destination MAC {mac}: out of port {port}",
    (Table.ETH_DST, "MISS"): "destination MAC unknown: flooded",
    (Table.UNPINNED, "REFUSED"): "the pin limit refused this connection's pin: to the old backend",
    (Table.REPLIES, "SYN_ACK"): "a backend answering a connection (counted)",
    (Table.REPLIES, "RESET"): "a backend resetting a connection (counted)",
    (Table.REPLIES, "FIN"): "a backend closing a connection (counted)",
    (Table.REPLIES, "COUNT"): "a backend's reply (counted)",
    (Table.GUARD, "SENDER"): "a backend of the pool, from its own port: may send from the VIP address",
    (Table.TRACKED, "LABELLED"): "the connection tracker knows this connection: to the slot's new backend",
    (Table.TRACKED, "UNLABELLED"): "a connection older than the slot's move: to the old backend",
}
MISSES = {
    Table.DECIDE: "no rule for the VIP: dropped",
    Table.SLOTS: "no rule for the slot",
    Table.CHOSEN: "no backend chosen: dropped (the pool has no backend that takes new connections)",
    Table.GUARD: "not a backend of the pool from its own port: dropped",
    Table.TRACKED: "the slot's handover is over: dropped",
    Table.MOVED: "the slot's handover does not take this packet: where the slot rule sent it",
}


@dataclass(frozen=True)
class TraceQuery:
    """A packet to trace: a client's, to a VIP."""

    vip: Vip
    client: str
    client_port: int
    first: bool = True  # a connection's first packet (a SYN), else a later one
    dpid: int | None = None  # where it enters the fabric
    in_port: int | None = None
    client_mac: str | None = None
    port: int | None = None  # the destination port, when not the VIP's


def parse_query(config: Any, query: dict[str, str]) -> TraceQuery:
    """The trace a REST query asks for: ``vip`` (its name), ``client`` and
    ``client_port``, ``port`` (the destination's, when not the VIP's),
    ``packet`` (``first`` of a connection, or ``later``), and where it
    enters: ``switch`` with ``in_port``, or ``client_mac`` (where it was
    learned; with a switch, the source MAC)."""
    allowed = {"vip", "client", "client_port", "port", "packet", "switch", "in_port", "client_mac"}
    for key in query:
        if key not in allowed:
            raise InvalidInput(key, f"unknown parameter; allowed: {', '.join(sorted(allowed))}")
    if "vip" not in query:
        raise InvalidInput("vip", "required: the name of the VIP the client connects to")
    vip = config.vip(query["vip"])
    client = parse_address(query.get("client"), "client")
    if family_of(client) is not family_of(vip.ip):
        raise InvalidInput("client", f"must be of the VIP's address family ({vip.ip})")
    port = _query_int(query, "client_port", 1, 65535, required=True)
    packet = query.get("packet", "first")
    if packet not in ("first", "later"):
        raise InvalidInput("packet", "must be first (a connection's first packet) or later")
    dpid = parse_dpid(query["switch"], "switch") if "switch" in query else None
    in_port = _query_int(query, "in_port", 1, 0xFFFFFEFF, required=False)
    mac = parse_mac(query["client_mac"], "client_mac") if "client_mac" in query else None
    if (dpid is None) != (in_port is None):
        raise InvalidInput("in_port" if dpid is not None else "switch", "switch and in_port go together")
    if dpid is None and mac is None:
        raise InvalidInput(
            "switch", "where the packet enters: switch and in_port, or client_mac (where it was learned)"
        )
    to = _query_int(query, "port", 1, 65535, required=False)
    return TraceQuery(vip, client, port, packet == "first", dpid, in_port, mac, to)


def _query_int(query: dict[str, str], name: str, low: int, high: int, required: bool) -> int | None:
    text = query.get(name)
    if text is None:
        if required:
            raise InvalidInput(name, f"required: an integer from {low} to {high}")
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        raise InvalidInput(name, f"must be an integer from {low} to {high}")
    return int(text)


@dataclass
class Step:
    dpid: int
    table: int
    rule: Rule | None
    depth: int
    says: str

    def to_json(self) -> dict:
        rule = self.rule
        return {
            "switch": self.dpid,
            "table": Table(self.table).name,
            "rule": None if rule is None else CONTRACT[self.table].priorities(rule.priority).name,
            "priority": None if rule is None else int(rule.priority),
            "cookie": None if rule is None else f"{rule.cookie:#x}",
            "depth": self.depth,
            "says": self.says,
        }


@dataclass
class Hop:
    """One switch's part of a trace."""

    dpid: int
    in_port: int
    packet: dict
    outputs: list[Emitted] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dp_hash: int | None = None
    slot: tuple[int, int] | None = None  # (pool uid, slot) of the slot table looked up


class SwitchWalk(Walk):
    """A packet through the rules the controller computes for one switch."""

    def __init__(self, balancer: Any, dpid: int, steps: list[Step], hop: Hop) -> None:
        self.b = balancer
        self.switch = balancer.switches[dpid]
        self.ports = sorted(balancer.l2.fabric.ports.get(dpid, {}))
        self.steps = steps
        self.hop = hop
        self.cache: dict[Owner, list[Rule]] = {}

    def rules_of(self, who: Owner) -> list[Rule]:
        if who not in self.cache:
            self.cache[who] = self.b.rules.rules_of(self.switch, who)
        return self.cache[who]

    def owners(self, packet: dict) -> list[Owner]:
        """The owners whose rules this packet can meet now."""
        config = self.b.config
        owners: list[Owner] = [BASE_OWNER]
        for name in ("ipv4_dst", "ipv4_src", "ipv6_dst", "ipv6_src", "arp_tpa", "ipv6_nd_target"):
            address = packet.get(name)
            vips = config.address_vips(address) if address else []
            if vips:
                owners.append((Kind.ADDRESS, address))
                owners += [(Kind.VIP, vip.uid) for vip in vips]
                owners += [(Kind.GUARD, config.pools[vip.pool].uid) for vip in vips]
        if packet.get(REG_POOL):
            owners.append((Kind.POOL, slot_owner(packet[REG_POOL], packet.get(REG_SLOT, 0))))
            owners.append((Kind.HANDOVER, packet[REG_POOL]))
        owners += [(Kind.HOST, packet[name]) for name in ("eth_src", "eth_dst") if packet.get(name)]
        return owners

    def lookup(self, table: int, packet: dict) -> Rule | None:
        rules = [rule for who in self.owners(packet) for rule in self.rules_of(who) if rule.table == table]
        return best(rules, packet)

    def group(self, group_id: int) -> tuple:
        if group_id != HASH_GROUP:
            raise ValueError(f"unknown group {group_id}")
        return hash_group().actions

    def dp_hash(self, packet: dict) -> int:
        self.hop.dp_hash = symmetric_l4(packet)
        return self.hop.dp_hash

    def multipath(self, packet: dict, action: Multipath) -> int:
        return source_hash(packet, action.basis, action.n_links)

    def learn(self, pin: LearnPin, packet: dict) -> None:
        if pin.result:  # taken as learned: the pin limit is the switch's count, not the controller's
            packet[pin.result] = packet.get(pin.result, 0) | 1
        self.hop.notes.append(
            f"the switch pins this connection to {packet.get('eth_dst')} (a learned rule; the controller does not see it)"
        )

    def track(self, track: Track, packet: dict, out: list[Emitted], depth: int) -> None:
        if track.label is not None:
            self.hop.notes.append("the connection tracker commits this connection, labelled with its backend")
        if track.table is not None:
            self.hop.notes.append(
                "asked the connection tracker, whose entries the controller does not see: "
                "taken as a connection older than the slot's move"
            )
            self.walk(track.table, dict(packet, ct_label=0), out, depth + 1)

    def hit(self, table: int, rule: Rule | None, packet: dict, depth: int) -> None:
        if (table, rule.priority if rule else None) in ((Table.SLOTS, Slots.HANDOVER), (Table.MOVED, Moved.OLDER)):
            self.hop.notes.append(
                "a connection that began during the handover was pinned where its first packet went, and its "
                "later packets follow the pin (learned on the switch; the controller does not see pins: "
                f"ovs-ofctl dump-flows BRIDGE table={int(Table.SLOTS)},priority={int(Slots.PIN)})"
            )
        if rule is not None and rule.meter is not None:
            limit = self.b.settings.packet_in_limit
            self.hop.notes.append(
                f"to the controller through meter {rule.meter}: at most {limit} packets a second "
                "(packet_in_limit) from this switch; above that they are dropped"
            )
        if table == Table.SLOTS and self.hop.slot is None:
            self.hop.slot = (packet.get(REG_POOL, 0), packet.get(REG_SLOT, 0))
        self.steps.append(Step(self.switch.dpid, table, rule, depth, self.say(table, rule, packet)))

    def say(self, table: int, rule: Rule | None, packet: dict) -> str:
        if rule is None:
            return MISSES.get(table, "no rule: the table's miss")
        band = CONTRACT[table].priorities(rule.priority).name
        config = self.b.config
        name = self.b.desired.vip_names.get(uid_of(rule.cookie)) if kind_of(rule.cookie) == Kind.VIP else None
        vip = config.vips[name] if name else None
        pool = self.b.desired.pool_names.get(packet.get(REG_POOL, 0), "")
        words = SAYS.get((table, band), band.lower())
        port = next((action.port for action in rule.actions if isinstance(action, Output)), None)
        return words.format(
            vip=vip.name if vip else "",
            address=addresses(packet)[1],
            pool=pool or (vip.pool if vip else ""),
            slot=packet.get(REG_SLOT, 0),
            mac=packet.get("eth_dst"),
            port=port,
        )


def packet_of(query: TraceQuery) -> dict:
    vip = query.vip
    family = family_of(vip.ip)
    packet: dict[str, Any] = {"eth_src": query.client_mac or CLIENT_MAC, "eth_dst": vip.mac, "size": 64}
    packet.update(family.to(vip.ip), **{family.src: query.client})
    l4 = ("tcp_src", "tcp_dst") if vip.protocol == "tcp" else ("udp_src", "udp_dst")
    packet.update({"ip_proto": vip.ip_proto, l4[0]: query.client_port, l4[1]: query.port or vip.port or 80})
    if vip.protocol == "tcp":
        packet["tcp_flags"] = TCP_SYN if query.first else TCP_ACK
    return packet


def trace(balancer: Any, query: TraceQuery) -> dict:
    """Walk the packet through the fabric; what happens, said in words."""
    dpid, in_port = query.dpid, query.in_port
    if dpid is None:
        place = balancer.l2.host_at.get(query.client_mac)
        if place is None:
            raise InvalidInput(
                "client_mac", f"{query.client_mac} was not learned on any switch; name switch and in_port"
            )
        dpid, in_port = place
    if dpid not in balancer.switches:
        raise InvalidInput("switch", f"switch {dpid:#x} is not connected")
    if balancer.switches[dpid].mode != "ovs":
        raise InvalidInput("switch", "a trace walks the rules of Open vSwitch mode; this switch is in plain mode")
    steps: list[Step] = []
    hops: list[Hop] = []
    packet = packet_of(query)
    peers = _link_ends(balancer.l2.fabric.links())
    while len(hops) < MAX_HOPS:
        hop = Hop(dpid, in_port, dict(packet))
        hops.append(hop)
        walk = SwitchWalk(balancer, dpid, steps, hop)
        walked = dict(packet, in_port=in_port)
        walk.walk(0, walked, hop.outputs)
        onward = [out for out in hop.outputs if (dpid, out.port) in peers]
        if len(hop.outputs) != 1 or not onward:
            break
        dpid, in_port = peers[(dpid, onward[0].port)]
        packet = onward[0].packet
        if dpid not in balancer.switches:
            hop.notes.append(f"on to switch {dpid:#x}, which is not connected")
            break
    return _explain(balancer, query, hops, steps)


def _link_ends(links) -> dict[tuple[int, int], tuple[int, int]]:
    """(switch, port) -> (switch, port) at the other end of its link."""
    ends = {}
    for a, pa, b, pb in links:
        ends[(a, pa)], ends[(b, pb)] = (b, pb), (a, pa)
    return ends


def _explain(balancer: Any, query: TraceQuery, hops: list[Hop], steps: list[Step]) -> dict:
    vip = query.vip
    pool = balancer.config.pools[vip.pool]
    last = hops[-1]
    first_hop = hops[0]
    walked = _registers(balancer, query, hops)
    delivered = [out for out in last.outputs if isinstance(out.port, int)]
    backend = None
    verdict = ""
    if len(last.outputs) == 0:
        dropped = next((s for s in reversed(steps) if "dropped" in s.says), steps[-1] if steps else None)
        verdict = "dropped: " + (dropped.says if dropped else "no rule")
    elif any(out.port == "controller" for out in last.outputs) and not delivered:
        verdict = "to the controller"
    elif len(delivered) > 1:
        verdict = f"flooded out of {len(delivered)} ports (destination unknown)"
    elif delivered:
        out = delivered[0]
        macs = balancer.backends.ips_by_mac.get(out.packet.get("eth_dst"), ())
        # a routed backend is named by the address written (dscp) or the tunnel's (gre): its MAC is its gateway's
        routed = out.packet.get("tun_ipv4_dst") or addresses(out.packet)[1]
        candidates = [ip for ip in pool.backends if ip == routed] or [ip for ip in pool.backends if ip in macs]
        backend = candidates[0] if candidates else None
        where = f"switch {last.dpid:#x} port {out.port}"
        verdict = f"to backend {backend} at {where}" if backend else f"out of {where} to {out.packet.get('eth_dst')}"
    return {
        "vip": {"name": vip.name, "ip": vip.ip, "protocol": vip.protocol, "port": vip.port, "pool": vip.pool},
        "client": {"ip": query.client, "port": query.client_port, "mac": first_hop.packet["eth_src"]},
        "packet": "first" if query.first else "later",
        "verdict": verdict,
        "backend": backend,
        "hash": walked["hash"],
        "slot": walked["slot"],
        "handover": walked["handover"],
        "why": _why(balancer, vip, walked["slot"], walked["handover"]) if walked["slot"] else [],
        "path": [
            {"switch": hop.dpid, "in_port": hop.in_port, "out": [str(out.port) for out in hop.outputs]} for hop in hops
        ],
        "delivered": [
            {
                "switch": last.dpid,
                "port": out.port,
                "eth_dst": out.packet.get("eth_dst"),
                "ip_dst": addresses(out.packet)[1],
                "dscp": out.packet.get("ip_dscp"),
                "tunnel": out.packet.get("tun_ipv4_dst"),  # a gre backend: GRE to its address
            }
            for out in delivered
        ],
        "notes": [note for hop in hops for note in hop.notes],
        "steps": [step.to_json() for step in steps],
        "ofproto_trace": [
            {"switch": hop.dpid, "flow": ofproto_flow(hop.packet, hop.in_port, hop.dp_hash)} for hop in hops
        ],
    }


def _registers(balancer: Any, query: TraceQuery, hops: list[Hop]) -> dict:
    """The hash, the slot the walk looked up and its handover."""
    vip = query.vip
    name = vip.pool
    size = balancer.desired.slot_size(name, "ovs")
    hop = next((hop for hop in hops if hop.slot is not None), None)
    if hop is None:
        return {"hash": None, "slot": None, "handover": None}
    slot = hop.slot[1]
    if hop.dp_hash is None:
        hashed = {"by": "the client's address (multipath nw_src)", "value": None}
    elif vip.protocol == "udp":
        by = "the addresses (the datapath hash; UDP ports are not in it), and the client port's low 4 bits"
        hashed = {"by": by, "value": f"{hop.dp_hash:#010x}"}
    else:
        hashed = {"by": "the 5-tuple (the datapath hash, symmetric)", "value": f"{hop.dp_hash:#010x}"}
    table = balancer.desired.planner.table(name, size)
    move = balancer.desired.planner.move(name, slot)
    switch = balancer.switches.get(hop.dpid)
    handover = balancer.rules.handover_of(name, slot, switch)
    planner = balancer.desired.planner
    holding = handover is not None and planner.holding(move, balancer.wall(), switch.tracking == "learn")
    return {
        "hash": hashed,
        "slot": {"slot": slot, "of": size, "backend": table[slot] if slot < len(table) else None},
        "handover": None
        if handover is None
        else {
            "from": move.old,
            "to": table[slot] if slot < len(table) else None,
            "checked": move.checked,
            "holding": holding,
        },
    }


def _why(balancer: Any, vip: Vip, slot: dict, handover: dict | None) -> list[str]:
    pool = balancer.config.pools[vip.pool]
    owner = slot["backend"]
    words = []
    table = balancer.desired.planner.table(vip.pool, slot["of"])
    if owner is not None:
        b = pool.backends[owner]
        state, reason = balancer.backends.state(vip.pool, b)
        weights = {ip: each.weight for ip, each in pool.backends.items()}
        words.append(
            f"slot {slot['slot']} of {slot['of']} belongs to {owner}: it holds {table.count(owner)} slots "
            f"(weight {b.weight} of {sum(weights.values())} in pool {vip.pool}); state {state}"
            + (f" ({reason})" if reason else "")
        )
    else:
        words.append(f"slot {slot['slot']} holds no backend: pool {vip.pool} has none that takes new connections")
    for ip, other in pool.backends.items():
        state, reason = balancer.backends.state(vip.pool, other)
        if state != "up":
            words.append(
                f"{ip} is {state}" + (f" ({reason})" if reason else "") + ": it holds no slot for new connections"
            )
    if vip.pool in balancer.backends.failing_open:
        words.append(f"pool {vip.pool} is failing open: every backend that can take connections is in the table")
    if handover is not None:
        old = handover["from"]
        words.append(f"slot {slot['slot']} moved from {old} to {owner}: connections older than the move stay on {old}")
        if handover["holding"]:
            words.append(
                f"the move is new (checked or in its hold): new connections still go to {old}, each pinned, "
                "so none is broken when the slot's rules change"
            )
        else:
            words.append(f"new connections go to {owner}")
    return words


def ofproto_flow(packet: dict, in_port: int, dp_hash: int | None) -> str:
    """The flow to put to ``ovs-appctl ofproto/trace`` for this packet."""
    six = "ipv6_src" in packet
    proto = {6: "tcp", 17: "udp"}[packet["ip_proto"]] + ("6" if six else "")
    parts = [f"in_port={in_port}", proto, f"dl_src={packet['eth_src']}", f"dl_dst={packet['eth_dst']}"]
    if six:
        parts += [f"ipv6_src={packet['ipv6_src']}", f"ipv6_dst={packet['ipv6_dst']}"]
    else:
        parts += [f"nw_src={packet['ipv4_src']}", f"nw_dst={packet['ipv4_dst']}"]
    l4 = ("tcp_src", "tcp_dst") if packet["ip_proto"] == 6 else ("udp_src", "udp_dst")
    parts += [f"tp_src={packet[l4[0]]}", f"tp_dst={packet[l4[1]]}"]
    if packet["ip_proto"] == 6:
        parts.append(f"tcp_flags={packet.get('tcp_flags', 0):#05x}")
    if dp_hash is not None:
        parts.append(f"dp_hash={dp_hash:#x}")
    # ofproto/trace learns nothing and writes no learn result: a pin's
    # result bit is set beforehand, as the controller's walk takes it (learned)
    parts.append(f"{REG_LEARNED}=0x1")
    return ",".join(parts)
