#!/usr/bin/env python3
"""How well backends share a pool, and how much a change of pool moves.

For N = 2..64 equal backends, with each pool's table sized as ryu_dsr sizes
it (64 slots per backend, a power of two, at most ``--cap``), prints:

- balance: most slots any backend holds, over the ideal size/N (1.000 is perfect);
- moved on add (N -> N+1) and on remove (N -> N-1), as a fraction of flows
  (``hash mod size`` for every hash), beside the ideal 1/(N+1) and 1/N; an
  add that crosses a size step doubles the table (the moves then include
  that step: doubling alone moves nothing);

for ryu_dsr's tables (Maglev first, then minimal-move rebalance), for plain
Maglev rebuilt from scratch on every change (what a stateless Maglev does),
and for Open vSwitch's own select group (default dp_hash method) measured on
the real switch in the same run: 8192 TCP connections (SYNs) with distinct source ports
go through a select group of N buckets, a learned flow records each flow's
bucket, the group is changed, the same flows are sent again.

Run as root (needs Open vSwitch; tools/setup installs it):
    .venv/bin/python bench/hash_table.py [--flows 8192] [--sizes 2,4,8,16,32,64] [--no-ovs]
"""

from __future__ import annotations

import argparse
import re
import socket
import struct
import sys
import time
from collections import Counter

from ryu_dsr.flows.slot_tables import build_table, changed_slots

from ryu_dsr.lab import Lab
from ryu_dsr.slots import SlotPlanner


def keys(n: int) -> dict[str, int]:
    return {f"10.0.{i // 250}.{i % 250 + 1}": 100 for i in range(n)}


def balance(table: list) -> float:
    counts = Counter(table)
    return max(counts.values()) / (len(table) / len(counts))


def moved_flows(old: list, new: list) -> float:
    """Share of flows whose backend differs: a flow with hash h goes to slot
    h mod len(table); one size divides the other, so the larger table's
    slots cover every residue class once."""
    big, small = (new, old) if len(new) >= len(old) else (old, new)
    return sum(1 for s, key in enumerate(big) if key != small[s % len(small)]) / len(big)


def planned(planner: SlotPlanner, weights: dict[str, int]) -> list:
    planner.install("pool", planner.plan("pool", len(weights), weights, False))
    return planner.table("pool")


def table_numbers(n: int, cap: int) -> dict[str, tuple[int, float, float, float]]:
    pool = keys(n)
    added = dict(pool, **{"10.9.9.9": 100})
    removed = dict(list(pool.items())[:-1])
    results = []
    for after in (added, removed):
        planner = SlotPlanner(cap, 1024)
        ours = list(planned(planner, pool))
        results.append((ours, planned(planner, after)))
    ours = results[0][0]
    size = len(ours)
    maglev = build_table(pool, size)
    return {
        "ryu_dsr": (
            size,
            balance(ours),
            moved_flows(ours, results[0][1]),
            moved_flows(ours, results[1][1]) if n > 1 else 0.0,
        ),
        "maglev": (
            size,
            balance(maglev),
            len(changed_slots(maglev, build_table(added, size))) / size,
            len(changed_slots(maglev, build_table(removed, size))) / size if n > 1 else 0.0,
        ),
    }


def size_steps(cap: int) -> list[tuple[int, int, int, float]]:
    """(N, size before, size after, share of flows moved) at every add that
    doubles the table."""
    steps = []
    planner = SlotPlanner(cap, 1024)
    before = planned(planner, keys(1))
    for n in range(2, 70):
        after = planned(planner, keys(n))
        if len(after) != len(before):
            steps.append((n, len(before), len(after), moved_flows(before, after)))
        before = list(after)
    return steps


# ---------------------------------------------------------------- Open vSwitch


class OvsSelectGroup:
    """Open vSwitch's select group, measured with real packets."""

    def __init__(self, flows: int) -> None:
        self.flows = flows
        self.lab = Lab("dsrbench")
        self.lab.start_switch(controller_port=16699)
        self.lab.vsctl("del-controller", self.lab.bridge)
        self.lab.vsctl("set", "bridge", self.lab.bridge, "protocols=OpenFlow13,OpenFlow15")
        self.gen = self.lab.add_host("gen", 1)
        self.lab.run("gen", "ip", "neigh", "replace", "10.0.0.100", "lladdr", "02:00:00:00:00:99", "dev", "eth0")
        self.lab.ofctl("del-flows", self.lab.bridge)
        self.set_buckets(1, "add-group")
        self.lab.ofctl("add-flow", self.lab.bridge, "table=0,priority=10,tcp,in_port=1,actions=group:1")
        self.lab.ofctl(
            "add-flow",
            self.lab.bridge,
            "table=1,priority=10,tcp,actions=learn(table=2,priority=10,eth_type=0x800,nw_proto=6,"
            "NXM_OF_TCP_SRC[],load:NXM_NX_REG0[]->NXM_NX_REG1[])",
        )

    def set_buckets(self, n: int, verb: str) -> None:
        buckets = ",".join(f"bucket=bucket_id:{i},actions=set_field:{i}->reg0,resubmit(,1)" for i in range(n))
        self.lab.ovs("ovs-ofctl", "-O", "OpenFlow15", verb, self.lab.bridge, f"group_id=1,type=select,{buckets}")

    def mapping(self) -> dict[int, int]:
        """Send one packet per flow and read back each flow's bucket."""
        self.lab.ofctl("del-flows", self.lab.bridge, "table=2")
        self.lab.ovs("ovs-appctl", "dpctl/del-flows", check=False)  # no cached flow may skip its learn
        self.lab.run("gen", sys.executable, __file__, "--send", str(self.flows), timeout=300)
        deadline = time.time() + 30
        found: dict[int, int] = {}
        while time.time() < deadline:
            dump = self.lab.ofctl("dump-flows", self.lab.bridge, "table=2")
            found = {
                int(p): int(b, 0) for p, b in re.findall(r"tp_src=(\d+).*?load:(0x[0-9a-f]+|\d+)->NXM_NX_REG1", dump)
            }
            if len(found) >= self.flows * 0.99:
                break
            time.sleep(0.5)
        return found

    def numbers(self, n: int) -> tuple[float, float, float]:
        self.set_buckets(n, "mod-group")
        base = self.mapping()
        counts = Counter(base.values())
        bal = max(counts.values()) / (len(base) / n)
        self.set_buckets(n + 1, "mod-group")
        added = self.mapping()
        moved_add = sum(1 for p, b in base.items() if p in added and added[p] != b) / len(base)
        moved_remove = 0.0
        if n > 1:
            self.set_buckets(n - 1, "mod-group")
            removed = self.mapping()
            moved_remove = sum(1 for p, b in base.items() if p in removed and removed[p] != b) / len(base)
        return 0, bal, moved_add, moved_remove

    def close(self) -> None:
        self.lab.destroy()


def send_flows(count: int) -> None:
    """In the generator namespace: one TCP SYN per source port."""
    for i in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(False)
            sock.bind(("10.0.0.1", 10000 + i))
            try:
                sock.connect(("10.0.0.100", 80))
            except BlockingIOError:
                pass
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if i % 256 == 255:
            time.sleep(0.005)  # let the userspace datapath keep up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2,3,4,5,8,10,12,16,32,64")
    parser.add_argument("--cap", type=int, default=4096, help="the table_size setting: most slots per pool")
    parser.add_argument("--flows", type=int, default=8192)
    parser.add_argument("--no-ovs", action="store_true")
    parser.add_argument("--send", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send:
        send_flows(args.send)
        return 0
    sizes = [int(n) for n in args.sizes.split(",")]
    ovs = None if args.no_ovs else OvsSelectGroup(args.flows)
    print(
        f"slots per pool: 64 per backend, a power of two, at most {args.cap}; OVS select group measured with {args.flows} TCP connections"
    )
    header = (
        f"{'N':>3} | {'method':<16} | {'slots':>5} | {'balance':>7} | {'moved on add':>12} | {'ideal':>6} | "
        f"{'moved on remove':>15} | {'ideal':>6}"
    )
    print(header)
    print("-" * len(header))
    try:
        for n in sizes:
            rows = table_numbers(n, args.cap)
            if ovs is not None:
                rows["ovs select group"] = ovs.numbers(n)
            for name, (slots, bal, add, remove) in rows.items():
                ideal_remove = f"{1 / n:6.4f}" if n > 1 else "   -  "
                print(
                    f"{n:>3} | {name:<16} | {slots or '-':>5} | {bal:7.3f} | {add:12.4f} | {1 / (n + 1):6.4f} | "
                    f"{remove:15.4f} | {ideal_remove}"
                )
            print("-" * len(header))
        print()
        print("size steps (ryu_dsr, a backend added at a time): the add that doubles the table")
        print(f"{'N':>3} | {'slots':>11} | {'moved':>6} | {'ideal 1/N':>9}")
        for n, before, after, moved in size_steps(args.cap):
            print(f"{n:>3} | {before:>4} -> {after:<4} | {moved:6.4f} | {1 / n:9.4f}")
    finally:
        if ovs is not None:
            ovs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
