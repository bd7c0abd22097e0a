"""The frame codec: the few frames the controller builds and reads itself
(Ethernet, ARP, and IPv4 carrying TCP for health probes), as bytes. Which
of them an IP version uses is for its ``family`` to say."""

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


def build_tcp(segment: Tcp, ttl: int = 64) -> bytes:
    """An Ethernet frame carrying one TCP segment, checksums computed."""
    src, dst = ipaddress.IPv4Address(segment.src).packed, ipaddress.IPv4Address(segment.dst).packed
    window = 65535
    header = _TCP.pack(segment.sport, segment.dport, segment.seq, segment.ack, 5 << 4, segment.flags, window, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(header) + len(segment.payload))
    checksum = _checksum(pseudo + header + segment.payload)
    header = header[:16] + struct.pack("!H", checksum) + header[18:]
    total = _IP.size + len(header) + len(segment.payload)
    ip = _IP.pack(0x45, 0, total, 0, 0x4000, ttl, 6, 0, src, dst)
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
    if len(data) < start + _TCP.size:
        return None
    sport, dport, seq, ack, offset, flags, _win, _sum, _urg = _TCP.unpack_from(data, start)
    end = min(len(data), _ETH.size + total)
    payload = data[start + (offset >> 4) * 4 : end]
    return Tcp(
        eth.src,
        eth.dst,
        str(ipaddress.IPv4Address(src)),
        str(ipaddress.IPv4Address(dst)),
        sport,
        dport,
        seq,
        ack,
        flags,
        bytes(payload),
    )
