"""The pipeline as data: tables and their contract, priority bands,
registers and cookie owners.

Open vSwitch mode (Nicira extensions)::

    INGRESS --VIP traffic--> group HASH (5-tuple hash in the datapath, recirculate)
       |                        |
       |                        +--> DECIDE: slot = hash bits; resubmit(SLOTS); --> CHOSEN --chosen--> ETH_SRC --> ETH_DST
       |                                       SLOTS sets eth_dst (and REG_CHOSEN)  miss: drop
       +--ARP for a VIP: answered in the switch
       +--IPv6 solicitation for a VIP: made an advertisement, resubmit(NEIGHBOUR): its option, back out
       +--everything else------------------------------------------------------------------> ETH_SRC --> ETH_DST

In steady state a VIP's packet costs the datapath a hash and a
recirculation, and its megaflows match hash bits, never a connection's
ports: a new connection runs at the speed of an existing one. Only a slot
whose backend moved keeps per-connection state, for a handover window: SYN
to the new backend, other packets of the slot to the old one, each pinned
by ``learn`` into SLOTS itself (the pin matches the pool and slot
registers, so other slots' lookups never reach its 5-tuple). The slot's
one rule names those backends in registers (``REG_SYN_TO``,
``REG_OLDER_TCP``, ``REG_OLDER_UDP``) and resubmits to MOVED, where the
pool's rules, a few per backend, send and pin by them. With
``handover_tracking = conntrack`` a moved slot's SYN is committed to the
connection tracker with its backend's id as label instead, and the slot's
other TCP packets go through the tracker to TRACKED, which sends them by
label (or, unlabelled, to the old backend, pinned).

Plain OpenFlow 1.3 mode::

    INGRESS --VIP traffic: write_metadata(pool)--> SLOTS (masked ipv4_src bits) --> ETH_SRC --> ETH_DST
       +--ARP for a VIP: to the controller, which answers

``CONTRACT`` writes down, once, what each table may match, which tables it
may go to and what happens on a miss; ``check_rule`` holds every computed
rule to it (in the manner of Faucet's ``faucet_pipeline.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from ryu_dsr.flows.family import FAMILIES, NEIGHBOUR_TABLE
from ryu_dsr.flows.rules import Resubmit, Track


class Table(IntEnum):
    INGRESS = 0
    DECIDE = 1  # per VIP: which pool, which slot
    SLOTS = 2  # slot -> backend, handover rules and learned pins; only looked up by resubmit
    CHOSEN = 3  # a backend was chosen: on to L2; else drop
    ETH_SRC = 4
    ETH_DST = 5
    UNPINNED = 6  # a handover's SYN whose pin was refused (the limit): to the old backend; by resubmit only
    LEARN = 7  # frames from unknown source MACs to the controller, through a meter; by resubmit only
    REPLIES = 8  # what each backend sends from a VIP address, counted per backend MAC; by resubmit only
    GUARD = 9  # who may send from a VIP address: a pool's backends, each from its own port; by resubmit only
    TRACKED = 10  # a moved slot's TCP packet after the connection tracker (handover_tracking = conntrack)
    NEIGHBOUR = NEIGHBOUR_TABLE  # an IPv6 solicitation for a VIP, made an advertisement: its option, and back
    MARKS = 12  # flows that vouch for a pool's slot flows and its VIPs' (a restart skips them); no packet gets here
    MOVED = 13  # a moved slot's packets, by the backends its slot rule named in registers; by resubmit only


HASH_GROUP = 1  # the select group whose datapath hash picks a VIP's slot
LEARN_METER = 1  # the meter that bounds frames sent to the controller for MAC learning


# Each table's priority bands (higher wins), declared with the table and
# checked by its contract: a rule's priority must be one of its table's.
# The values are the ones flows were written with (a cookie digests them).


class Ingress(IntEnum):
    CONTROL = 400  # answers to the controller's probes, discovery frames
    LINK = 390  # a frame from another switch of the fabric: forwarded by destination MAC only
    RA_ROUTER = 385  # an IPv6 Router Advertisement from a declared router's port: forwarded
    RA_GUARD = 380  # an IPv6 Router Advertisement from any other host port: dropped
    VIP_ARP_GUARD = 310  # neighbour messages that speak for a VIP's address: to the controller only
    VIP_ARP = 300  # neighbour requests for a VIP (or the probe address): answered
    VIP_PORT = 200  # VIP traffic on one port
    VIP_FRAGMENT = 195  # UDP fragments for a VIP address (Open vSwitch reads no ports in fragments)
    VIP_ALL_PORTS = 190  # VIP traffic on all ports of a protocol
    VIP_ICMP = 160  # ICMP "too big" for a VIP address: to every backend behind it
    VIP_OTHER = 150  # other IP traffic for a VIP address: dropped
    VIP_SOURCE_PORT = 146  # IP from a VIP address and a translated VIP's backend port: its source port set back
    VIP_SOURCE = 145  # IP from a VIP address, from one of its backends (MAC, and port when known): counted, forwarded
    VIP_SOURCE_GUARD = 144  # IP from a VIP address, from anywhere else: dropped
    MISS = 0  # everything else: L2


class Decide(IntEnum):
    COUNT_SYN = 120  # a VIP's connection's first packet (its counters are the VIP's new connections)
    FRAGMENT = 110  # a UDP fragment's slot, from the hash alone
    SLOT = 100  # a VIP's packet: its slot, then the pool's slot table


class Slots(IntEnum):
    PIN = 200  # learned: one connection's backend
    HANDOVER_SYN = 130  # a moved slot: a connection's first packet
    HANDOVER = 120  # a moved slot: other packets, to the old backend
    SLOT = 100  # a slot's backend


class Chosen(IntEnum):
    ROUTED_SYN = 140  # a routed backend's new connection: routed as ROUTED's are (counted apart)
    ROUTED = 130  # a dscp backend chosen: its address over the VIP's, the VIP's DSCP, TTL down (counted)
    COUNT_SYN = 120  # a backend's new connections (counted by the rule)
    COUNT = 110  # a backend's request packets (counted by the rule)
    CHOSEN = 100  # a backend was chosen: on to L2


class EthSrc(IntEnum):
    HOST = 100  # a known host on its own port
    MISS = 0  # an unknown source: forwarded, shown to the controller


class EthDst(IntEnum):
    HOST = 100  # to a known host
    MISS = 0  # flood


class Moved(IntEnum):
    SYN = 130  # a new connection: to the backend REG_SYN_TO names, pinned there
    NO_BACKEND = 129  # a new connection of a moved slot that takes none: dropped
    OLDER = 120  # a packet of an older connection (REG_OLDER_TCP, REG_OLDER_UDP): to that backend, pinned


class Learn(IntEnum):
    MISS = 0  # to the controller, through the meter


class Guard(IntEnum):
    SENDER = 100  # a backend of the pool, from its own port: may send from the pool's VIP addresses


class Replies(IntEnum):
    SYN_ACK = 130  # a backend answering a connection from a VIP address (counted)
    FIN = 127  # a backend closing a connection from a VIP address (counted: its active connections)
    RESET = 125  # a backend resetting a connection from a VIP address (counted)
    COUNT = 110  # anything else a backend sends from a VIP address (counted)


class Unpinned(IntEnum):
    REFUSED = 100  # a handover's SYN whose pin the limit refused: to the old backend


class Answer(IntEnum):
    ANSWER = 100  # an advertisement made in INGRESS: its target link-layer option written, sent back


class Marks(IntEnum):
    SLOTS = 100  # a pool's slot flows: the digest of what they were made from, and of their cookies
    SERVICES = 90  # the flows of a pool's VIPs, their addresses (the pool's alone) and its guard: the same


class Tracked(IntEnum):
    LABELLED = 130  # a connection the tracker labelled with the slot's new backend
    UNLABELLED = 120  # a connection older than the move: to the old backend, pinned


# Registers (Open vSwitch mode).
REG_SLOT = "reg0"  # slot number computed by multipath
REG_VIP = "reg1"  # uid of the VIP being served
REG_CHOSEN = "reg2"  # bit 0 set when SLOTS chose a backend
REG_POOL = "reg3"  # uid of the pool whose slot table applies
REG_LEARNED = "reg4"  # bit 0: the pin a handover's SYN asked for was learned
REG_GUARD = "reg5"  # uid of the pool whose backends may send from the packet's VIP address
REG_DSCP = "reg6"  # the DSCP value that names the VIP's address to dscp backends (L3DSR)
REG_BACKEND = "reg7"  # uid of the dscp backend chosen: CHOSEN routes the packet to it
# A moved slot's rule names backends by uid for table MOVED (0: none): where its new TCP
# connections go, pinned (NO_BACKEND: dropped), and where other TCP packets and UDP datagrams go.
REG_SYN_TO = "reg8"
REG_OLDER_TCP = "reg9"
REG_OLDER_UDP = "reg10"
NO_BACKEND = 1 << 24  # (beyond every object uid)

SLOT_BITS = 16
# Open vSwitch's datapath hash (symmetric L3/L4) leaves UDP ports out: a UDP
# VIP's slot takes these low bits from the client's port, the rest from the hash.
UDP_PORT_BITS = 4
MAX_SLOTS_OVS = 1 << SLOT_BITS
IP_FRAGMENT = (1, 1)  # Nicira ip_frag: any fragment of an IP datagram


@dataclass(frozen=True)
class TableContract:
    """What one table may hold."""

    matches: frozenset[str]  # fields a rule of this table may match
    next_tables: frozenset[int]  # where a rule may go (goto or resubmit)
    miss: str  # what a packet that matches nothing gets
    priorities: type[IntEnum]  # the table's priority bands: a rule has one of them
    bands: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", frozenset(band.value for band in self.priorities))


_SOURCES = {family.src for family in FAMILIES}  # plain mode's slots: bits of the client's address
_ADDRESSES = _SOURCES | {family.dst for family in FAMILIES}
_L3L4 = {"eth_type", "ip_proto", "tcp_src", "tcp_dst", "udp_src", "udp_dst"} | _ADDRESSES
TCP_SYN = (0x002, 0x012)  # tcp_flags: SYN set, ACK clear
TCP_SYN_ACK = (0x012, 0x012)  # SYN and ACK set: a connection answered
TCP_RST = (0x004, 0x004)
TCP_FIN = (0x001, 0x001)
_NEIGHBOUR = set().union(*(family.neighbour_fields for family in FAMILIES))
_ICMP = set().union(*(family.icmp_fields for family in FAMILIES))

CONTRACT: dict[int, TableContract] = {
    Table.INGRESS: TableContract(
        frozenset(_L3L4 | _NEIGHBOUR | _ICMP | {"eth_dst", "eth_src", "ip_frag", "in_port", "tcp_flags"}),
        frozenset(
            {
                Table.INGRESS,
                Table.DECIDE,
                Table.SLOTS,
                Table.ETH_SRC,
                Table.ETH_DST,
                Table.REPLIES,
                Table.GUARD,
                Table.NEIGHBOUR,
            }
        ),
        "to ETH_SRC (a MISS rule)",
        Ingress,
    ),
    Table.DECIDE: TableContract(
        frozenset({"eth_type", "ip_proto", "ip_frag", "tcp_flags", REG_VIP}),
        frozenset({Table.SLOTS, Table.CHOSEN}),
        "drop (no rule for the VIP)",
        Decide,
    ),
    Table.SLOTS: TableContract(
        frozenset({"eth_type", "ip_proto", "metadata", "tcp_flags", REG_POOL, REG_SLOT} | _SOURCES),
        frozenset({Table.ETH_SRC, Table.UNPINNED, Table.TRACKED, Table.MOVED}),
        "nothing (Open vSwitch: resubmit returns, CHOSEN drops; plain: drop)",
        Slots,
    ),
    Table.CHOSEN: TableContract(
        frozenset({REG_CHOSEN, REG_BACKEND, "eth_dst", "eth_type", "ip_proto", "tcp_flags"}),
        frozenset({Table.ETH_SRC}),
        "drop (no backend chosen)",
        Chosen,
    ),
    Table.ETH_SRC: TableContract(
        frozenset({"in_port", "eth_src"}),
        frozenset({Table.ETH_DST, Table.LEARN}),
        "learning: to ETH_DST and (metered) to the controller",
        EthSrc,
    ),
    Table.ETH_DST: TableContract(frozenset({"eth_dst"}), frozenset(), "learning: flood", EthDst),
    Table.LEARN: TableContract(frozenset(), frozenset(), "nothing: resubmit returns", Learn),
    Table.GUARD: TableContract(
        frozenset({REG_GUARD, "eth_src", "in_port"}),
        frozenset({Table.REPLIES, Table.ETH_SRC}),
        "nothing: resubmit returns, and the packet is dropped",
        Guard,
    ),
    Table.REPLIES: TableContract(
        frozenset({"eth_src", "eth_type", "ip_proto", "tcp_flags"}), frozenset(), "nothing: resubmit returns", Replies
    ),
    Table.MOVED: TableContract(
        frozenset({"eth_type", "ip_proto", "tcp_flags", REG_SYN_TO, REG_OLDER_TCP, REG_OLDER_UDP}),
        frozenset({Table.UNPINNED}),
        "nothing: resubmit returns, the packet goes where the slot rule sent it",
        Moved,
    ),
    Table.UNPINNED: TableContract(
        frozenset({REG_POOL, REG_SLOT, REG_LEARNED, REG_OLDER_TCP}),
        frozenset(),
        "nothing: resubmit returns (the pin was learned)",
        Unpinned,
    ),
    Table.NEIGHBOUR: TableContract(
        frozenset({"eth_type", "ip_proto", "icmpv6_type", "ipv6_nd_target"}),
        frozenset(),
        "nothing: resubmit returns, and the packet is dropped",
        Answer,
    ),
    Table.TRACKED: TableContract(
        frozenset({"eth_type", "ip_proto", REG_POOL, REG_SLOT, "ct_label"}),
        frozenset({Table.CHOSEN}),
        "drop (the slot's handover is over)",
        Tracked,
    ),
    Table.MARKS: TableContract(frozenset({"metadata"}), frozenset(), "nothing: no rule goes here", Marks),
}


def check_rule(rule: Any) -> None:
    """Raise ValueError if ``rule`` breaks its table's contract."""
    contract = CONTRACT.get(rule.table)
    if contract is None:
        raise ValueError(f"rule in unknown table {rule.table}")
    extra = {name for name, _value in rule.match} - contract.matches
    if extra:
        raise ValueError(f"table {Table(rule.table).name} does not match on {', '.join(sorted(extra))}")
    if rule.priority not in contract.bands:
        raise ValueError(
            f"table {Table(rule.table).name} has no priority {rule.priority}; its bands: "
            + ", ".join(f"{band.name} {band.value}" for band in contract.priorities)
        )
    targets = {rule.goto} if rule.goto is not None else set()
    for action in rule.actions:
        if isinstance(action, Resubmit) or (isinstance(action, Track) and action.table is not None):
            targets.add(action.table)
    wrong = targets - contract.next_tables
    if wrong:
        names = ", ".join(Table(t).name for t in sorted(wrong))
        raise ValueError(f"table {Table(rule.table).name} may not go to {names}")


class Kind(IntEnum):
    """Cookie bits 63..56: what kind of owner a flow has."""

    BASE = 0x01  # table-miss and control rules
    VIP = 0x02  # one VIP's entry and decide rules
    POOL = 0x03  # slot rules of one pool
    PIN = 0x04  # learned pins to one backend (never diffed, only deleted)
    HOST = 0x05  # L2 forwarding for one host (owner: its MAC, read from the match)
    ADDRESS = 0x06  # ARP answer, ARP guard and catch-all of one VIP address
    GUARD = 0x07  # one pool's backends allowed to send from its VIP addresses (GUARD table)
    MARK = 0x08  # a pool's marks (MARKS table): what its flows are, so a restart need not recompute them
    HANDOVER = 0x09  # one pool's rules of table MOVED (and UNPINNED), by backend: where a moved slot's packets go


OWNER_UID_BITS = 24
KIND_MASK = 0xFF << 56
OWNER_MASK = KIND_MASK | (((1 << OWNER_UID_BITS) - 1) << 32)

# What the controller diffs by: (kind, id). The id is the uid for VIPs,
# ``slot_owner(pool uid, slot)`` for one slot of a pool's table (a change of
# pool touches only the slots that move), the MAC for hosts, the address for VIP
# addresses.
Owner = tuple[Kind, Any]
BASE_OWNER: Owner = (Kind.BASE, 0)
# Order in which dirty owners are written: slot rules before the VIP rules
# that hash into them, so a table that grows is complete before a VIP uses it.
# GUARD before ADDRESS: an address's source rule sends into GUARD, which must allow the backends first.
# A pool's marks after what they vouch for. A pool's handover rules before the slot rules that name them.
PHASE = {
    Kind.HANDOVER: -1,
    Kind.POOL: 0,
    Kind.GUARD: 1,
    Kind.VIP: 2,
    Kind.ADDRESS: 3,
    Kind.MARK: 4,
    Kind.HOST: 5,
    Kind.BASE: 6,
}


def slot_owner(pool_uid: int, slot: int) -> int:
    """The owner id of one slot of a pool's table: one int, not a pair,
    since a switch holds a hundred thousand of them."""
    return pool_uid * MAX_SLOTS_OVS + slot


def slots_mark(pool_uid: int) -> Owner:
    """The owner of the mark that vouches for a pool's slot flows."""
    return (Kind.MARK, pool_uid)


def services_mark(pool_uid: int) -> Owner:
    """The owner of the mark that vouches for a pool's VIPs' flows (their
    addresses', its guard's): apart from the slots' mark, so a change of
    slots does not digest the VIPs again."""
    return (Kind.MARK, pool_uid | SERVICES_MARK)


SERVICES_MARK = 1 << 24  # (beyond every object uid: OWNER_UID_BITS)


def owner(kind: Kind, uid: int = 0) -> int:
    """The upper 32 cookie bits naming a flow's owner."""
    if not 0 <= uid < (1 << OWNER_UID_BITS):
        raise ValueError(f"owner uid {uid} out of range")
    return (int(kind) << 24) | uid


def pin_cookie(backend_uid: int) -> int:
    """The full cookie of every pin learned for one backend (the learn limit
    counts flows by cookie, so it bounds each backend's pins)."""
    return owner(Kind.PIN, backend_uid) << 32


def kind_of(cookie: int) -> int:
    return (cookie >> 56) & 0xFF


def uid_of(cookie: int) -> int:
    return (cookie >> 32) & ((1 << OWNER_UID_BITS) - 1)


def owner_of(key: tuple, cookie: int) -> Owner | None:
    """The owner of a flow read from a switch; None for learned pins (never
    diffed). A flow whose cookie names no known kind belongs to no one and
    is removed by the next resync. (Called for every flow a switch holds
    when it connects: slot flows, most of them, take the short way.)"""
    kind = (cookie >> 56) & 0xFF
    if kind == _POOL:
        for name, value in key[2]:
            if name == REG_SLOT:
                return (Kind.POOL, ((cookie >> 32) & _UID_MASK) * MAX_SLOTS_OVS + value)
        # plain mode: the slot is the masked client address
        fields = dict(key[2])
        family = next((f for f in FAMILIES if f.src in fields), FAMILIES[0])
        slot = family.low_bits(fields.get(family.src, (family.unspecified, None))[0])
        return (Kind.POOL, slot_owner(uid_of(cookie), slot))
    by_uid = _BY_UID.get(kind)
    if by_uid is not None:
        return (by_uid, (cookie >> 32) & _UID_MASK)
    if kind == Kind.MARK:
        uid = (cookie >> 32) & _UID_MASK
        return services_mark(uid) if key[1] == Marks.SERVICES else slots_mark(uid)
    if kind == Kind.PIN:
        return None
    if kind == Kind.BASE:
        return BASE_OWNER
    fields = dict(key[2])
    if kind == Kind.HOST:
        return (Kind.HOST, fields.get("eth_src") or fields.get("eth_dst"))
    if kind == Kind.ADDRESS:
        address = next((fields[f] for family in FAMILIES for f in family.address_fields if f in fields), None)
        return (Kind.ADDRESS, address)
    return (Kind.BASE, "unknown")


_POOL = int(Kind.POOL)
_UID_MASK = (1 << OWNER_UID_BITS) - 1
_BY_UID = {int(kind): kind for kind in (Kind.VIP, Kind.GUARD, Kind.HANDOVER)}  # owners named by the cookie's uid
