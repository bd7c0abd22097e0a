#!/usr/bin/env python3
"""How well backends share a pool, and how much a change of pool moves.

For N = 2..64 equal backends and the default table of 4099 slots, prints:

- balance: most slots any backend holds, over the ideal size/N (1.000 is perfect);
- moved on add (N -> N+1) and on remove (N -> N-1), as a fraction of all slots
  (flows), beside the ideal 1/(N+1) and 1/N;

for ryu_dsr's tables (Maglev first, then minimal-move rebalance), for plain
Maglev rebuilt from scratch on every change (what a stateless Maglev does),
and for Open vSwitch's own select group (default dp_hash method) measured on
the real switch in the same run: 8192 TCP connections (SYNs) with distinct source ports
go through a select group of N buckets, a learned flow records each flow's
bucket, the group is changed, the same flows are sent again.

Run as root (needs Open vSwitch; tools/setup installs it):
    python3 bench/hash_table.py [--flows 8192] [--sizes 2,4,8,16,32,64] [--no-ovs]
"""

from __future__ import annotations

import argparse
import re
import socket
import struct
import sys
import time
from collections import Counter

from ryu_dsr.flows.maglev import DEFAULT_TABLE_SIZE, build_table, changed_slots, rebalance

from ryu_dsr.lab import Lab


def keys(n: int) -> dict[str, int]:
    return {f"10.0.{i // 250}.{i % 250 + 1}": 100 for i in range(n)}


def balance(table: list) -> float:
    counts = Counter(table)
    return max(counts.values()) / (len(table) / len(counts))


def table_numbers(n: int, size: int) -> dict[str, tuple[float, float, float]]:
    pool = keys(n)
    added = dict(pool, **{"10.9.9.9": 100})
    removed = dict(list(pool.items())[:-1])
    ours = rebalance(None, pool, size)
    maglev = build_table(pool, size)
    out = {
        "ryu_dsr": (
            balance(ours),
            len(changed_slots(ours, rebalance(ours, added, size))) / size,
            len(changed_slots(ours, rebalance(ours, removed, size))) / size if n > 1 else 0.0,
        ),
        "maglev": (
            balance(maglev),
            len(changed_slots(maglev, build_table(added, size))) / size,
            len(changed_slots(maglev, build_table(removed, size))) / size if n > 1 else 0.0,
        ),
    }
    return out


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
        return bal, moved_add, moved_remove

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
    parser.add_argument("--sizes", default="2,4,8,16,32,64")
    parser.add_argument("--slots", type=int, default=DEFAULT_TABLE_SIZE)
    parser.add_argument("--flows", type=int, default=8192)
    parser.add_argument("--no-ovs", action="store_true")
    parser.add_argument("--send", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send:
        send_flows(args.send)
        return 0
    sizes = [int(n) for n in args.sizes.split(",")]
    ovs = None if args.no_ovs else OvsSelectGroup(args.flows)
    print(f"slots per pool: {args.slots}; OVS select group measured with {args.flows} TCP connections")
    header = f"{'N':>3} | {'method':<16} | {'balance':>7} | {'moved on add':>12} | {'ideal':>6} | {'moved on remove':>15} | {'ideal':>6}"
    print(header)
    print("-" * len(header))
    try:
        for n in sizes:
            rows = table_numbers(n, args.slots)
            if ovs is not None:
                rows["ovs select group"] = ovs.numbers(n)
            for name, (bal, add, remove) in rows.items():
                ideal_remove = f"{1 / n:6.4f}" if n > 1 else "   -  "
                print(
                    f"{n:>3} | {name:<16} | {bal:7.3f} | {add:12.4f} | {1 / (n + 1):6.4f} | {remove:15.4f} | {ideal_remove}"
                )
            print("-" * len(header))
    finally:
        if ovs is not None:
            ovs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
