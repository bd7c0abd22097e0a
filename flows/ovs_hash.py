"""The two hashes by which Open vSwitch picks a VIP's slot, computed as
Open vSwitch 3.x computes them, so that the controller can say which slot
a connection takes without asking the switch.

- The select group's ``dp_hash``: the datapath's ``hash(sym_l4(0))``
  action, ``flow_hash_symmetric_l3l4(flow, 0, false)`` in ``lib/flow.c``
  (the two addresses XORed, the protocol, and for TCP of an unfragmented
  packet the two ports XORed; UDP ports are not in it), with the mhash
  functions of ``lib/hash.h`` that a build without SSE 4.2 uses (Debian's
  packages are built for baseline amd64).
- ``multipath(nw_src, basis, modulo_n, ...)``: ``flow_hash_fields`` with
  ``NX_HASH_FIELDS_NW_SRC``, Bob Jenkins' lookup3 over the source address
  (``lib/jhash.c``), modulo the number of links.

Structures are read as Open vSwitch reads them on a little-endian host:
addresses and ports are stored in network order and loaded as host words.
"""

from __future__ import annotations

import ipaddress

M32 = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & M32


def _mhash_add(hash_: int, data: int) -> int:
    data &= M32
    if data:
        data = (data * 0xCC9E2D51) & M32
        data = _rot(data, 15)
        data = (data * 0x1B873593) & M32
        hash_ ^= data
    hash_ = _rot(hash_, 13)
    return (hash_ * 5 + 0xE6546B64) & M32


def _mhash_finish(hash_: int) -> int:
    hash_ ^= hash_ >> 16
    hash_ = (hash_ * 0x85EBCA6B) & M32
    hash_ ^= hash_ >> 13
    hash_ = (hash_ * 0xC2B2AE35) & M32
    return hash_ ^ (hash_ >> 16)


def _word(data: bytes) -> int:
    """Bytes in network order, loaded as a little-endian host's word."""
    return int.from_bytes(data, "little")


def symmetric_l4(packet: dict) -> int:
    """The ``dp_hash`` Open vSwitch's datapath gives an IP packet (basis 0)."""
    hash_ = 0
    if "ipv6_src" in packet:
        a = ipaddress.IPv6Address(packet["ipv6_src"]).packed
        b = ipaddress.IPv6Address(packet["ipv6_dst"]).packed
        for i in (0, 8):
            word = _word(a[i : i + 8]) ^ _word(b[i : i + 8])
            hash_ = _mhash_add(_mhash_add(hash_, word & M32), word >> 32)
    else:
        a = ipaddress.IPv4Address(packet["ipv4_src"]).packed
        b = ipaddress.IPv4Address(packet["ipv4_dst"]).packed
        hash_ = _mhash_add(hash_, _word(a) ^ _word(b))
    proto = packet.get("ip_proto", 0)
    hash_ = _mhash_add(hash_, proto)
    if proto == 6 and not packet.get("ip_frag", 0) & 1:
        src = packet.get("tcp_src", 0).to_bytes(2, "big")
        dst = packet.get("tcp_dst", 0).to_bytes(2, "big")
        hash_ = _mhash_add(hash_, _word(src) ^ _word(dst))
    return _mhash_finish(hash_)


_MIX = (4, 6, 8, 16, 19, 4)  # lookup3's mix: the rotations of its six steps
_FINAL = (14, 11, 25, 16, 4, 14, 24)  # and of its final's seven


def _jhash_mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    """Step i: x -= z; x ^= rot(z, k); z += y, with (x, y, z) turning over (a, b, c)."""
    r = [a, b, c]
    for i, k in enumerate(_MIX):
        x, y, z = i % 3, (i + 1) % 3, (i + 2) % 3
        r[x] = ((r[x] - r[z]) & M32) ^ _rot(r[z], k)
        r[z] = (r[z] + r[y]) & M32
    return r[0], r[1], r[2]


def _jhash_final(a: int, b: int, c: int) -> int:
    """Step i: t ^= s; t -= rot(s, k), with t turning over c, a, b and s the one before."""
    r = [a, b, c]
    for i, k in enumerate(_FINAL):
        t, s = (i + 2) % 3, (i + 1) % 3
        r[t] = ((r[t] ^ r[s]) - _rot(r[s], k)) & M32
    return r[2]


def jhash_bytes(data: bytes, basis: int) -> int:
    """lookup3's hash of ``data`` (Open vSwitch's ``jhash_bytes``)."""
    a = b = c = (0xDEADBEEF + len(data) + basis) & M32
    while len(data) >= 12:
        a = (a + _word(data[0:4])) & M32
        b = (b + _word(data[4:8])) & M32
        c = (c + _word(data[8:12])) & M32
        a, b, c = _jhash_mix(a, b, c)
        data = data[12:]
    if data:
        tail = data.ljust(12, b"\0")
        a = (a + _word(tail[0:4])) & M32
        b = (b + _word(tail[4:8])) & M32
        c = (c + _word(tail[8:12])) & M32
        c = _jhash_final(a, b, c)
    return c


def source_hash(packet: dict, basis: int, n_links: int) -> int:
    """The link ``multipath(nw_src, basis, modulo_n, n_links, ...)`` picks."""
    source = packet["ipv6_src"] if "ipv6_src" in packet else packet["ipv4_src"]
    return jhash_bytes(ipaddress.ip_address(source).packed, basis) % n_links
