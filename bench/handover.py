#!/usr/bin/env python3
"""New connections per second right after a service is made and right
after a pool changes, against the same service in steady state and the
same client straight to a backend, on this machine's Open vSwitch
(userspace), in one run.

Two ways of keeping a moved slot's connections, one after the other, each
with a controller on a fresh state:

- the defaults (``handover_tracking = auto``) on a switch whose OVSDB the
  controller reaches (``ovsdb_remote``): it gives the handover's zone a
  timeout policy and moved slots label new connections in the datapath;
- ``learn``: a pin per new connection of a moved slot, in Open vSwitch's
  slow path.

For each: a pool "web" of three backends (HAProxy) and a VIP made over
REST, ApacheBench without keep-alive (each request a new connection)
started 3 s after the pool shows no hold (the VIP's first minute); then
rounds in steady state; then a fourth backend joins (a quarter of the
slots move) and the same load runs at once (the next seconds), then again
once the window closed (the same four backends in steady state). Medians of
the rounds; pins and tracker entries after; how long the window lasted
once the load stopped. Beside them, ApacheBench straight to one backend.

Run as root:  .venv/bin/python bench/handover.py [--rounds 3] [--requests 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from ryu_dsr.lab import Lab, rest, wait_backends_up, wait_no_hold

VIP = "10.0.0.100"
BASE = "http://127.0.0.1:18095"
ZONE = 1493
OVSDB_PORT = 16641
BACKENDS = {"b11": 11, "b12": 12, "b13": 13, "b14": 14}


def median(runs: list[dict]) -> float:
    return statistics.median(r["per_second"] for r in runs)


def one_way(lab: Lab, name: str, settings: dict, args) -> dict:
    settings = {"state_file": str(lab.run_dir / f"state-{name}.db"), "stats_interval": 0, **settings}
    controller = lab.start_controller(settings, rest_port=18095, of_port=16695, log_name=f"ryu-{name}.log")
    try:
        lab.wait_connected()
        pool = {"name": "web", "backends": [{"ip": f"10.0.0.{n}"} for n in (11, 12, 13)]}
        assert rest(BASE, "POST", "/v1/pools", pool)[0] == 201
        vip = {"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"}
        assert rest(BASE, "POST", "/v1/vips", vip)[0] == 201
        made = time.time()
        wait_backends_up(BASE, 3)
        wait_no_hold(BASE)
        time.sleep(3)
        fresh = [lab.ab(VIP, args.requests, args.concurrency) for _ in range(args.rounds)]
        fresh_seconds = time.time() - made
        fresh_pins = len(lab.pin_flows())
        steady = [lab.ab(VIP, args.requests, args.concurrency) for _ in range(args.rounds)]
        direct = [lab.ab("10.0.0.11", args.requests, args.concurrency) for _ in range(args.rounds)]
        assert rest(BASE, "POST", "/v1/pools/web/backends", {"ip": "10.0.0.14"})[0] == 201
        added_at = time.time()
        added = [lab.ab(VIP, args.requests, args.concurrency) for _ in range(args.rounds)]
        added_seconds = time.time() - added_at
        handover = rest(BASE, "GET", "/v1/pools/web")[1]["handover"]
        pins = len(lab.pin_flows())
        tracked = lab.ovs("ovs-appctl", "dpctl/dump-conntrack", f"zone={ZONE}").count("zone=")
        stopped = time.time()
        deadline = stopped + 400
        while rest(BASE, "GET", "/v1/pools/web")[1]["handover"]["slots"] and time.time() < deadline:
            time.sleep(0.5)
        window = time.time() - stopped
        after = [lab.ab(VIP, args.requests, args.concurrency) for _ in range(args.rounds)]  # the four, steady
        return {
            "method": handover["tracking"][0]["method"] if handover["tracking"] else "?",
            "direct": median(direct),
            "fresh": median(fresh),
            "steady": median(steady),
            "added": median(added),
            "after": median(after),
            "failed": sum(r["failed"] for r in fresh + steady + direct + added + after),
            "fresh_seconds": fresh_seconds,
            "added_seconds": added_seconds,
            "fresh_pins": fresh_pins,
            "moved": handover["slots"],
            "pins": pins,
            "tracked": tracked,
            "window": window,
        }
    finally:
        lab.stop(controller)
        lab.ofctl("del-flows", lab.bridge)
        lab.ofctl("del-groups", lab.bridge)
        lab.ovs("ovs-appctl", "dpctl/flush-conntrack")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    lab = Lab("dsrho")
    try:
        lab.start_switch(controller_port=16695)
        remote = lab.serve_ovsdb(OVSDB_PORT)  # as README "Handovers" sets the switch up
        lab.add_host("c1", 1)
        for name, last in BACKENDS.items():
            lab.add_host(name, last)
            lab.make_backend(name, [VIP])
            lab.serve_haproxy(name)
        ways = {
            "defaults": {"ovsdb_remote": remote},
            "learn": {"handover_tracking": "learn"},
        }
        results = {name: one_way(lab, name, settings, args) for name, settings in ways.items()}
        print(f"\nNew connections per second, {args.rounds} rounds of {args.requests} requests each, medians")
        print(
            f"{'settings':<10}{'method':<11}{'direct':>8}{'new VIP':>9}{'steady':>8}{'added':>8}{'after':>8}"
            f"{'new/steady':>12}{'added/after':>13}{'failed':>8}"
        )
        for name, r in results.items():
            print(
                f"{name:<10}{r['method']:<11}{r['direct']:>8.0f}{r['fresh']:>9.0f}{r['steady']:>8.0f}{r['added']:>8.0f}"
                f"{r['after']:>8.0f}{r['fresh'] / r['steady']:>12.2f}{r['added'] / r['after']:>13.2f}{r['failed']:>8}"
            )
        print("\nWhat the switch kept")
        print(
            f"{'settings':<10}{'pins (new VIP)':>15}{'moved slots':>12}{'pins':>7}{'ct entries':>12}{'window after load':>19}"
        )
        for name, r in results.items():
            print(
                f"{name:<10}{r['fresh_pins']:>15}{r['moved']:>12}{r['pins']:>7}{r['tracked']:>12}{r['window']:>17.1f} s"
            )
        some = next(iter(results.values()))
        print(
            f"  new VIP: its first {some['fresh_seconds']:.0f} s (ab started 3 s after no hold); added: a fourth "
            f"backend joined, the next {some['added_seconds']:.0f} s; after: the four once the window closed; "
            "steady: the three before; direct: straight to one backend\n"
            "  window after load: from the end of the load until the pool shows no slot in a handover"
        )
        return 0
    finally:
        lab.destroy()


if __name__ == "__main__":
    sys.exit(main())
