"""The few packets the controller builds and reads itself: Ethernet and ARP."""

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


def arp_probe(probe_mac: str, target_ip: str) -> bytes:
    """Who-has ``target_ip``, sent from 0.0.0.0 (an RFC 5227 probe): the
    controller needs no address on the data network, and Linux answers it
    with ``arp_ignore=1`` as long as the target is on the receiving interface."""
    return build_arp(1, probe_mac, BROADCAST, probe_mac, "0.0.0.0", "00:00:00:00:00:00", target_ip)


def arp_reply(request: Arp, mac: str) -> bytes:
    """The reply to ``request`` saying its target address is at ``mac``."""
    return build_arp(2, mac, request.sha, mac, request.tpa, request.sha, request.spa)
