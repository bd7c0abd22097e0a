"""The pipeline as data: tables, priority bands, registers and cookie owners.

Open vSwitch mode (Nicira extensions)::

    INGRESS --VIP traffic--> resubmit(PINS) --> DECIDE --unpinned--> SLOTS --> ETH_SRC --> ETH_DST
       |                                           |pinned----------------------^
       +--ARP for a VIP: answered in the switch
       +--everything else---------------------------------------------------> ETH_SRC --> ETH_DST

Plain OpenFlow 1.3 mode::

    INGRESS --VIP traffic: write_metadata(pool)--> SLOTS (masked ipv4_src bits) --> ETH_SRC --> ETH_DST
       +--ARP for a VIP: to the controller, which answers
"""

from __future__ import annotations

from enum import IntEnum


class Table(IntEnum):
    INGRESS = 0
    PINS = 1  # learned 5-tuple pins; only ever looked up by resubmit
    DECIDE = 2
    SLOTS = 3
    ETH_SRC = 4
    ETH_DST = 5


class Priority(IntEnum):
    """Named priority bands (higher wins)."""

    CONTROL = 400  # ARP replies to the controller's probes
    VIP_ARP_GUARD = 310  # ARP that claims a VIP's address from outside
    VIP_ARP = 300  # ARP requests for a VIP
    VIP_PORT = 200  # VIP traffic on one port
    VIP_ALL_PORTS = 190  # VIP traffic on all ports of a protocol
    VIP_OTHER = 150  # other IP traffic for a VIP address: dropped
    PINNED = 200
    SLOT = 100
    PIN = 100
    HOST = 100
    FLOOD = 10
    MISS = 0


# Registers (Open vSwitch mode).
REG_SLOT = "reg0"  # slot number computed by multipath
REG_VIP = "reg1"  # uid of the VIP being served
REG_PINNED = "reg2"  # bit 0 set by a learned pin
REG_POOL = "reg3"  # uid of the pool whose slot table applies

SLOT_BITS = 16
MAX_SLOTS_OVS = 1 << SLOT_BITS


class Kind(IntEnum):
    """Cookie bits 63..56: what kind of owner a flow has."""

    BASE = 0x01  # table-miss and control rules
    VIP = 0x02  # everything one VIP owns (ARP, ingress, decide)
    POOL = 0x03  # slot rules of one pool
    PIN = 0x04  # learned pins of one backend (never diffed, only deleted)
    HOST = 0x05  # L2 forwarding for one learned host


OWNER_UID_BITS = 24
KIND_MASK = 0xFF << 56
OWNER_MASK = KIND_MASK | (((1 << OWNER_UID_BITS) - 1) << 32)


def owner(kind: Kind, uid: int = 0) -> int:
    """The upper 32 cookie bits naming a flow's owner."""
    if not 0 <= uid < (1 << OWNER_UID_BITS):
        raise ValueError(f"owner uid {uid} out of range")
    return (int(kind) << 24) | uid


def pin_cookie(backend_uid: int) -> int:
    """The full cookie of every pin learned for one backend."""
    return owner(Kind.PIN, backend_uid) << 32


def kind_of(cookie: int) -> int:
    return (cookie >> 56) & 0xFF
