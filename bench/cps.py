#!/usr/bin/env python3
"""New connections per second through a VIP, against the same client
straight to one backend, on this machine's Open vSwitch (userspace).

A client and four DSR backends in namespaces, ryu-manager, HAProxy
answering HTTP on each backend and tools/udp_echo.py answering UDP. TCP:
ApacheBench without keep-alive (every request a new connection). UDP:
tools/udp_load.py (every request a new flow, from a new source port). Each
round runs the cases interleaved (direct TCP, VIP TCP, direct UDP, VIP
UDP, and TCP from three ApacheBench at once: one to each of the three
backends against all three to the VIP, so that both sides load the same
backends from the same number of client processes); the table shows
medians. Then the same load runs while a backend is
added to the pool (its slots hand over), and once more inside the handover
window. After each part: the slot table's pins and handover rules.

Run as root:  python3 bench/cps.py [--rounds 3] [--requests 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path

from ryu_dsr.flows.pipeline import Kind, Priority, Table

from ryu_dsr.lab import Lab, rest, wait_backends_up

VIP = "10.0.0.100"
UDP_PORT = 5300
BASE = "http://127.0.0.1:18095"
TOOLS = Path(__file__).resolve().parent.parent / "tools"
BACKENDS = {"b11": 11, "b12": 12, "b13": 13, "b14": 14}


def ab(lab: Lab, address: str, requests: int, concurrency: int) -> dict:
    out = lab.run(
        "c1", "ab", "-q", "-r", "-n", str(requests), "-c", str(concurrency), f"http://{address}/", timeout=600
    )
    number = lambda name: float((re.search(rf"{name}:\s+([\d.]+)", out) or [0, 0])[1])  # noqa: E731
    return {
        "per_second": number("Requests per second"),
        "failed": int(number("Failed requests") + number("Non-2xx responses")),
        "done": int(number("Complete requests")),
    }


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ab_split(lab: Lab, addresses: list[str], requests: int, concurrency: int) -> dict:
    """One ApacheBench per address at once, the load split between them;
    connections per second over the whole run."""
    results: list[dict] = []
    share = requests // len(addresses)
    runs = [
        threading.Thread(target=lambda a=a: results.append(ab(lab, a, share, max(1, concurrency // len(addresses)))))
        for a in addresses
    ]
    started = time.monotonic()
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    took = time.monotonic() - started
    done = sum(r["done"] for r in results)
    return {"per_second": done / took, "failed": sum(r["failed"] for r in results), "done": done}


def udp(lab: Lab, address: str, requests: int, concurrency: int) -> dict:
    out = lab.run(
        "c1",
        sys.executable,
        str(TOOLS / "udp_load.py"),
        address,
        str(UDP_PORT),
        "--count",
        str(requests),
        "--concurrency",
        str(concurrency),
        timeout=600,
    )
    return json.loads(out)


def slot_table(lab: Lab) -> dict:
    """What the slot table holds now: steady rules, handover rules, pins."""
    counts = {"slots": 0, "handover": 0, "pins": 0}
    for line in lab.ofctl("dump-flows", lab.bridge, f"table={int(Table.SLOTS)}").splitlines():
        cookie = re.search(r"cookie=0x([0-9a-f]+)", line)
        priority = re.search(r"priority=(\d+)", line)
        if not cookie or not priority:
            continue
        if int(cookie[1], 16) >> 56 == Kind.PIN:
            counts["pins"] += 1
        elif int(priority[1]) in (Priority.HANDOVER, Priority.HANDOVER_SYN):
            counts["handover"] += 1
        else:
            counts["slots"] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    lab = Lab("dsrcps")
    try:
        lab.start_switch(controller_port=16695)
        lab.add_host("c1", 1)
        for name, last in BACKENDS.items():
            host = lab.add_host(name, last)
            lab.make_backend(name, [VIP])
            lab.serve_haproxy(name)
            lab.serve_udp(name, UDP_PORT, [VIP, host.ip])
        settings = {"state_file": str(lab.run_dir / "state.db"), "handover_window": 300, "udp_handover_window": 10}
        lab.start_controller(settings, rest_port=18095, of_port=16695)
        lab.wait_connected()
        pool = {"name": "web", "backends": [{"ip": f"10.0.0.{n}"} for n in (11, 12, 13)]}
        assert rest(BASE, "POST", "/v1/pools", pool)[0] == 201
        wait_backends_up(BASE, 3)
        for name, protocol, port in (("www", "tcp", 80), ("dns", "udp", UDP_PORT)):
            vip = {"name": name, "ip": VIP, "protocol": protocol, "port": port, "pool": "web", "hash": "5tuple"}
            assert rest(BASE, "POST", "/v1/vips", vip)[0] == 201
        time.sleep(1.0)
        direct = lab.hosts["b11"].ip
        spread = [lab.hosts[name].ip for name in ("b11", "b12", "b13")]
        ab(lab, direct, 2000, args.concurrency), ab(lab, VIP, 2000, args.concurrency)  # warm up ARP and caches
        udp(lab, direct, 2000, 32), udp(lab, VIP, 2000, 32)
        cases = {
            ("TCP", "direct"): lambda: ab(lab, direct, args.requests, args.concurrency),
            ("TCP", "VIP"): lambda: ab(lab, VIP, args.requests, args.concurrency),
            ("UDP", "direct"): lambda: udp(lab, direct, args.requests, 32),
            ("UDP", "VIP"): lambda: udp(lab, VIP, args.requests, 32),
            ("TCP", "direct, spread"): lambda: ab_split(lab, spread, args.requests, args.concurrency),
            ("TCP", "VIP, split"): lambda: ab_split(lab, [VIP] * len(spread), args.requests, args.concurrency),
        }
        results: dict = {case: [] for case in cases}
        switch_pid = int((lab.run_dir / "ovs-vswitchd.pid").read_text())
        switch_cpu: dict = {case: [] for case in cases}  # ovs-vswitchd CPU seconds per connection
        for _round in range(args.rounds):
            for case, run in cases.items():
                before = cpu_seconds(switch_pid)
                results[case].append(run())
                done = results[case][-1].get("done", results[case][-1].get("answered", 0))
                switch_cpu[case].append((cpu_seconds(switch_pid) - before) / max(1, done))
        steady = slot_table(lab)
        print(f"\nNew connections per second, {args.rounds} interleaved rounds of {args.requests} requests, medians")
        print(f"{'protocol':<9}{'direct':>10}{'VIP':>10}{'VIP/direct':>12}{'failed (direct/VIP)':>22}")
        for protocol in ("TCP", "UDP"):
            d = statistics.median(r["per_second"] for r in results[(protocol, "direct")])
            v = statistics.median(r["per_second"] for r in results[(protocol, "VIP")])
            failed = [sum(r["failed"] for r in results[(protocol, where)]) for where in ("direct", "VIP")]
            print(f"{protocol:<9}{d:>10.0f}{v:>10.0f}{v / d:>12.2f}{f'{failed[0]} / {failed[1]}':>22}")
        d = statistics.median(r["per_second"] for r in results[("TCP", "direct, spread")])
        v = statistics.median(r["per_second"] for r in results[("TCP", "VIP, split")])
        failed = [sum(r["failed"] for r in results[("TCP", w)]) for w in ("direct, spread", "VIP, split")]
        print(f"{'TCP, 3 ab':<9}{d:>10.0f}{v:>10.0f}{v / d:>12.2f}{f'{failed[0]} / {failed[1]}':>22}")
        print(
            "  (TCP, 3 ab: three ApacheBench at once, -c 16 each; direct: one to each of the three backends,"
            " VIP: all three to the VIP)"
        )
        print("Open vSwitch's CPU time per connection (ovs-vswitchd, microseconds), medians")
        for protocol, direct_case, vip_case in (("TCP", "direct", "VIP"), ("UDP", "direct", "VIP")):
            d = statistics.median(switch_cpu[(protocol, direct_case)]) * 1e6
            v = statistics.median(switch_cpu[(protocol, vip_case)]) * 1e6
            print(f"{protocol:<9}{d:>10.0f}{v:>10.0f}{v / d:>12.2f}")
        print(
            f"slot table after: {steady['slots']} slot rules, {steady['handover']} handover rules, "
            f"{steady['pins']} pins"
        )

        # A backend joins while the load runs: its slots hand over.
        print(
            "\nDuring a pool change (b14 added one second into the run; handover windows: "
            f"TCP {settings['handover_window']} s, UDP {settings['udp_handover_window']} s)"
        )
        print(f"{'protocol':<9}{'run':<28}{'per second':>11}{'failed':>8}")
        outcome: dict = {}
        load = {
            "TCP": lambda: ab(lab, VIP, args.requests, args.concurrency),
            "UDP": lambda: udp(lab, VIP, args.requests, 32),
        }
        runner = threading.Thread(target=lambda: outcome.update(tcp=load["TCP"]()))
        udp_runner = threading.Thread(target=lambda: outcome.update(udp=load["UDP"]()))
        runner.start()
        udp_runner.start()
        time.sleep(1.0)
        changed = time.time()
        assert rest(BASE, "POST", "/v1/pools/web/backends", {"ip": "10.0.0.14"})[0] == 201
        runner.join()
        udp_runner.join()
        wait_backends_up(BASE, 4)
        moved = slot_table(lab)
        inside, started = {}, {}
        for protocol in ("UDP", "TCP"):  # UDP first: its window is the shorter
            started[protocol] = time.time() - changed
            inside[protocol] = load[protocol]()
        for protocol in ("TCP", "UDP"):
            run = outcome[protocol.lower()]
            print(f"{protocol:<9}{'the backend is added':<28}{run['per_second']:>11.0f}{run['failed']:>8}")
        for protocol in ("TCP", "UDP"):
            run, label = inside[protocol], f"from {started[protocol]:.0f} s after the change"
            print(f"{protocol:<9}{label:<28}{run['per_second']:>11.0f}{run['failed']:>8}")
        after = slot_table(lab)
        print(
            f"slot table after the change: {moved['slots']} slot rules, {moved['handover']} handover rules, "
            f"{moved['pins']} pins; after the runs inside the window: {after['pins']} pins"
        )
        return 0
    finally:
        lab.destroy()


if __name__ == "__main__":
    sys.exit(main())
