#!/usr/bin/env python3
"""UDP request/response load, each request a new flow (a fresh socket, so a
new source port): the UDP counterpart of ``ab`` without keep-alive.

    udp_load.py ADDRESS PORT --count N --concurrency C [--timeout S]
    udp_load.py ADDRESS PORT --streams K --seconds S [--interval I]

Prints one JSON line: requests, answered, failed (no answer in time),
seconds, per_second, and answers by backend name. With ``--streams``: K
long-lived flows (one socket each) send a request every I seconds for S
seconds; per stream, answered, lost and the backends that answered (a
stream is intact when one backend answered everything).
"""

import argparse
import json
import selectors
import socket
import time
from collections import Counter


def streams(args) -> dict:
    socks = []
    for _ in range(args.streams):
        sock = socket.socket(socket.AF_INET6 if ":" in args.address else socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect((args.address, args.port))
        sock.settimeout(args.timeout)
        socks.append(sock)
    results = [{"answered": 0, "lost": 0, "backends": Counter()} for _ in socks]
    end = time.monotonic() + args.seconds
    n = 0
    while time.monotonic() < end:
        for sock in socks:
            sock.send(b"stream %d" % n)
        for sock, result in zip(socks, results):
            try:
                data = sock.recv(2048)
                result["answered"] += 1
                result["backends"][data.split(b" ", 1)[0].decode()] += 1
            except OSError:
                result["lost"] += 1
        n += 1
        time.sleep(args.interval)
    for result in results:
        result["intact"] = result["lost"] == 0 and len(result["backends"]) == 1
        result["backends"] = dict(result["backends"])
    return {"streams": results, "intact": sum(r["intact"] for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("port", type=int)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--streams", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args()
    if args.streams:
        print(json.dumps(streams(args)))
        return
    selector = selectors.DefaultSelector()
    sent = answered = failed = 0
    by_backend: Counter = Counter()
    deadlines: dict = {}

    def start() -> None:
        nonlocal sent
        sock = socket.socket(socket.AF_INET6 if ":" in args.address else socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect((args.address, args.port))
        sock.send(b"ping %d" % sent)
        sent += 1
        deadlines[sock] = time.monotonic() + args.timeout
        selector.register(sock, selectors.EVENT_READ)

    def finish(sock) -> None:
        selector.unregister(sock)
        del deadlines[sock]
        sock.close()
        if sent < args.count:
            start()

    began = time.monotonic()
    for _ in range(min(args.concurrency, args.count)):
        start()
    while deadlines:
        for key, _events in selector.select(timeout=0.05):
            try:
                data = key.fileobj.recv(2048)
            except OSError:  # refused (ICMP port unreachable): no server answered
                failed += 1
            else:
                answered += 1
                by_backend[data.split(b" ", 1)[0].decode()] += 1
            finish(key.fileobj)
        now = time.monotonic()
        for sock in [s for s, deadline in deadlines.items() if deadline < now]:
            failed += 1
            finish(sock)
    seconds = time.monotonic() - began
    print(
        json.dumps(
            {
                "requests": sent,
                "answered": answered,
                "failed": failed,
                "seconds": round(seconds, 3),
                "per_second": round(answered / seconds, 1),
                "by_backend": dict(by_backend),
            }
        )
    )


if __name__ == "__main__":
    main()
