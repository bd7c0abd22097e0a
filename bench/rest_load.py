#!/usr/bin/env python3
"""The REST API under load: 50 concurrent clients, 10,000 mixed requests.

On this machine: one userspace Open vSwitch bridge and ryu-manager ryu_dsr
with its SQLite store; 20 pools of 4 backends (configured MACs and ports,
no health checks: the controller is what is measured) and 200 VIPs to
start with. Each client keeps one HTTP/1.1 connection and sends, at random:
reads (list VIPs, one VIP, one pool, switches: 60 %), VIP creations (10 %),
VIP changes (10 %), VIP deletions (10 %) and backend weight changes (10 %),
each write to an object no other client touches at that moment. A write
returns once the switch confirmed it (barrier), so its time includes the
switch.

Prints errors (5xx, timeouts, any answer other than the one expected),
p50/p99/max per kind, and whether the switch matches the final state: every
VIP that exists has its entry rule on the switch and no deleted one has.

Run as root:  .venv/bin/python bench/rest_load.py [--clients 50] [--requests 10000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import sys
import threading
import time
from collections import Counter, defaultdict

from ryu_dsr.lab import TOKENS, Lab, rest, run_at_once

REST_PORT, OF_PORT = 18093, 16693
BASE = f"http://127.0.0.1:{REST_PORT}"
POOLS, BACKENDS, VIPS_AT_START = 20, 4, 200
KINDS = ("read", "create", "change", "delete", "weight")
WEIGHTS = (60, 10, 10, 10, 10)


def pool_body(index: int) -> dict:
    backends = [
        {
            "ip": f"10.70.{index}.{b + 1}",
            "mac": f"02:0c:00:{index:02x}:00:{b + 1:02x}",
            "location": {"dpid": 1, "port": 10 + b},
        }
        for b in range(BACKENDS)
    ]
    return {"name": f"pool{index}", "backends": backends, "health_check": {"kind": "none"}}


def vip_body(number: int) -> dict:
    return {
        "name": f"vip{number}",
        "ip": f"10.80.{number // 250}.{number % 250 + 1}",
        "protocol": "tcp",
        "port": 80,
        "pool": f"pool{number % POOLS}",
        "hash": "5tuple",
    }


class Shared:
    """VIP names that exist, and those a client holds for a write."""

    def __init__(self, numbers) -> None:
        self.lock = threading.Lock()
        self.existing = set(numbers)
        self.busy: set[int] = set()
        self.next_number = max(self.existing, default=0) + 1

    def take(self, kind: str, rng: random.Random) -> int | None:
        with self.lock:
            if kind == "create":
                number = self.next_number
                self.next_number += 1
            else:
                free = list(self.existing - self.busy)
                if not free:
                    return None
                number = rng.choice(free)
            self.busy.add(number)
            return number

    def give_back(self, kind: str, number: int, ok: bool) -> None:
        with self.lock:
            self.busy.discard(number)
            if ok and kind == "create":
                self.existing.add(number)
            if ok and kind == "delete":
                self.existing.discard(number)


def client(seed: int, count: int, shared: Shared, times: dict, errors: Counter, pace: float) -> None:
    """``count`` requests, back to back, or one every ``pace`` seconds."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", REST_PORT, timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKENS[BASE]}"}
    begin = time.perf_counter() + rng.random() * pace
    for i in range(count):
        if pace:
            time.sleep(max(0.0, begin + i * pace - time.perf_counter()))
        kind = rng.choices(KINDS, WEIGHTS)[0]
        number = None if kind == "read" else shared.take(kind, rng)
        if kind != "read" and number is None:
            kind = "read"
        if kind == "read":
            name = f"vip{rng.choice(sorted(shared.existing))}" if shared.existing else "vip0"
            method, path, body, want = rng.choice(
                [
                    ("GET", "/v1/vips?limit=100", None, (200,)),
                    ("GET", f"/v1/vips/{name}", None, (200, 404)),  # 404: deleted meanwhile
                    ("GET", f"/v1/pools/pool{rng.randrange(POOLS)}", None, (200,)),
                    ("GET", "/v1/switches", None, (200,)),
                ]
            )
        elif kind == "create":
            method, path, body, want = "POST", "/v1/vips", vip_body(number), (201,)
        elif kind == "change":
            method, path, body, want = "PATCH", f"/v1/vips/vip{number}", {"port": rng.choice((80, 443, 8080))}, (200,)
        elif kind == "delete":
            method, path, body, want = "DELETE", f"/v1/vips/vip{number}", None, (204,)
        else:
            pool = f"pool{number % POOLS}"
            backend = f"10.70.{number % POOLS}.{rng.randrange(BACKENDS) + 1}"
            method, path, body, want = (
                "PATCH",
                f"/v1/pools/{pool}/backends/{backend}",
                {"weight": rng.choice((1, 2, 3))},
                (200, 409),  # 409: a pool's weights in flight from another client's change
            )
        started = time.perf_counter()
        status = None
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            answer = conn.getresponse()
            answer.read()
            status = answer.status
        except (OSError, http.client.HTTPException) as error:
            errors[f"{kind}: {type(error).__name__}"] += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", REST_PORT, timeout=30)
        took = time.perf_counter() - started
        if status is not None:
            times[kind].append(took)
            if status not in want:
                errors[f"{kind}: {status}"] += 1
        if number is not None:
            shared.give_back(kind, number, status in want and status < 300)
    conn.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


def switch_matches(lab: Lab) -> tuple[bool, str]:
    """Every VIP of the final state has its entry rule on the switch (its
    address and port), and no other VIP address has one."""
    _, vips = rest(BASE, "GET", "/v1/vips?limit=10000")
    wanted = {(v["ip"], v["port"]) for v in vips}
    flows = lab.ofctl("dump-flows", lab.bridge, "table=0")
    found = set()
    for line in flows.splitlines():
        match = re.search(r"tcp,nw_dst=(10\.80\.[0-9.]+),tp_dst=(\d+) actions=", line)
        if match:
            found.add((match[1], int(match[2])))
    missing, extra = wanted - found, found - wanted
    return not missing and not extra, f"{len(wanted)} VIPs, {len(missing)} missing, {len(extra)} extra on the switch"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--rates", default="0,100", help="requests a second in all, per run; 0: back to back")
    args = parser.parse_args()
    lab = Lab("dsrrest")
    try:
        lab.start_switch(controller_port=OF_PORT)
        lab.start_controller({"state_file": str(lab.run_dir / "state.db")}, rest_port=REST_PORT, of_port=OF_PORT)
        lab.wait_connected()
        for index in range(POOLS):
            assert rest(BASE, "POST", "/v1/pools", pool_body(index))[0] == 201
        document = {
            "pools": [pool_body(i) for i in range(POOLS)],
            "vips": [vip_body(n) for n in range(VIPS_AT_START)],
        }
        assert rest(BASE, "PUT", "/v1/config", document, timeout=300)[0] == 200
        runs = [run(lab, args.clients, args.requests, float(rate)) for rate in args.rates.split(",")]
    finally:
        lab.destroy()
    failed = False
    for rate, (times, errors, elapsed, matches, how) in zip(args.rates.split(","), runs):
        total = sum(len(v) for v in times.values())
        offered = "back to back" if float(rate) == 0 else f"at {float(rate):g} a second"
        print(f"{args.clients} clients {offered}: {total} requests in {elapsed:.1f} s ({total / elapsed:.0f} a second)")
        header = f"{'kind':<8} | {'requests':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'max ms':>7}"
        print(header)
        print("-" * len(header))
        every = [t for values in times.values() for t in values]
        for kind in (*KINDS, "all"):
            values = every if kind == "all" else times[kind]
            p50, p99, top = (percentile(values, p) * 1000 for p in (0.5, 0.99, 1.0))
            print(f"{kind:<8} | {len(values):>8} | {p50:7.1f} | {p99:7.1f} | {top:7.1f}")
        print(f"errors: {sum(errors.values())} {dict(errors) if errors else ''}")
        print(f"switch matches the final state: {'yes' if matches else 'NO'} ({how})")
        print()
        failed = failed or bool(errors) or not matches
    return 1 if failed else 0


def run(lab: Lab, clients: int, requests: int, rate: float):
    """One load run from the state the last one left."""
    _, vips = rest(BASE, "GET", "/v1/vips?limit=10000")
    shared = Shared([int(v["name"][3:]) for v in vips])
    times: dict[str, list[float]] = defaultdict(list)
    errors: Counter = Counter()
    pace = clients / rate if rate else 0.0
    threads = [
        threading.Thread(
            target=client, args=(seed + int(rate) * 1000, requests // clients, shared, times, errors, pace)
        )
        for seed in range(clients)
    ]
    elapsed = run_at_once(threads)
    time.sleep(1)
    matches, how = switch_matches(lab)
    return times, errors, elapsed, matches, how


if __name__ == "__main__":
    sys.exit(main())
