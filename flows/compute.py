"""Desired flow rules of one switch, computed from plain inputs.

No I/O, no clock, no Ryu: the controller core builds the plans below from its
state and gets back the complete set of rules the switch should hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from ryu_dsr.flows.family import FAMILIES, Family, family_of
from ryu_dsr.flows.pipeline import (
    HASH_GROUP,
    IP_FRAGMENT,
    LEARN_METER,
    NO_BACKEND,
    REG_BACKEND,
    REG_CHOSEN,
    REG_DSCP,
    REG_GUARD,
    REG_LEARNED,
    REG_OLDER_TCP,
    REG_OLDER_UDP,
    REG_POOL,
    REG_SLOT,
    REG_SYN_TO,
    REG_VIP,
    SLOT_BITS,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    TCP_SYN_ACK,
    UDP_PORT_BITS,
    Answer,
    Chosen,
    Decide,
    EthDst,
    EthSrc,
    Guard,
    Ingress,
    Kind,
    Learn,
    Marks,
    Moved,
    Replies,
    Slots,
    Table,
    Tracked,
    Unpinned,
    check_rule,
    owner,
    pin_cookie,
)
from ryu_dsr.flows.rules import (
    Action,
    DecTtl,
    Group,
    GroupAdd,
    LearnPin,
    MeterSet,
    Move,
    Multipath,
    Output,
    Resubmit,
    Rule,
    SetField,
    Track,
    match_items,
)

L4_DST = {6: "tcp_dst", 17: "udp_dst"}
ROUTER_ADVERT = {"eth_type": 0x86DD, "ip_proto": 58, "icmpv6_type": 134}
L4_SRC = {6: "tcp_src", 17: "udp_src"}
CONTROLLER_PEEK = 128  # bytes of a packet sent to the controller for learning


@dataclass(frozen=True)
class VipPlan:
    uid: int
    ip: str
    mac: str
    ip_proto: int
    port: int | None
    hash: str
    pool_uid: int
    n_slots: int  # size of the pool's slot table this VIP hashes into
    backend_port: int | None = None  # requests' destination port becomes this (None: kept)
    dscp: int | None = None  # the value that names the VIP's address to its pool's dscp backends


@dataclass(frozen=True)
class SlotTarget:
    """The backend a slot sends to."""

    mac: str  # its own, or (routed) its gateway's
    backend_uid: int
    routed: bool = False  # a dscp backend: CHOSEN writes its address and the VIP's DSCP


@dataclass(frozen=True)
class Handover:
    """A slot whose backend moved, during its handover windows: packets the
    switch cannot tell as a new connection's still go to ``old``.

    It begins with a hold (``hold`` set, ``first`` the backend new
    connections went to until the move): every connection of the slot,
    SYN or not, is pinned where it already goes, and the slot rule keeps
    ``first``. Only then do SYNs go to the slot's new backend. The hold
    exists for Open vSwitch's revalidators: when rules change they
    re-translate each datapath flow with the packet that made it, learn
    actions included. A flow made by an old connection's SYN before the
    move covers the whole slot; re-translated by a SYN-to-the-new-backend
    rule, it would pin that old, live connection to the new backend. During
    the hold those flows are replaced by per-connection ones, and every
    connection seen is pinned, so no rule that sends a SYN elsewhere ever
    sees a stale packet."""

    old: SlotTarget
    tcp: bool  # TCP window open: SYN to the new backend, the rest to the old
    udp: bool  # UDP window open: every unpinned datagram to the old backend
    first: SlotTarget | None = None  # during the hold: where new connections keep going


@dataclass(frozen=True)
class SwitchPlan:
    """What a switch's rules depend on besides VIPs, pools and hosts."""

    mode: str  # 'ovs' (Nicira extensions) or 'plain' (OpenFlow 1.3 only)
    l2: str  # 'learning' (rules per learned host) or 'normal' (OFPP_NORMAL)
    probe_mac: str
    probe_ip: str | None = None  # answered by ARP in the switch, for health probes
    pin_idle_timeout: int = 300
    pin_fin_timeout: int = 20
    pin_limit: int = 0  # pins per backend on a switch; 0: no limit
    packet_in_limit: int = 0  # frames a second sent to the controller for MAC learning; 0: no limit
    links: tuple[int, ...] = ()  # ports that lead to other switches of the fabric
    flood: tuple[int, ...] | None = None  # where to flood (edge ports and spanning-tree links); None: every port
    # how a moved slot's new TCP connections keep their backend in a handover:
    # 'learn' (a pin each) or 'conntrack' (the tracker's label, in this zone)
    handover_tracking: str = "learn"
    conntrack_zone: int = 0
    router_ports: tuple[int, ...] = ()  # ports whose IPv6 Router Advertisements are let through
    neighbour_answers: bool = True  # the switch can turn a solicitation into an advertisement (IPv6)
    gre_port: int | None = None  # its GRE port (remote_ip=flow, packet_type=legacy_l3) for gre backends


def plain_slot_bits(n_slots: int) -> int:
    bits = n_slots.bit_length() - 1
    if n_slots != 1 << bits:
        raise ValueError("plain mode needs a power-of-two slot count")
    return bits


def base_rules(switch: SwitchPlan) -> list[Rule]:
    """Rules every switch has whatever the VIPs: probes, misses, L2."""
    base = owner(Kind.BASE)
    rules = [
        Rule(
            Table.INGRESS,
            Ingress.CONTROL,
            match_items(eth_dst=switch.probe_mac),  # answers to the controller's probes
            (Output("controller"),),
            owner=base,
        ),
        Rule(Table.INGRESS, Ingress.MISS, (), goto=Table.ETH_SRC, owner=base),
        # IPv6 Router Advertisements from a host port: dropped (a host cannot make
        # itself the clients' router); from a declared router's port, forwarded.
        Rule(Table.INGRESS, Ingress.RA_GUARD, match_items(**ROUTER_ADVERT), (), owner=base),
    ]
    for port in switch.router_ports:
        from_router = match_items(**ROUTER_ADVERT, in_port=port)
        rules.append(Rule(Table.INGRESS, Ingress.RA_ROUTER, from_router, goto=Table.ETH_SRC, owner=base))
    for family in FAMILIES:  # the probes' own addresses, answered for the health probes that come from them
        source = family.probe_source(switch.probe_mac, switch.probe_ip)
        if source is not None and family_of(source) is family:
            rules += _answers(switch, family, source, switch.probe_mac, base)
    if switch.mode == "ovs":
        rules.append(
            Rule(Table.CHOSEN, Chosen.CHOSEN, match_items(**{REG_CHOSEN: (1, 1)}), goto=Table.ETH_SRC, owner=base)
        )
        for family in FAMILIES:  # a new connection of a moved slot that takes none (``slot_rules``): dropped
            syn = match_items(eth_type=family.eth_type, ip_proto=6, tcp_flags=TCP_SYN, **{REG_SYN_TO: NO_BACKEND})
            rules.append(Rule(Table.MOVED, Moved.NO_BACKEND, syn, (), owner=base))
    if switch.l2 == "normal":
        rules.append(Rule(Table.ETH_SRC, EthSrc.MISS, (), (Output("normal"),), owner=base))
        return rules
    if switch.packet_in_limit and switch.mode == "ovs":
        # Forwarded first, then shown to the controller through the meter:
        # above the limit only the copy for the controller is dropped.
        rules += [
            Rule(Table.ETH_SRC, EthSrc.MISS, (), (Resubmit(Table.ETH_DST), Resubmit(Table.LEARN)), owner=base),
            Rule(Table.LEARN, Learn.MISS, (), (Output("controller", CONTROLLER_PEEK),), meter=LEARN_METER, owner=base),
        ]
    else:
        rules.append(
            Rule(
                Table.ETH_SRC,
                EthSrc.MISS,
                (),
                (Output("controller", CONTROLLER_PEEK),),
                goto=Table.ETH_DST,
                owner=base,
            )
        )
    # Frames that come over a link entered the fabric elsewhere: they were
    # balanced and learned there, and go on by destination MAC alone.
    for port in switch.links:
        rules.append(Rule(Table.INGRESS, Ingress.LINK, match_items(in_port=port), goto=Table.ETH_DST, owner=base))
    flood = (Output("flood"),) if switch.flood is None else tuple(Output(port) for port in switch.flood)
    rules.append(Rule(Table.ETH_DST, EthDst.MISS, (), flood, owner=base))
    return rules


def learn_meter(switch: SwitchPlan) -> MeterSet | None:
    """The meter that bounds MAC-learning frames to the controller."""
    if not switch.packet_in_limit or switch.mode != "ovs" or switch.l2 != "learning":
        return None
    return MeterSet(LEARN_METER, switch.packet_in_limit, max(switch.packet_in_limit // 10, 10))


def host_rules(switch: SwitchPlan, mac: str, port: int | None, learned: bool = True) -> list[Rule]:
    """L2 forwarding to one host out of ``port`` (its own, or the link
    towards its switch) and, where it is ``learned`` (on this switch), the
    rule that knows its source; none in normal mode."""
    if switch.l2 == "normal" or port is None:
        return []
    host = owner(Kind.HOST)
    to_host = Rule(Table.ETH_DST, EthDst.HOST, match_items(eth_dst=mac), (Output(port),), owner=host)
    if not learned:
        return [to_host]
    return [
        Rule(Table.ETH_SRC, EthSrc.HOST, match_items(in_port=port, eth_src=mac), goto=Table.ETH_DST, owner=host),
        to_host,
    ]


def guard_rules(switch: SwitchPlan, pool_uid: int, senders: tuple[tuple[str, int], ...]) -> list[Rule]:
    """In GUARD, the backends of one pool that are on this switch, each
    (MAC, port) allowed to send from the pool's VIP addresses; what they
    send is counted in REPLIES and forwarded (Open vSwitch mode)."""
    if switch.mode != "ovs":
        return []
    guard = owner(Kind.GUARD, pool_uid)
    allowed = (Resubmit(Table.REPLIES), Resubmit(Table.ETH_SRC))
    return [
        Rule(
            Table.GUARD,
            Guard.SENDER,
            match_items(**{REG_GUARD: pool_uid}, eth_src=mac, in_port=port),
            allowed,
            owner=guard,
        )
        for mac, port in senders
    ]


def backend_count_rules(switch: SwitchPlan, mac: str) -> list[Rule]:
    """Counters of one backend's VIP traffic (Open vSwitch mode), owned with
    the MAC's L2 rules. Requests: in CHOSEN, after SLOTS set the backend's
    MAC, one rule counts its new TCP connections (SYN) and one the rest of
    its request packets; they forward as CHOSEN's own rule does. Replies:
    in REPLIES, where the source guard's allow rules send what a backend
    sends from a VIP address, one rule counts its SYN-ACKs (connections
    answered), one its resets and one the rest. Per MAC, not per address:
    a poll reads a few rules per backend whatever the number of VIPs."""
    if switch.mode != "ovs":
        return []
    host = owner(Kind.HOST)
    chosen = {REG_CHOSEN: (1, 1), "eth_dst": mac}
    rules = [
        Rule(Table.CHOSEN, Chosen.COUNT, match_items(**chosen), goto=Table.ETH_SRC, owner=host),
        Rule(Table.REPLIES, Replies.COUNT, match_items(eth_src=mac), (), owner=host),
    ]
    for family in FAMILIES:
        syn = match_items(**chosen, eth_type=family.eth_type, ip_proto=6, tcp_flags=TCP_SYN)
        rules.insert(0, Rule(Table.CHOSEN, Chosen.COUNT_SYN, syn, goto=Table.ETH_SRC, owner=host))
        for priority, flags in ((Replies.SYN_ACK, TCP_SYN_ACK), (Replies.FIN, TCP_FIN), (Replies.RESET, TCP_RST)):
            flagged = match_items(eth_src=mac, eth_type=family.eth_type, ip_proto=6, tcp_flags=flags)
            rules.append(Rule(Table.REPLIES, priority, flagged, (), owner=host))
    return rules


@dataclass(frozen=True)
class AddressPlan:
    """One VIP address on one switch (VIPs may share an address on
    different ports)."""

    ip: str
    mac: str | None  # the VIP MAC the switch answers ARP with; None: no VIP uses the address
    backend_macs: tuple[str, ...] = ()  # backends that may hold connections: ICMP "too big" goes to each
    fragments: VipPlan | None = None  # the VIP UDP fragments enter (``fragment_vip``); Open vSwitch mode
    senders: tuple[tuple[str, int | None], ...] = ()  # (MAC, port or None) of the backends behind the address
    guarded: bool = False  # every backend's place is known: none else may send from the address
    pool_uid: int | None = None  # the one pool of the address's VIPs (GUARD allows its backends); None: several
    # (ip_proto, backend port, VIP port) of each VIP that translates its port:
    # a backend's reply from the backend port leaves from the VIP's port
    translations: tuple[tuple[int, int, int], ...] = ()


def vip_address_rules(switch: SwitchPlan, address: AddressPlan) -> list[Rule]:
    """ARP answer, ARP guard, source guard and catch-all of one VIP address;
    none when no VIP uses the address.

    In Open vSwitch mode, ICMP "fragmentation needed" sent to the address (a
    router on the way back to a client could not forward a backend's reply,
    which came from the VIP) goes to every backend behind it: the switch
    cannot read which connection it is about, and without it path MTU
    discovery breaks (in the manner of GitHub's GLB).

    Packets from the address are taken only from the ports of its backends
    (when all of them are on this switch): no other host can answer in the
    VIP's name. ARP from the address (a backend without ``arp_announce``,
    say, or a host claiming the VIP) is never heard by other hosts: it goes
    to the controller, which reports it, through the learning meter."""
    ip, mac = address.ip, address.mac
    if mac is None:
        return []
    address_owner = owner(Kind.ADDRESS)
    family = family_of(ip)
    rules = []
    if switch.mode == "ovs" and address.backend_macs:
        forward: Action = Output("normal") if switch.l2 == "normal" else Resubmit(Table.ETH_DST)
        copies = tuple(action for each in address.backend_macs for action in (SetField("eth_dst", each), forward))
        too_big = match_items(**family.too_big(ip))
        rules.append(Rule(Table.INGRESS, Ingress.VIP_ICMP, too_big, copies, owner=address_owner))
    if switch.mode == "ovs" and address.fragments is not None:
        rules.append(fragments_rule(address.fragments))
    if switch.mode == "ovs":
        # A translated VIP's replies: source port set back to the VIP's, then
        # looked up again as any reply from the address (guard, counters).
        for ip_proto, backend_port, port in address.translations:
            reply = match_items(**family.sent_from(ip), ip_proto=ip_proto, **{L4_SRC[ip_proto]: backend_port})
            back = (SetField(L4_SRC[ip_proto], port), Resubmit(Table.INGRESS))
            rules.append(Rule(Table.INGRESS, Ingress.VIP_SOURCE_PORT, reply, back, owner=address_owner))
    if switch.mode == "ovs" and address.guarded and address.pool_uid is not None:
        # One pool's address: one rule here, and the pool's backends are
        # allowed in GUARD (by MAC and port, owned with each backend's
        # MAC): a rule per address and per backend, not per both.
        from_pool = match_items(**family.sent_from(ip))
        guard = (SetField(REG_GUARD, address.pool_uid), Resubmit(Table.GUARD))
        rules.append(Rule(Table.INGRESS, Ingress.VIP_SOURCE, from_pool, guard, owner=address_owner))
        return rules + _address_neighbour_rules(switch, family, ip, mac)
    for mac_of_backend, port in address.senders:
        sent = {**family.sent_from(ip), "eth_src": mac_of_backend}
        if address.guarded:
            sent["in_port"] = port
        # what a backend sends from the VIP (its replies): counted per backend in REPLIES
        counted = (Resubmit(Table.REPLIES),) if switch.mode == "ovs" else ()
        rules.append(
            Rule(
                Table.INGRESS,
                Ingress.VIP_SOURCE,
                match_items(**sent),
                counted,
                goto=Table.ETH_SRC,
                owner=address_owner,
            )
        )
        if switch.mode == "plain":  # no resubmit: each sender's translated replies, set back here
            rules += _plain_translations(address, sent)
    if switch.mode == "plain" and not address.senders:
        rules += _plain_translations(address, family.sent_from(ip))
    if address.guarded:
        from_anyone = match_items(**family.sent_from(ip))
        rules.append(Rule(Table.INGRESS, Ingress.VIP_SOURCE_GUARD, from_anyone, (), owner=address_owner))
    return rules + _address_neighbour_rules(switch, family, ip, mac)


def _plain_translations(address: AddressPlan, sent: dict) -> list[Rule]:
    """Plain mode: a translated VIP's replies matching ``sent`` (one sender,
    or the address alone) leave from the VIP's port."""
    rules = []
    for ip_proto, backend_port, port in address.translations:
        reply = match_items(**sent, ip_proto=ip_proto, **{L4_SRC[ip_proto]: backend_port})
        back = (SetField(L4_SRC[ip_proto], port),)
        rules.append(
            Rule(Table.INGRESS, Ingress.VIP_SOURCE_PORT, reply, back, goto=Table.ETH_SRC, owner=owner(Kind.ADDRESS))
        )
    return rules


def _address_neighbour_rules(switch: SwitchPlan, family: Family, ip: str, mac: str) -> list[Rule]:
    """Neighbour guard (ARP from the address; IPv6: advertisements of it and
    solicitations from it), neighbour answer (requests for it) and
    catch-all of a VIP address."""
    address_owner = owner(Kind.ADDRESS)
    metered = switch.mode == "ovs" and switch.packet_in_limit
    rules = [
        Rule(
            Table.INGRESS,
            Ingress.VIP_ARP_GUARD,
            match_items(**claim),
            (Output("controller", CONTROLLER_PEEK),),
            meter=LEARN_METER if metered else None,
            owner=address_owner,
        )
        for claim in family.claims(ip)
    ]
    rules += _answers(switch, family, ip, mac, address_owner)
    # IP for the VIP that no VIP serves is dropped, not flooded.
    rules.append(Rule(Table.INGRESS, Ingress.VIP_OTHER, match_items(**family.to(ip)), (), owner=address_owner))
    return rules


def _answers(switch: SwitchPlan, family: Family, ip: str, mac: str, rule_owner: int) -> list[Rule]:
    """The rules that answer neighbour requests for ``ip`` with ``mac``: in
    the switch (Open vSwitch mode) where it can, else by the controller."""
    ask = match_items(**family.asks_for(ip))
    if switch.mode != "ovs" or (family.neighbour_table and not switch.neighbour_answers):
        return [Rule(Table.INGRESS, Ingress.VIP_ARP, ask, (Output("controller"),), owner=rule_owner)]
    rules = [Rule(Table.INGRESS, Ingress.VIP_ARP, ask, family.answer(ip, mac), owner=rule_owner)]
    rules += [  # through the learning meter, as claims are: a flood of them costs the controller a bounded rate
        Rule(
            Table.INGRESS,
            Ingress.VIP_ARP_GUARD,
            match_items(**odd),
            (Output("controller", CONTROLLER_PEEK),),
            meter=LEARN_METER if switch.packet_in_limit else None,
            owner=rule_owner,
        )
        for odd in family.unanswerable(ip)
    ]
    answered = family.answered(ip, mac)
    if answered is not None:
        match, actions = answered
        rules.append(Rule(Table.NEIGHBOUR, Answer.ANSWER, match_items(**match), actions, owner=rule_owner))
    return rules


def vip_rules(switch: SwitchPlan, vip: VipPlan) -> list[Rule]:
    """The entry of one VIP's traffic into the balancing pipeline."""
    vip_owner = owner(Kind.VIP, vip.uid)
    fields = {**family_of(vip.ip).to(vip.ip), "ip_proto": vip.ip_proto}
    priority = Ingress.VIP_PORT
    if vip.port is not None:
        fields[L4_DST[vip.ip_proto]] = vip.port
    else:
        priority = Ingress.VIP_ALL_PORTS
    # a translated VIP: the request goes on (hashed, pinned) to the backend's port
    translate = (SetField(L4_DST[vip.ip_proto], vip.backend_port),) if vip.backend_port is not None else ()
    if switch.mode == "plain":
        return [
            Rule(
                Table.INGRESS,
                priority,
                match_items(**fields),
                translate,
                write_metadata=(vip.pool_uid, 0xFFFFFFFF),
                goto=Table.SLOTS,
                owner=vip_owner,
            )
        ]
    enter, goto = _entry(vip)
    enter = translate + enter
    rules = [Rule(Table.INGRESS, priority, match_items(**fields), enter, goto=goto, owner=vip_owner)]
    bits = vip.n_slots.bit_length() - 1
    if vip.hash == "source_ip":  # hashed in the slow path, once per client address (megaflows match it)
        picks: tuple[Action, ...] = (Multipath("nw_src", vip.n_slots, REG_SLOT, SLOT_BITS),)
    elif vip.ip_proto == 17:  # the hash has no UDP ports: the low slot bits are the client port's
        picks = (
            Move("udp_src", REG_SLOT, UDP_PORT_BITS),
            Move("dp_hash", REG_SLOT, bits - UDP_PORT_BITS, dst_ofs=UDP_PORT_BITS),
        )
        # Only a datagram's first fragment has the ports (read again after
        # the hash's recirculation): every fragment takes the hash bits
        # alone, low bits 0, so all fragments reach one backend.
        hash_only = (Move("dp_hash", REG_SLOT, bits - UDP_PORT_BITS, dst_ofs=UDP_PORT_BITS),)
        rules.append(_decide(vip, hash_only, Decide.FRAGMENT, ip_frag=IP_FRAGMENT))
    else:  # the datapath hashes the 5-tuple; megaflows match hash bits, not connections
        picks = (Move("dp_hash", REG_SLOT, bits),)
    rules.append(_decide(vip, picks))
    if vip.ip_proto == 6:  # the same, for a connection's first packet: its counters are the VIP's new connections
        rules.append(_decide(vip, picks, Decide.COUNT_SYN, tcp_flags=TCP_SYN))
    return rules


def _entry(vip: VipPlan) -> tuple[tuple[Action, ...], int | None]:
    """What a VIP's packet does in INGRESS (Open vSwitch mode): name the VIP
    in a register (and its DSCP value in another, for dscp backends), then
    hash in the datapath (the group) or, for a VIP hashed by client
    address, go straight to DECIDE."""
    named: tuple[Action, ...] = (SetField(REG_VIP, vip.uid),)
    if vip.dscp is not None:
        named += (SetField(REG_DSCP, vip.dscp),)
    if vip.hash == "source_ip":
        return named, Table.DECIDE
    return (*named, Group(HASH_GROUP)), None


def _decide(vip: VipPlan, picks: tuple[Action, ...], priority: int = Decide.SLOT, **fields) -> Rule:
    return Rule(
        Table.DECIDE,
        priority,
        # the protocol is matched again: moving a port's bits needs it
        match_items(eth_type=family_of(vip.ip).eth_type, ip_proto=vip.ip_proto, **{REG_VIP: vip.uid}, **fields),
        (*picks, SetField(REG_POOL, vip.pool_uid), Resubmit(Table.SLOTS)),
        goto=Table.CHOSEN,
        owner=owner(Kind.VIP, vip.uid),
    )


def fragments_rule(vip: VipPlan) -> Rule:
    """UDP fragments to a VIP address enter ``vip`` (``fragment_vip``).
    Open vSwitch ("normal" fragment handling, which the controller sets)
    reads the ports of no fragment, the first included, as 0: a VIP's port
    rule never sees them."""
    enter, goto = _entry(vip)
    match = match_items(**family_of(vip.ip).to(vip.ip), ip_proto=17, ip_frag=IP_FRAGMENT)
    return Rule(Table.INGRESS, Ingress.VIP_FRAGMENT, match, enter, goto=goto, owner=owner(Kind.ADDRESS))


def fragment_vip(vips: list[VipPlan]) -> VipPlan | None:
    """Of the VIPs on one address, the one whose pool UDP fragments to it
    go to: none when a UDP VIP on all ports takes them already, or when the
    UDP VIPs on ports differ in pool or hash (a fragment cannot say which it
    belongs to, so it is dropped like TCP fragments, whose hash would not be
    their connection's)."""
    udp = [vip for vip in vips if vip.ip_proto == 17]
    if not udp or any(vip.port is None for vip in udp):
        return None
    if any(vip.backend_port is not None for vip in udp):
        return None  # a fragment's port cannot be read, so neither translated: dropped
    if len({(vip.pool_uid, vip.hash) for vip in udp}) > 1:
        return None
    return min(udp, key=lambda vip: vip.uid)


def hash_group() -> GroupAdd:
    """The select group of Open vSwitch mode: one bucket, so Open vSwitch's
    default selection method (dp_hash over the symmetric 5-tuple, computed
    in the datapath) hashes and recirculates, and the bucket goes on to
    DECIDE with the hash in ``dp_hash``."""
    return GroupAdd(HASH_GROUP, (Resubmit(Table.DECIDE),))


def slot_rules(
    switch: SwitchPlan,
    pool_uid: int,
    slot: int,
    n_slots: int,
    target: SlotTarget | None,
    protocols: frozenset[int],
    handover: Handover | None,
    families: tuple[Family, ...],
) -> list[Rule]:
    """The rules of one slot of a pool's consistent-hash table.

    Open vSwitch mode, steady: one rule, slot -> backend, no per-connection
    work. During a handover (the slot's backend moved and the old one still
    holds connections) the same one rule also names, in registers, where
    the slot's TCP SYNs go (the new backend; during the hold where new
    connections went before) and where its other TCP packets (and, in the
    UDP window, its datagrams) go (the old backend), and resubmits to
    table MOVED, whose rules, one set per backend of the pool
    (``moved_rules``), send each there and pin its connection by ``learn``.
    A move costs one rule per slot, written again only when what it names
    changes. With the connection tracker, a moved slot's TCP packets have
    rules of their own after the hold (``_tracked_handover``). Plain mode:
    one rule per slot of masked client-address bits, no handovers.
    ``families``: of the pool's VIPs (the tracker's rules, and plain mode's
    slots, match each)."""
    pool_owner = owner(Kind.POOL, pool_uid)
    if switch.mode == "plain":
        if target is None or target.routed:  # routing (dscp backends) needs Open vSwitch mode
            return []
        return [
            Rule(
                Table.SLOTS,
                Slots.SLOT,
                match_items(
                    eth_type=family.eth_type,
                    metadata=pool_uid,
                    **{family.src: family.masked(slot, plain_slot_bits(n_slots))},
                ),
                (SetField("eth_dst", target.mac),),
                goto=Table.ETH_SRC,
                owner=pool_owner,
            )
            for family in families
        ]
    regs = {REG_POOL: pool_uid, REG_SLOT: slot}
    hold = handover is not None and handover.first is not None
    if hold:
        target = handover.first  # new connections keep going where they went, pinned
    sends = _send(target) if target is not None else ()
    # its counter starts again when the backend it sends to changes: the check reads what it carried since
    epoch = target.backend_uid if target is not None else 0
    if handover is None or (handover.old == target and not hold):
        return (
            [Rule(Table.SLOTS, Slots.SLOT, match_items(**regs), sends, owner=pool_owner, epoch=epoch)] if sends else []
        )
    tcp = handover.tcp and 6 in protocols
    tracked = tcp and not hold and switch.handover_tracking == "conntrack"
    names: dict[str, int] = {}
    if tcp and not tracked:
        names[REG_OLDER_TCP] = handover.old.backend_uid
        if target is None:
            names[REG_SYN_TO] = NO_BACKEND  # no backend for new connections: dropped
        elif target.backend_uid != handover.old.backend_uid:
            names[REG_SYN_TO] = target.backend_uid
        # (else a SYN goes where the slot's other TCP packets go, pinned there by the same rule)
    if handover.udp and 17 in protocols:
        names[REG_OLDER_UDP] = handover.old.backend_uid
    actions = sends + tuple(SetField(reg, uid) for reg, uid in sorted(names.items()))
    if names:
        actions += (Resubmit(Table.MOVED),)
    rules = (
        [Rule(Table.SLOTS, Slots.SLOT, match_items(**regs), actions, owner=pool_owner, epoch=epoch)] if actions else []
    )
    if tracked:
        for family in families:
            rules += _tracked_handover(switch, family, regs, target, handover.old, n_slots, pool_owner)
    return rules


def moved_rules(
    switch: SwitchPlan,
    pool_uid: int,
    n_slots: int,
    backends: tuple[SlotTarget, ...],
    protocols: frozenset[int],
    families: tuple[Family, ...],
) -> list[Rule]:
    """A pool's rules of table MOVED (Open vSwitch mode): for each backend,
    where the packets of a moved slot whose rule names it go (``slot_rules``):
    a SYN named for it there, pinned (at the pin limit, where the slot's
    older connections go: table UNPINNED), and an older connection's
    packet named for it there, pinned. The same few rules per backend serve
    every slot that moves, however many."""
    if switch.mode != "ovs":
        return []
    handover_owner = owner(Kind.HANDOVER, pool_uid)
    rules = []
    for family in families:
        tcp = {"eth_type": family.eth_type, "ip_proto": 6}
        for target in backends:
            uid = target.backend_uid
            if 6 in protocols:
                syn = match_items(**tcp, tcp_flags=TCP_SYN, **{REG_SYN_TO: uid})
                pin = _pin(switch, family, 6, target, n_slots, result=REG_LEARNED)
                rules.append(
                    Rule(
                        Table.MOVED,
                        Moved.SYN,
                        syn,
                        (*_send(target), pin, Resubmit(Table.UNPINNED)),
                        owner=handover_owner,
                    )
                )
            for ip_proto, register in ((6, REG_OLDER_TCP), (17, REG_OLDER_UDP)):
                if ip_proto in protocols:
                    older = match_items(eth_type=family.eth_type, ip_proto=ip_proto, **{register: uid})
                    actions = (*_send(target), _pin(switch, family, ip_proto, target, n_slots))
                    rules.append(Rule(Table.MOVED, Moved.OLDER, older, actions, owner=handover_owner))
    if 6 in protocols:
        for target in backends:  # a SYN whose pin the limit refused: where the slot's older connections go
            refused = match_items(**{REG_LEARNED: (0, 1), REG_OLDER_TCP: target.backend_uid})
            rules.append(Rule(Table.UNPINNED, Unpinned.REFUSED, refused, _send(target), owner=handover_owner))
    return rules


def pool_mark(switch: SwitchPlan, pool_uid: int, band: Marks, digest: int) -> list[Rule]:
    """One of a pool's marks (Open vSwitch mode): a flow in MARKS, a table
    no packet reaches, whose metadata carries a digest of what a part of
    the pool's flows were computed from and of their cookies (``band``:
    its slot flows, or its VIPs', their addresses' and its guard's). A
    controller that starts and finds the same digest on the switch need not
    compute those flows again."""
    if switch.mode != "ovs":
        return []
    mark = match_items(metadata=pool_uid)
    return [
        Rule(Table.MARKS, band, mark, write_metadata=(digest, 0xFFFFFFFFFFFFFFFF), owner=owner(Kind.MARK, pool_uid))
    ]


def _tracked_handover(
    switch: SwitchPlan,
    family: Family,
    regs: dict,
    target: SlotTarget | None,
    old: SlotTarget,
    n_slots: int,
    pool_owner: int,
) -> list[Rule]:
    """A moved slot's TCP rules with the connection tracker (after the
    hold): a SYN commits its connection labelled with the new backend and
    goes there; any other packet is looked up and goes on in TRACKED, to the
    backend its label names if that is the slot's new one, else (a
    connection older than the move) to the old backend, pinned there by
    ``learn`` once. New connections cost no slow-path work."""
    syn = match_items(eth_type=family.eth_type, ip_proto=6, tcp_flags=TCP_SYN, **regs)
    opening: tuple[Action, ...] = ()  # no backend for new connections: dropped
    if target is not None:
        opening = (Track(switch.conntrack_zone, label=target.backend_uid), *_send(target))
    rules = [
        Rule(Table.SLOTS, Slots.HANDOVER_SYN, syn, opening, owner=pool_owner),
        Rule(
            Table.SLOTS,
            Slots.HANDOVER,
            match_items(eth_type=family.eth_type, ip_proto=6, **regs),
            (Track(switch.conntrack_zone, table=Table.TRACKED),),
            owner=pool_owner,
        ),
        Rule(
            Table.TRACKED,
            Tracked.UNLABELLED,
            match_items(eth_type=family.eth_type, ip_proto=6, **regs),  # the pin reads the 5-tuple: its prerequisites
            (*_send(old), _pin(switch, family, 6, old, n_slots), Resubmit(Table.CHOSEN)),
            owner=pool_owner,
        ),
    ]
    if target is not None:
        labelled = match_items(eth_type=family.eth_type, ip_proto=6, **regs, ct_label=target.backend_uid)
        # (a resubmit: OpenFlow's goto only goes to later tables)
        rules.append(
            Rule(
                Table.TRACKED,
                Tracked.LABELLED,
                labelled,
                (*_send(target), Resubmit(Table.CHOSEN)),
                owner=pool_owner,
            )
        )
    return rules


def _send(target: SlotTarget) -> tuple[Action, ...]:
    if target.routed:  # CHOSEN routes it (``routed_rules``)
        return (SetField("eth_dst", target.mac), SetField(REG_CHOSEN, 1), SetField(REG_BACKEND, target.backend_uid))
    return (SetField("eth_dst", target.mac), SetField(REG_CHOSEN, 1))


def routed_rules(switch: SwitchPlan, gateway_mac: str, backends: tuple[tuple[int, str, str], ...]) -> list[Rule]:
    """In CHOSEN, for each routed backend (uid, address, forwarding)
    reached through the gateway at ``gateway_mac``, what makes a VIP's
    request a routed one. ``dscp`` (L3DSR): the backend's address written
    over the VIP's, the DSCP that names the VIP (from the VIP's rule), the
    TTL or hop limit down by one; the gateway's MAC is already the
    destination. ``gre`` (as Maglev's): the request whole, out of the
    switch's GRE port to the backend's address (Open vSwitch's tunnel
    routes it, through the same gateway; none without a GRE port), for
    requests to VIPs of either family. Each rule counts the backend's
    requests, and one more of the same rules its new TCP connections
    (SYN), as a backend on the segment has. Owned with the gateway's MAC."""
    if switch.mode != "ovs":
        return []
    rules = []
    host = owner(Kind.HOST)
    for uid, ip, forwarding in backends:
        chosen = {REG_CHOSEN: (1, 1), REG_BACKEND: uid}
        if forwarding == "gre":
            if switch.gre_port is None:
                continue
            actions: tuple[Action, ...] = (SetField("tun_ipv4_dst", ip), Output(switch.gre_port))
            rules.append(
                Rule(Table.CHOSEN, Chosen.ROUTED, match_items(**chosen, eth_dst=gateway_mac), actions, owner=host)
            )
            for family in FAMILIES:  # requests to VIPs of either family
                syn = match_items(
                    **chosen, eth_dst=gateway_mac, eth_type=family.eth_type, ip_proto=6, tcp_flags=TCP_SYN
                )
                rules.append(Rule(Table.CHOSEN, Chosen.ROUTED_SYN, syn, actions, owner=host))
            continue
        family = family_of(ip)
        actions = (SetField(family.dst, ip), Move(REG_DSCP, "ip_dscp", 6), DecTtl())
        match = match_items(**chosen, eth_dst=gateway_mac, eth_type=family.eth_type)
        syn = match_items(**chosen, eth_dst=gateway_mac, eth_type=family.eth_type, ip_proto=6, tcp_flags=TCP_SYN)
        rules.append(Rule(Table.CHOSEN, Chosen.ROUTED, match, actions, goto=Table.ETH_SRC, owner=host))
        rules.append(Rule(Table.CHOSEN, Chosen.ROUTED_SYN, syn, actions, goto=Table.ETH_SRC, owner=host))
    return rules


def _pin(
    switch: SwitchPlan, family: Family, ip_proto: int, target: SlotTarget, n_slots: int, result: str | None = None
) -> LearnPin:
    """Pin the packet's connection (in its pool and slot) to ``target``. The
    pin matches the slot's bits only: when the table doubles, slot i is i or
    i + n, and the pin still holds."""
    return LearnPin(
        table=Table.SLOTS,
        eth_type=family.eth_type,
        addresses=(family.src, family.dst),
        ip_proto=ip_proto,
        cookie=pin_cookie(target.backend_uid),
        idle_timeout=switch.pin_idle_timeout,
        fin_idle_timeout=switch.pin_fin_timeout if ip_proto == 6 else 0,
        flag_reg=REG_CHOSEN,
        priority=Slots.PIN,
        regs=((REG_POOL, 32), (REG_SLOT, n_slots.bit_length() - 1)),
        limit=switch.pin_limit,
        result=result,
        keep=(REG_BACKEND,) if target.routed else (),
    )


def checked(rules: list[Rule]) -> list[Rule]:
    """``rules``, each held to its table's contract, keys unique."""
    keys = set()
    for rule in rules:
        check_rule(rule)
        if rule.key in keys:
            raise ValueError(f"two rules with one key: {rule.key}")
        keys.add(rule.key)
    return rules
