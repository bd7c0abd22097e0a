"""The frame codec: the few frames the controller builds and reads itself
(Ethernet, ARP, IPv6 Neighbor Discovery, and IPv4 or IPv6 carrying TCP for
health probes), as bytes. Which of them an IP version uses is for its
``family`` to say."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

BROADCAST = "ff:ff:ff:ff:ff:ff"
ETH_ARP = 0x0806
_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


@dataclass(frozen=True)
class Ethernet:
    dst: str
    src: str
    ethertype: int


@dataclass(frozen=True)
class Arp:
    op: int
    sha: str
    spa: str
    tha: str
    tpa: str


def parse_ethernet(data: bytes) -> Ethernet | None:
    if len(data) < _ETH.size:
        return None
    dst, src, ethertype = _ETH.unpack_from(data)
    return Ethernet(mac_text(dst), mac_text(src), ethertype)


def parse_arp(data: bytes) -> Arp | None:
    """The ARP body of an untagged Ethernet frame, or None."""
    eth = parse_ethernet(data)
    if eth is None or eth.ethertype != ETH_ARP or len(data) < _ETH.size + _ARP.size:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(data, _ETH.size)
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4):
        return None
    return Arp(op, mac_text(sha), str(ipaddress.IPv4Address(spa)), mac_text(tha), str(ipaddress.IPv4Address(tpa)))


def build_arp(op: int, eth_src: str, eth_dst: str, sha: str, spa: str, tha: str, tpa: str) -> bytes:
    frame = _ETH.pack(mac_bytes(eth_dst), mac_bytes(eth_src), ETH_ARP)
    frame += _ARP.pack(
        1,
        0x0800,
        6,
        4,
        op,
        mac_bytes(sha),
        ipaddress.IPv4Address(spa).packed,
        mac_bytes(tha),
        ipaddress.IPv4Address(tpa).packed,
    )
    return frame.ljust(60, b"\x00")


# --- IPv4 and TCP, for the controller's own health probes ----------------------

ETH_IP = 0x0800
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")


@dataclass(frozen=True)
class Tcp:
    eth_src: str
    eth_dst: str
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _tcp_header(segment: Tcp, pseudo: bytes) -> bytes:
    """A TCP header with its checksum over ``pseudo`` (the IP version's
    pseudo-header, less the length and protocol), header and payload."""
    window = 65535
    header = _TCP.pack(segment.sport, segment.dport, segment.seq, segment.ack, 5 << 4, segment.flags, window, 0, 0)
    length = len(header) + len(segment.payload)
    if len(pseudo) == 8:  # IPv4: zero, protocol, length (16 bits)
        pseudo += struct.pack("!BBH", 0, 6, length)
    else:  # IPv6: length (32 bits), zeros, next header
        pseudo += struct.pack("!I3xB", length, 6)
    checksum = _checksum(pseudo + header + segment.payload)
    return header[:16] + struct.pack("!H", checksum) + header[18:]


def build_tcp(segment: Tcp, ttl: int = 64, tos: int = 0) -> bytes:
    """An Ethernet frame carrying one TCP segment over IPv4, checksums computed."""
    src, dst = ipaddress.IPv4Address(segment.src).packed, ipaddress.IPv4Address(segment.dst).packed
    header = _tcp_header(segment, src + dst)
    total = _IP.size + len(header) + len(segment.payload)
    ip = _IP.pack(0x45, tos, total, 0, 0x4000, ttl, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    frame = _ETH.pack(mac_bytes(segment.eth_dst), mac_bytes(segment.eth_src), ETH_IP) + ip + header + segment.payload
    return frame.ljust(60, b"\x00")


def parse_tcp(data: bytes) -> Tcp | None:
    """The TCP segment of an untagged Ethernet/IPv4 frame, or None."""
    eth = parse_ethernet(data)
    if eth is None or eth.ethertype != ETH_IP or len(data) < _ETH.size + _IP.size:
        return None
    version_ihl, _tos, total, _id, _frag, _ttl, proto, _sum, src, dst = _IP.unpack_from(data, _ETH.size)
    ihl = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or proto != 6:
        return None
    start = _ETH.size + ihl
    body = data[start : min(len(data), _ETH.size + total)]
    return _tcp_of(eth, str(ipaddress.IPv4Address(src)), str(ipaddress.IPv4Address(dst)), body)


def _tcp_of(eth: Ethernet, src: str, dst: str, body: bytes) -> Tcp | None:
    """The segment whose TCP header and payload are ``body``, or None."""
    if len(body) < _TCP.size:
        return None
    sport, dport, seq, ack, offset, flags, _win, _sum, _urg = _TCP.unpack_from(body)
    return Tcp(eth.src, eth.dst, src, dst, sport, dport, seq, ack, flags, bytes(body[(offset >> 4) * 4 :]))


# --- IPv6: Neighbor Discovery (RFC 4861) and TCP, for the controller's own frames ---

ETH_IP6 = 0x86DD
ICMPV6 = 58
ND_SOLICIT = 135
ND_ADVERT = 136
ND_SOURCE_LL = 1  # option types
ND_TARGET_LL = 2
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80000000, 0x40000000, 0x20000000
ALL_NODES = "ff02::1"
_IP6 = struct.Struct("!IHBB16s16s")
_ND = struct.Struct("!BBHI16s")  # type, code, checksum, reserved (flags), target


@dataclass(frozen=True)
class Nd:
    """A Neighbor Solicitation or Advertisement."""

    eth_src: str
    eth_dst: str
    src: str  # the IPv6 source ("::" for duplicate address detection)
    dst: str
    hop_limit: int
    type: int  # ND_SOLICIT or ND_ADVERT
    flags: int  # an advertisement's R, S, O bits (the 32-bit word)
    target: str
    link_layer: str | None  # the source (solicitation) or target (advertisement) link-layer option
    checksum_ok: bool


def solicited_node(ip: str) -> str:
    """The solicited-node multicast address of ``ip``: ff02::1:ff00:0/104
    with the address's low 24 bits."""
    low = ipaddress.IPv6Address(ip).packed[13:]
    return str(ipaddress.IPv6Address(bytes.fromhex("ff0200000000000000000001ff") + low))


def multicast_mac(ip: str) -> str:
    """The Ethernet address of an IPv6 multicast group (33:33 and its low 32 bits)."""
    return mac_text(b"\x33\x33" + ipaddress.IPv6Address(ip).packed[12:])


def link_local(mac: str) -> str:
    """The modified EUI-64 link-local address of ``mac`` (RFC 4291)."""
    raw = bytearray(mac_bytes(mac))
    raw[0] ^= 0x02
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + bytes(raw[:3]) + b"\xff\xfe" + bytes(raw[3:])))


def _ip6(src: bytes, dst: bytes, next_header: int, payload: bytes, hop_limit: int, tclass: int = 0) -> bytes:
    return _IP6.pack(6 << 28 | tclass << 20, len(payload), next_header, hop_limit, src, dst) + payload


def _icmpv6_checksum(src: bytes, dst: bytes, message: bytes) -> int:
    return _checksum(src + dst + struct.pack("!I3xB", len(message), ICMPV6) + message)


def build_nd(message: Nd) -> bytes:
    """An Ethernet frame carrying one Neighbor Solicitation or Advertisement
    (hop limit as given: 255 for a valid one), its ICMPv6 checksum computed."""
    src, dst = ipaddress.IPv6Address(message.src).packed, ipaddress.IPv6Address(message.dst).packed
    body = _ND.pack(message.type, 0, 0, message.flags, ipaddress.IPv6Address(message.target).packed)
    if message.link_layer is not None:
        kind = ND_SOURCE_LL if message.type == ND_SOLICIT else ND_TARGET_LL
        body += struct.pack("!BB", kind, 1) + mac_bytes(message.link_layer)
    body = body[:2] + struct.pack("!H", _icmpv6_checksum(src, dst, body)) + body[4:]
    ip = _ip6(src, dst, ICMPV6, body, message.hop_limit)
    return _ETH.pack(mac_bytes(message.eth_dst), mac_bytes(message.eth_src), ETH_IP6) + ip


def _ip6_payload(data: bytes, next_header: int) -> tuple[Ethernet, bytes, bytes, int, bytes] | None:
    """(Ethernet, source, destination, hop limit, payload) of an untagged
    IPv6 frame whose first header is ``next_header``, or None."""
    eth = parse_ethernet(data)
    if eth is None or eth.ethertype != ETH_IP6 or len(data) < _ETH.size + _IP6.size:
        return None
    word, length, header, hop_limit, src, dst = _IP6.unpack_from(data, _ETH.size)
    if word >> 28 != 6 or header != next_header:
        return None
    start = _ETH.size + _IP6.size
    return eth, src, dst, hop_limit, bytes(data[start : start + length])


def parse_nd(data: bytes) -> Nd | None:
    """The Neighbor Solicitation or Advertisement of a frame, or None."""
    found = _ip6_payload(data, ICMPV6)
    if found is None:
        return None
    eth, src, dst, hop_limit, body = found
    if len(body) < _ND.size or body[0] not in (ND_SOLICIT, ND_ADVERT) or body[1] != 0:
        return None
    kind, _code, _sum, flags, target = _ND.unpack_from(body)
    link_layer = None
    offset = _ND.size
    while offset + 2 <= len(body):
        option, units = body[offset], body[offset + 1]
        if units == 0:
            return None  # RFC 4861 7.1.1: an option of length 0 is invalid
        if option == (ND_SOURCE_LL if kind == ND_SOLICIT else ND_TARGET_LL) and units == 1:
            link_layer = mac_text(body[offset + 2 : offset + 8])
        offset += units * 8
    return Nd(
        eth.src,
        eth.dst,
        str(ipaddress.IPv6Address(src)),
        str(ipaddress.IPv6Address(dst)),
        hop_limit,
        kind,
        flags if kind == ND_ADVERT else 0,
        str(ipaddress.IPv6Address(target)),
        link_layer,
        _icmpv6_checksum(src, dst, body) == 0,
    )


def build_tcp6(segment: Tcp, hop_limit: int = 64, tclass: int = 0) -> bytes:
    """An Ethernet frame carrying one TCP segment over IPv6, checksum computed."""
    src, dst = ipaddress.IPv6Address(segment.src).packed, ipaddress.IPv6Address(segment.dst).packed
    header = _tcp_header(segment, src + dst)
    ip = _ip6(src, dst, 6, header + segment.payload, hop_limit, tclass)
    frame = _ETH.pack(mac_bytes(segment.eth_dst), mac_bytes(segment.eth_src), ETH_IP6) + ip
    return frame.ljust(60, b"\x00")


def parse_tcp6(data: bytes) -> Tcp | None:
    """The TCP segment of an untagged Ethernet/IPv6 frame (no extension
    headers: the controller's probes and their answers have none), or None."""
    found = _ip6_payload(data, 6)
    if found is None:
        return None
    eth, src, dst, _hops, body = found
    return _tcp_of(eth, str(ipaddress.IPv6Address(src)), str(ipaddress.IPv6Address(dst)), body)
