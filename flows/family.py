"""What is particular to one IP version, in one place: the address seam.

The pipeline, the controller's own frames and the model ask a ``Family``
for everything that differs between IPv4 and IPv6 instead of spelling it
out: how an address is written and checked, its Ethernet type and match
fields, the neighbour protocol (ARP for IPv4: its messages built and read
by the controller, answered in the switch by rewriting the request), the
ICMP message that path MTU discovery needs, and the frame codec for health
probes. ``IPV4`` and ``IPV6`` implement the same interface; ``family_of``
finds an address's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ryu_dsr.flows import frames
from ryu_dsr.flows.rules import Action, MatchValue, Move, Output, Resubmit, SetField

ARP_REQUEST = 1
ARP_REPLY = 2


@dataclass(frozen=True)
class Neighbour:
    """A neighbour protocol message the controller reads: who asks for or
    tells whom (ARP's request and reply, IPv6's solicitation and
    advertisement)."""

    request: bool
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str


class Ipv4:
    """IPv4, with ARP as its neighbour protocol."""

    name = "IPv4"
    neighbour_name = "ARP"
    version = 4
    eth_type = frames.ETH_IP
    neighbour_eth_type = frames.ETH_ARP
    src = "ipv4_src"  # the OXM fields of a packet's addresses
    dst = "ipv4_dst"
    neighbour_fields = frozenset({"arp_op", "arp_spa", "arp_tpa"})  # what the switch matches of ARP
    icmp_fields = frozenset({"icmpv4_type", "icmpv4_code"})
    address_fields = ("arp_spa", "arp_tpa", "ipv4_dst", "ipv4_src")  # where a VIP address's rule names it
    bits = 32
    unspecified = "0.0.0.0"
    neighbour_table = False  # whether an answer in the switch ends in the NEIGHBOUR table

    # -- addresses --

    def address(self, value: str) -> str:
        """``value`` as one canonical text, or ValueError naming the rule."""
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 address") from None
        if address.is_multicast or address.is_unspecified or address.is_loopback or str(address) == "255.255.255.255":
            raise ValueError(f"{value} is not a unicast host address")
        return str(address)

    def vip_mac(self, ip: str) -> str:
        """A locally administered unicast MAC derived from a VIP address."""
        return "02:d5:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)

    def masked(self, value: int, bits: int) -> tuple[str, str]:
        """The (address, mask) matching the low ``bits`` bits of an address equal to ``value``."""
        return _ipv4((value) & ((1 << bits) - 1)), _ipv4((1 << bits) - 1)

    def low_bits(self, address: str) -> int:
        return int(ipaddress.IPv4Address(address))

    # -- in the switch --

    def to(self, ip: str) -> dict[str, MatchValue]:
        """Match fields of IP to ``ip``."""
        return {"eth_type": self.eth_type, self.dst: ip}

    def sent_from(self, ip: str) -> dict[str, MatchValue]:
        """Match fields of IP from ``ip``."""
        return {"eth_type": self.eth_type, self.src: ip}

    def too_big(self, ip: str) -> dict[str, MatchValue]:
        """ICMP "fragmentation needed" sent to ``ip`` (path MTU discovery)."""
        return {"eth_type": self.eth_type, "ip_proto": 1, self.dst: ip, "icmpv4_type": 3, "icmpv4_code": 4}

    def asks_for(self, ip: str) -> dict[str, MatchValue]:
        """A neighbour request for ``ip`` (ARP who-has)."""
        return {"eth_type": frames.ETH_ARP, "arp_op": ARP_REQUEST, "arp_tpa": ip}

    def claims(self, ip: str) -> tuple[dict[str, MatchValue], ...]:
        """Neighbour messages that speak for ``ip`` (ARP from it)."""
        return ({"eth_type": frames.ETH_ARP, "arp_spa": ip},)

    def unanswerable(self, ip: str) -> tuple[dict[str, MatchValue], ...]:
        """Neighbour requests for ``ip`` the switch cannot answer itself
        (none for ARP)."""
        return ()

    def answered(self, ip: str, mac: str) -> tuple[dict[str, MatchValue], tuple[Action, ...]] | None:
        """The NEIGHBOUR table's end of an answer (none for ARP)."""
        return None

    def answer(self, ip: str, mac: str) -> tuple[Action, ...]:
        """Turn a neighbour request for ``ip`` into the answer that ``ip`` is
        at ``mac``, in the switch, and send it back where it came from."""
        return (
            Move("eth_src", "eth_dst", 48),
            SetField("eth_src", mac),
            SetField("arp_op", ARP_REPLY),
            Move("arp_sha", "arp_tha", 48),
            Move("arp_spa", "arp_tpa", 32),
            SetField("arp_sha", mac),
            SetField("arp_spa", ip),
            Output("in_port"),
        )

    # -- the controller's own frames --

    def probe(self, probe_mac: str, ip: str, mac: str = frames.BROADCAST) -> bytes:
        """Who has ``ip`` (to ``mac``: a check of one host), from no address
        (an RFC 5227 probe): the controller needs no address on the data
        network, and Linux answers it with ``arp_ignore=1`` as long as the
        target is on the receiving interface."""
        return frames.build_arp(ARP_REQUEST, probe_mac, mac, probe_mac, self.unspecified, "00:00:00:00:00:00", ip)

    def neighbour(self, frame: bytes) -> Neighbour | None:
        arp = frames.parse_arp(frame)
        if arp is None or arp.op not in (ARP_REQUEST, ARP_REPLY):
            return None
        return Neighbour(arp.op == ARP_REQUEST, arp.sha, arp.spa, arp.tha, arp.tpa)

    def reply(self, request: Neighbour, mac: str) -> bytes:
        """The answer to ``request``: its target is at ``mac``."""
        return frames.build_arp(
            ARP_REPLY, mac, request.sender_mac, mac, request.target_ip, request.sender_mac, request.sender_ip
        )

    def tcp_frame(self, segment: frames.Tcp, tos: int = 0) -> bytes:
        """A TCP segment's frame, its traffic class ``tos`` (DSCP << 2)."""
        return frames.build_tcp(segment, tos=tos)

    def tcp(self, frame: bytes) -> frames.Tcp | None:
        return frames.parse_tcp(frame)

    def probe_source(self, probe_mac: str, probe_ip: str | None) -> str | None:
        """Where the controller's probes of this family come from: its
        address in ``probe_ip`` (one per family, comma separated); IPv4's
        TCP and HTTP checks need it."""
        return next((ip for ip in (probe_ip or "").split(",") if ip and (":" in ip) == (self.version == 6)), None)


def _ipv4(value: int) -> str:
    return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))


class Ipv6(Ipv4):
    """IPv6, with Neighbor Discovery (RFC 4861) as its neighbour protocol.

    The switch answers a Neighbor Solicitation for a VIP in two steps, as
    OpenDaylight's responder does: in INGRESS the solicitation becomes an
    advertisement (type, flags, option type, addresses), and a resubmit to
    NEIGHBOUR, whose rule matches it as an advertisement (the target
    link-layer option's prerequisite), writes the option and sends it
    back. Open vSwitch computes the ICMPv6 checksum again. Solicitations it
    cannot answer so (duplicate address detection from ``::``, or no
    source link-layer option to turn into the target's) go to the
    controller."""

    name = "IPv6"
    neighbour_name = "Neighbor Discovery"
    version = 6
    eth_type = frames.ETH_IP6
    neighbour_eth_type = frames.ETH_IP6
    src = "ipv6_src"
    dst = "ipv6_dst"
    neighbour_fields = frozenset({"icmpv6_type", "ipv6_nd_target", "ipv6_nd_sll"})
    icmp_fields = frozenset({"icmpv6_type", "icmpv6_code"})
    address_fields = ("ipv6_nd_target", "ipv6_dst", "ipv6_src")
    bits = 128
    unspecified = "::"
    neighbour_table = True

    def address(self, value: str) -> str:
        try:
            address = ipaddress.IPv6Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv6 address") from None
        if address.ipv4_mapped is not None:
            raise ValueError(f"{value} is an IPv4-mapped address: write the IPv4 address itself")
        if address.is_link_local:
            raise ValueError(f"{value} is a link-local address: a VIP or backend needs a global or unique local one")
        if address.is_multicast or address.is_unspecified or address.is_loopback:
            raise ValueError(f"{value} is not a unicast host address")
        if address.scope_id:
            raise ValueError(f"{value} has a zone: write the address alone")
        return str(address)

    def vip_mac(self, ip: str) -> str:
        """Locally administered, unicast, from the address's low 32 bits
        (unique among VIPs of one /96)."""
        return "02:d6:" + ":".join(f"{b:02x}" for b in ipaddress.IPv6Address(ip).packed[12:])

    def masked(self, value: int, bits: int) -> tuple[str, str]:
        mask = (1 << bits) - 1
        return str(ipaddress.IPv6Address(value & mask)), str(ipaddress.IPv6Address(mask))

    def low_bits(self, address: str) -> int:
        return int(ipaddress.IPv6Address(address))

    def too_big(self, ip: str) -> dict[str, MatchValue]:
        """ICMPv6 Packet Too Big sent to ``ip``."""
        return {"eth_type": self.eth_type, "ip_proto": frames.ICMPV6, self.dst: ip, "icmpv6_type": 2}

    def _nd(self, kind: int, **fields: MatchValue) -> dict[str, MatchValue]:
        return {"eth_type": self.eth_type, "ip_proto": frames.ICMPV6, "icmpv6_type": kind, **fields}

    def asks_for(self, ip: str) -> dict[str, MatchValue]:
        return self._nd(frames.ND_SOLICIT, ipv6_nd_target=ip)

    def claims(self, ip: str) -> tuple[dict[str, MatchValue], ...]:
        """Advertisements for ``ip``, and solicitations from it."""
        return (
            self._nd(frames.ND_ADVERT, ipv6_nd_target=ip),
            self._nd(frames.ND_SOLICIT, ipv6_src=ip),
        )

    def unanswerable(self, ip: str) -> tuple[dict[str, MatchValue], ...]:
        """Solicitations for ``ip`` without a source link-layer option: those
        of duplicate address detection (from ``::``, which must not carry
        one) and the rare unicast ones."""
        return (self._nd(frames.ND_SOLICIT, ipv6_nd_target=ip, ipv6_nd_sll="00:00:00:00:00:00"),)

    def answer(self, ip: str, mac: str) -> tuple[Action, ...]:
        return (
            SetField("icmpv6_type", frames.ND_ADVERT),
            SetField("nd_reserved", frames.NA_SOLICITED | frames.NA_OVERRIDE),
            SetField("nd_options_type", frames.ND_TARGET_LL),
            Move("eth_src", "eth_dst", 48),
            SetField("eth_src", mac),
            Move("ipv6_src", "ipv6_dst", 128),
            SetField("ipv6_src", ip),
            Resubmit(NEIGHBOUR_TABLE),
        )

    def answered(self, ip: str, mac: str) -> tuple[dict[str, MatchValue], tuple[Action, ...]]:
        match = self._nd(frames.ND_ADVERT, ipv6_nd_target=ip)
        return match, (SetField("ipv6_nd_tll", mac), Output("in_port"))

    def probe(self, probe_mac: str, ip: str, mac: str | None = None) -> bytes:
        """A solicitation for ``ip`` (to ``mac``: a check of one host; else
        to its solicited-node group) from the link-local address of
        ``probe_mac``: always valid on the link, so the controller needs no
        address there, and Linux answers it with a unicast advertisement."""
        dst = frames.solicited_node(ip) if mac is None or mac == frames.BROADCAST else ip
        eth_dst = frames.multicast_mac(dst) if mac is None or mac == frames.BROADCAST else mac
        return frames.build_nd(
            frames.Nd(
                probe_mac, eth_dst, frames.link_local(probe_mac), dst, 255, frames.ND_SOLICIT, 0, ip, probe_mac, True
            )
        )

    def neighbour(self, frame: bytes) -> Neighbour | None:
        nd = frames.parse_nd(frame)
        if nd is None or nd.hop_limit != 255 or not nd.checksum_ok:
            return None  # RFC 4861 7.1: not from the link, or damaged
        if nd.type == frames.ND_SOLICIT:
            return Neighbour(True, nd.link_layer or nd.eth_src, nd.src, "00:00:00:00:00:00", nd.target)
        return Neighbour(False, nd.link_layer or nd.eth_src, nd.target, nd.eth_dst, nd.dst)

    def reply(self, request: Neighbour, mac: str) -> bytes:
        """The advertisement that ``request``'s target is at ``mac``: to the
        asker, solicited; to all nodes, unsolicited, when the asker is
        testing the address for itself (duplicate address detection: the
        address is taken)."""
        dad = request.sender_ip == self.unspecified
        return frames.build_nd(
            frames.Nd(
                mac,
                frames.multicast_mac(frames.ALL_NODES) if dad else request.sender_mac,
                request.target_ip,
                frames.ALL_NODES if dad else request.sender_ip,
                255,
                frames.ND_ADVERT,
                frames.NA_OVERRIDE | (0 if dad else frames.NA_SOLICITED),
                request.target_ip,
                mac,
                True,
            )
        )

    def tcp_frame(self, segment: frames.Tcp, tos: int = 0) -> bytes:
        return frames.build_tcp6(segment, tclass=tos)

    def tcp(self, frame: bytes) -> frames.Tcp | None:
        return frames.parse_tcp6(frame)

    def probe_source(self, probe_mac: str, probe_ip: str | None) -> str:
        """Where the controller's probes of this family come from: an IPv6
        address in ``probe_ip``, else ``probe_mac``'s link-local address
        (enough on the segment; not routed, so backends behind a router
        need the former)."""
        return super().probe_source(probe_mac, probe_ip) or frames.link_local(probe_mac)


NEIGHBOUR_TABLE = 11  # flows.pipeline's Table.NEIGHBOUR (the pipeline imports this module)

IPV4 = Ipv4()
IPV6 = Ipv6()
FAMILIES: tuple[Ipv4, ...] = (IPV4, IPV6)
Family = Ipv4  # the interface every family implements


def family_of(address: str) -> Family:
    """The family of an address written as text."""
    return IPV6 if ":" in address else IPV4


def neighbour_of(frame: bytes) -> tuple[Family, Neighbour] | None:
    """The neighbour protocol message a frame carries, with its family."""
    for family in FAMILIES:
        message = family.neighbour(frame)
        if message is not None:
            return family, message
    return None
