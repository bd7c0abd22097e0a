#!/usr/bin/env python3
"""A leaf-spine fabric on this machine's Open vSwitch: how fast traffic
finds a new path after a link is cut, and what each switch holds.

Two spines, three leaves (bridges joined by veth pairs), a client and a
DSR backend on each leaf, one ryu-manager. A VIP over the three backends.
While the client on leaf 1 pings the backend on leaf 3 every 2 ms, the
link leaf 1 uses to reach the spines is cut: the time from the cut to the
first answer through the other spine, and the answers lost. Repeated for
``--cuts`` links (each put back before the next). Then flows per switch,
leaves beside spines. Then what discovery costs: the frames a second on
the links and handed back to the controller (a frame per switch port per
second, as before the frames were sealed), the time to seal and to check one
frame beside parsing the unsealed frame of before, and a REST read while a
host sends forged discovery frames as fast as it can (each refused and counted).

Run as root:  .venv/bin/python bench/fabric.py [--cuts 3]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

from ryu_dsr.discovery import Discovery
from ryu_dsr.lab import Lab, rest, sh

REST_PORT, OF_PORT = 18095, 16695
BASE = f"http://127.0.0.1:{REST_PORT}"
VIP = "10.0.0.100"
LEAVES = {"leaf1": 1, "leaf2": 2, "leaf3": 3}
SPINES = {"spine1": 0x65, "spine2": 0x66}
INTERVAL = 0.002


def wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def links_up() -> int:
    return len(rest(BASE, "GET", "/v1/topology")[1]["links"])


def cut_once(lab: Lab, link: str, target: str) -> tuple[float, int]:
    """Cut ``link`` while c1 pings ``target`` every 2 ms: (seconds from the
    cut to the first answer after it, answers lost)."""
    ping = subprocess.Popen(
        ["ip", "netns", "exec", lab.hosts["c1"].ns, "ping", "-D", "-i", str(INTERVAL), "-W", "1", "-c", "2500", target],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)
    cut_at = time.time()
    lab.cut_link(link)
    out, _ = ping.communicate(timeout=60)
    stamps = [float(m) for m in re.findall(r"^\[(\d+\.\d+)\].*icmp_seq=", out, re.M)]
    after = [t for t in stamps if t > cut_at]
    received = int((re.search(r"(\d+) received", out) or [0, 0])[1])
    sent = int((re.search(r"(\d+) packets transmitted", out) or [0, 0])[1])
    sh("ip", "link", "set", lab.links[link][0], "up")  # the cable back
    return (after[0] - cut_at if after else float("nan")), sent - received


def per_frame_us(work, count: int = 20000) -> float:
    start = time.perf_counter()
    for _ in range(count):
        work()
    return (time.perf_counter() - start) / count * 1e6


def frame_costs() -> list[tuple[str, float]]:
    """Microseconds per frame: sealing and checking, beside parsing the old unsealed frame."""
    old_format = struct.Struct("!6s6sH4sQI")
    old = old_format.pack(bytes(6), bytes(6), 0x88B5, b"rdsr", 1, 1) + bytes(28)

    def parse_unsealed() -> None:
        _dst, _src, ethertype, magic, _dpid, _port = old_format.unpack_from(old)
        assert ethertype == 0x88B5 and magic == b"rdsr"

    discovery = Discovery(bytes(32), "02:d4:00:00:00:01", time.time)
    frames = iter([discovery.frame(1, port) for port in range(1, 20001)] * 2)
    forged = bytearray(discovery.frame(1, 1))
    forged[-30] ^= 1
    return [
        ("parse an unsealed frame (old format, no check)", per_frame_us(parse_unsealed)),
        ("seal a frame (keyed BLAKE2b)", per_frame_us(lambda: discovery.frame(1, 1))),
        ("check a genuine frame", per_frame_us(lambda: discovery.check(next(frames)))),
        ("refuse a forged frame", per_frame_us(lambda: discovery.check(bytes(forged)))),
    ]


def discovery_window(lab: Lab, seconds: float = 10.0) -> tuple[float, float, int]:
    """(frames a second handed back to the controller and accepted, frames a
    second on the links, switch ports) over a quiet window."""
    before, on_links = rest(BASE, "GET", "/v1/topology")[1], lab.link_packets()
    time.sleep(seconds)
    after, sent = rest(BASE, "GET", "/v1/topology")[1], lab.link_packets() - on_links
    ports = sum(len(s["ports"]) for s in after["switches"])
    return (after["discovery"]["accepted"] - before["discovery"]["accepted"]) / seconds, sent / seconds, ports


def forged_flood(lab: Lab, rate: float, seconds: float) -> tuple[float, float, dict]:
    """A host on leaf 1 sends forged discovery frames (two per turn, ``rate``
    turns a second): (REST read median ms meanwhile, frames refused a
    second, the links' count before and after)."""
    attack = Path(__file__).resolve().parents[1] / "tests" / "integration" / "discovery_attack.py"
    links = len(rest(BASE, "GET", "/v1/topology")[1]["links"])
    before = rest(BASE, "GET", "/v1/topology")[1]["discovery"]["refused"]
    forger = subprocess.Popen(
        [sys.executable, str(attack), "forge", lab.hosts["c1"].ns, "3", "1", str(rate), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    read = rest_read_ms(int((seconds - 2) / 0.03))
    json.loads(forger.communicate(timeout=seconds + 30)[0])
    after = rest(BASE, "GET", "/v1/topology")[1]
    refused = sum(after["discovery"]["refused"].values()) - sum(before.values())
    return read, refused / seconds, {"before": links, "after": len(after["links"])}


def rest_read_ms(count: int = 50) -> float:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        rest(BASE, "GET", "/v1/topology")
        times.append((time.perf_counter() - start) * 1000)
        time.sleep(0.02)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuts", type=int, default=3)
    args = parser.parse_args()
    lab = Lab("dsrfb")
    try:
        lab.start_switch(controller_port=OF_PORT, dpid=0xFF)
        bridges = lab.leaf_spine(LEAVES, SPINES, OF_PORT)
        for index, leaf in enumerate(LEAVES, 1):
            lab.add_host(f"c{index}", index, bridge=bridges[leaf])
            lab.add_host(f"b1{index}", 10 + index, bridge=bridges[leaf])
            lab.make_backend(f"b1{index}", [VIP])
            lab.serve_http(f"b1{index}")
        lab.start_controller({"state_file": str(lab.run_dir / "state.db")}, rest_port=REST_PORT, of_port=OF_PORT)
        wait(lambda: links_up() == 6, 30, "six links")
        pool = {"name": "web", "backends": [{"ip": f"10.0.0.{10 + i}"} for i in range(1, 4)]}
        assert rest(BASE, "POST", "/v1/pools", pool)[0] == 201
        vip = {"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"}
        assert rest(BASE, "POST", "/v1/vips", vip)[0] == 201
        wait(lambda: all(sw["in_line"] for sw in rest(BASE, "GET", "/v1/switches")[1]), 30, "switches in line")
        lab.run("c1", "ping", "-c", "3", "-i", "0.2", "10.0.0.13")  # ARP and L2 paths in place
        results = []
        for _turn in range(args.cuts):
            # leaf1 reaches the other leaves through the lowest spine: cut that uplink (it is back each time)
            results.append(cut_once(lab, "11", "10.0.0.13"))
            wait(lambda: links_up() == 6, 30, "the link back")
            time.sleep(1.0)
        converge = [r[0] * 1000 for r in results]
        print(f"\nLeaf-spine fabric (2 spines, 3 leaves), {args.cuts} link cuts under a 2 ms ping across it")
        print(f"  {'first answer through the new path after the cut (ms), median / max':<70} ", end="")
        print(f"{statistics.median(converge):.0f} / {max(converge):.0f}")
        print(f"  {'answers lost per cut (2 ms apart), median / max':<70} ", end="")
        print(f"{statistics.median(r[1] for r in results):.0f} / {max(r[1] for r in results)}")
        print("\nFlows per switch (a VIP of 3 backends, 6 hosts)")
        for name, bridge in bridges.items():
            flows = sum(1 for line in lab.ofctl("dump-flows", bridge).splitlines() if "actions=" in line)
            role = "spine" if name in SPINES else "leaf"
            print(f"  {name:<8}{role:<7}{flows:>6}")

        accepted, on_links, ports = discovery_window(lab)
        quiet = rest_read_ms()
        read, refused, links = forged_flood(lab, 1000, 10)
        print("\nDiscovery (sealed frames, links believed from both ends)")
        print(f"  {'switch ports / links':<70} {ports} / {links['before']}")
        print(f"  {'frames handed back and accepted a second (one per link end)':<70} {accepted:.1f}")
        print(f"  {'frames a second on the links (discovery, both ways, and any traffic)':<70} {on_links:.1f}")
        print(f"  {'GET /v1/topology median (ms), quiet':<70} {quiet:.1f}")
        print(f"  {'the same while a host sends forged frames (ms)':<70} {read:.1f}")
        print(f"  {'forged frames refused a second / links before and after':<70} ", end="")
        print(f"{refused:.0f} / {links['before']} -> {links['after']}")
        print("\nOne frame, in this process (us)")
        for what, cost in frame_costs():
            print(f"  {what:<70} {cost:.2f}")
        return 0
    finally:
        lab.destroy()


if __name__ == "__main__":
    sys.exit(main())
