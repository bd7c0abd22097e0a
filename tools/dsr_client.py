#!/usr/bin/env python3
"""Make HTTP requests to a VIP and report what happened, as JSON (standard
library only; runs inside a client namespace).

    dsr_client.py URL [--count N] [--interval S] [--timeout S] [--ports] [--streams N --lines L --ms M]
    dsr_client.py URL --rate R [--duration S] [--timeout S]

Plain mode: N GETs, each on a new connection. Report: ok, failed, by backend
(the first word of each answer), clients seen by backends, errors; with
--ports, [local port, backend] of each answered connection.
Stream mode: N concurrent long-lived GET /stream connections, each reading L
lines; a connection is intact when all L lines arrived in order.
"""

import argparse
import json
import socket
import threading
import time
from collections import Counter
from urllib.parse import urlparse


def get(host: str, port: int, path: str, timeout: float, ports: list | None = None) -> str:
    """The body of GET ``path``; ``ports`` gets the connection's local port."""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        if ports is not None:
            ports.append(conn.getsockname()[1])
        conn.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    text = b"".join(chunks).decode(errors="replace")
    if not text.startswith("HTTP/1.0 200"):
        raise OSError(f"bad answer: {text[:40]!r}")
    return text.split("\r\n\r\n", 1)[-1]


def plain(args, host, port) -> dict:
    by_backend, seen, errors = Counter(), Counter(), Counter()
    ok = failed = 0
    started = time.monotonic()
    times, local = [], []
    for _ in range(args.count):
        t0 = time.monotonic()
        try:
            words = get(host, port, "/", args.timeout, local).split()
            by_backend[words[0]] += 1
            if args.ports:
                local[-1] = [local[-1], words[0]]
            if len(words) > 1:
                seen[words[1]] += 1
            ok += 1
            times.append([round(t0 - started, 3), words[0]])
        except OSError as error:
            failed += 1
            errors[type(error).__name__] += 1
            times.append([round(t0 - started, 3), None])
        if args.interval:
            time.sleep(args.interval)
    return {
        "ok": ok,
        "failed": failed,
        "by_backend": dict(by_backend),
        "clients_seen": dict(seen),
        "errors": dict(errors),
        "timeline": times if args.timeline else None,
        "ports": [pair for pair in local if isinstance(pair, list)] if args.ports else None,
    }


def streams(args, host, port) -> dict:
    results = [None] * args.streams

    def one(i: int) -> None:
        try:
            body = get(host, port, f"/stream?n={args.lines}&ms={args.ms}", args.timeout)
            lines = body.split("\n")[: args.lines]
            names = {line.split()[0] for line in lines if line}
            intact = (
                len(lines) == args.lines
                and all(line.split()[1] == str(n) for n, line in enumerate(lines))
                and len(names) == 1
            )
            results[i] = {"intact": intact, "backend": names.pop() if len(names) == 1 else None, "lines": len(lines)}
        except OSError as error:
            results[i] = {"intact": False, "backend": None, "error": type(error).__name__}

    threads = [threading.Thread(target=one, args=(i,)) for i in range(args.streams)]
    for t in threads:
        t.start()
        time.sleep(0.01)
    for t in threads:
        t.join()
    return {
        "streams": args.streams,
        "intact": sum(1 for r in results if r["intact"]),
        "by_backend": dict(Counter(r["backend"] for r in results if r["backend"])),
        "results": results,
    }


def paced(args, host, port, path) -> dict:
    """Open loop: a new connection every 1/RATE s for DURATION s, each in
    its own thread, whatever the answers before it (a slow backend does
    not slow the offered load, as with real clients): p50 and p99 of the
    answered, failures (timeouts included), by backend."""
    times: list[float] = []
    by_backend, errors = Counter(), Counter()
    lock = threading.Lock()

    def one() -> None:
        started = time.monotonic()
        try:
            name = get(host, port, path, args.timeout).split()[0]
            with lock:
                times.append(time.monotonic() - started)
                by_backend[name] += 1
        except OSError as error:
            with lock:
                errors[type(error).__name__] += 1

    threads = []
    start = time.monotonic()
    for i in range(int(args.rate * args.duration)):
        time.sleep(max(0.0, start + i / args.rate - time.monotonic()))
        thread = threading.Thread(target=one, daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(args.timeout + 1)
    times.sort()
    pick = lambda q: round(1000 * times[min(len(times) - 1, int(q * len(times)))], 1) if times else None  # noqa: E731
    return {
        "ok": len(times),
        "failed": sum(errors.values()),
        "errors": dict(errors),
        "by_backend": dict(by_backend),
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "per_second": round(len(times) / (time.monotonic() - start), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--timeline", action="store_true")
    parser.add_argument("--ports", action="store_true", help="report each answered connection's local port")
    parser.add_argument("--streams", type=int, default=0)
    parser.add_argument("--lines", type=int, default=50)
    parser.add_argument("--ms", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: new connections a second")
    parser.add_argument("--duration", type=float, default=30.0, help="open loop: for how long (s)")
    args = parser.parse_args()
    url = urlparse(args.url)
    host, port = url.hostname, url.port or 80
    path = url.path + (f"?{url.query}" if url.query else "") or "/"
    if args.rate:
        report = paced(args, host, port, path)
    else:
        report = streams(args, host, port) if args.streams else plain(args, host, port)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
