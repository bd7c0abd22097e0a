#!/usr/bin/env python3
"""New connections per second inside a handover window, with each way of
keeping a moved slot's connections: ``learn`` (a pin per connection, in
Open vSwitch's slow path) and ``conntrack`` (the connection tracker's label,
in the datapath), one after the other in one run on this machine's Open
vSwitch (userspace).

For each: a controller on a fresh state, pool "web" of three backends
(HAProxy) behind a VIP, ApacheBench without keep-alive (each request a new
connection) in steady state, then a fourth backend joins (a quarter of the
slots move) and the same load runs inside the window. Medians of the
rounds; the slot table's pins and the tracker's entries after.

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
BACKENDS = {"b11": 11, "b12": 12, "b13": 13, "b14": 14}


def one_mode(lab: Lab, mode: str, args) -> dict:
    settings = {
        "state_file": str(lab.run_dir / f"state-{mode}.db"),
        "handover_window": 300,
        "handover_tracking": mode,
        "conntrack_zone": ZONE,
        "stats_interval": 0,
    }
    controller = lab.start_controller(settings, rest_port=18095, of_port=16695, log_name=f"ryu-{mode}.log")
    try:
        lab.wait_connected()
        pool = {"name": "web", "backends": [{"ip": f"10.0.0.{n}"} for n in (11, 12, 13)]}
        assert rest(BASE, "POST", "/v1/pools", pool)[0] == 201
        vip = {"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"}
        assert rest(BASE, "POST", "/v1/vips", vip)[0] == 201
        wait_backends_up(BASE, 3)
        wait_no_hold(BASE)
        lab.ab(VIP, 2000, args.concurrency)  # warm up
        steady = [lab.ab(VIP, args.requests, args.concurrency) for _ in range(args.rounds)]
        assert rest(BASE, "POST", "/v1/pools/web/backends", {"ip": "10.0.0.14"})[0] == 201
        wait_backends_up(BASE, 4)
        wait_no_hold(BASE)
        moved = rest(BASE, "GET", "/v1/pools/web")[1]["handover"]["slots"]
        started = time.time()
        inside = [lab.ab(VIP, args.requests, args.concurrency) for _ in range(args.rounds)]
        tracked = lab.ovs("ovs-appctl", "dpctl/dump-conntrack", f"zone={ZONE}").count("zone=")
        return {
            "steady": statistics.median(r["per_second"] for r in steady),
            "inside": statistics.median(r["per_second"] for r in inside),
            "failed": sum(r["failed"] for r in steady + inside),
            "moved": moved,
            "seconds": time.time() - started,
            "pins": len(lab.pin_flows()),
            "tracked": tracked,
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
        lab.conntrack_timeouts(ZONE, 600)
        lab.add_host("c1", 1)
        for name, last in BACKENDS.items():
            lab.add_host(name, last)
            lab.make_backend(name, [VIP])
            lab.serve_haproxy(name)
        results = {mode: one_mode(lab, mode, args) for mode in ("learn", "conntrack")}
        print(f"\nNew connections per second, {args.rounds} rounds of {args.requests} requests each, medians")
        print(f"{'tracking':<11}{'steady':>8}{'in window':>11}{'ratio':>7}{'failed':>8}{'pins':>7}{'ct entries':>12}")
        for mode, r in results.items():
            print(
                f"{mode:<11}{r['steady']:>8.0f}{r['inside']:>11.0f}{r['inside'] / r['steady']:>7.2f}"
                f"{r['failed']:>8}{r['pins']:>7}{r['tracked']:>12}"
            )
        some = next(iter(results.values()))
        print(f"  a fourth backend joined a pool of three: {some['moved']} of its slots moved (a handover each)")
        return 0
    finally:
        lab.destroy()


if __name__ == "__main__":
    sys.exit(main())
