"""What is particular to one IP version, in one place: the address seam.

The pipeline, the controller's own frames and the model ask a ``Family``
for everything that differs between IPv4 and IPv6 instead of spelling it
out: how an address is written and checked, its Ethernet type and match
fields, the neighbour protocol (ARP for IPv4: its messages built and read
by the controller, answered in the switch by rewriting the request), the
ICMP message that path MTU discovery needs, and the frame codec for health
probes. ``IPV4`` is the one family today; a second is a second
implementation of the same interface, found by ``family_of``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ryu_dsr.flows import frames
from ryu_dsr.flows.rules import Action, MatchValue, Move, Output, SetField

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

    def claims(self, ip: str) -> dict[str, MatchValue]:
        """Any neighbour message that speaks for ``ip`` (ARP from it)."""
        return {"eth_type": frames.ETH_ARP, "arp_spa": ip}

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

    def tcp_frame(self, segment: frames.Tcp) -> bytes:
        return frames.build_tcp(segment)

    def tcp(self, frame: bytes) -> frames.Tcp | None:
        return frames.parse_tcp(frame)


def _ipv4(value: int) -> str:
    return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))


IPV4 = Ipv4()
FAMILIES: tuple[Ipv4, ...] = (IPV4,)
Family = Ipv4  # the interface every family implements


def family_of(address: str) -> Family:
    """The family of an address written as text (IPv4 is all there is yet)."""
    return IPV4


def neighbour_of(frame: bytes) -> tuple[Family, Neighbour] | None:
    """The neighbour protocol message a frame carries, with its family."""
    for family in FAMILIES:
        message = family.neighbour(frame)
        if message is not None:
            return family, message
    return None
