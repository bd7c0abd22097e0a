#!/usr/bin/env python3
"""Balance by load: one weak backend of three, static weights against the
adaptive policies, side by side in one run, on real Open vSwitch.

On this machine: one userspace Open vSwitch bridge, a client and three DSR
backends in namespaces, ryu-manager ryu_dsr. Each backend serves
``GET /work?ms=10`` (10 ms of CPU per request) from a CPU cgroup: b11 gets
a third of the CPU of the others (cpu.cfs_quota_us 10 % of a core against
30 %), as a slower machine or a noisy neighbour would. All three have the
same configured weight. For each policy in turn:

  static            the configured weights
  least_connections the pool's ``adaptive`` policy (switch-measured active
                    connections per weight; interval 5 s, max_move 0.2)
  agent             each backend's tools/dsr_agent.py reports the CPU its
                    cgroup has left (``--cgroup``: periods not throttled),
                    read by an agent check

ApacheBench (16 concurrent, a new connection per request) runs twice: while
the policy settles (6 long-lived streams open across its moves count
connections broken; they are not in the second run, since idle
long-lived connections are load to a least-connections policy), then
measured. Then an open loop, as real clients are: 40 new connections a
second for 30 s whatever the answers (the pool serves about 60 a second,
the weak backend about 9, a third of 40 is 13). Printed: requests a
second, p50 / p99 (ms), errors, slots moved in each run, the weak
backend's slots and effective weight, streams intact, the open loop's
p50 / p99 and failures.

Run as root:  .venv/bin/python bench/adaptive.py [--requests N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from ryu_dsr.lab import TOOLS, Lab, rest, wait_backends_up, wait_no_hold

REST_PORT, OF_PORT = 18097, 16697
BASE = f"http://127.0.0.1:{REST_PORT}"
VIP = "10.0.0.100"
BACKENDS = {"b11": 11, "b12": 12, "b13": 13}
QUOTA = {"b11": 10_000, "b12": 30_000, "b13": 30_000}  # microseconds of CPU per 100 ms period
CGROUP = Path("/sys/fs/cgroup/cpu")
# `ip netns exec` mounts a sysfs of its own over /sys: the agents read the cpu hierarchy mounted here too
CGROUP_VIEW = Path("/run/dsradapt-cpu")
WORK = "/work?ms=10"
MAX_MOVE = 0.2  # the least-connections policy: at most this part of the pool's weight moves per interval
OPEN_RATE = 40  # new connections a second in the open-loop run: the pool serves about 60, the weak backend 9


def api(method: str, path: str, body: object = None) -> object:
    status, answer = rest(BASE, method, path, body)
    if status >= 300:
        raise RuntimeError(f"{method} {path}: {status} {answer}")
    return answer


def cgroup(name: str) -> Path:
    return CGROUP / f"dsradapt-{name}"


def limit(lab: Lab, name: str, pid: int) -> None:
    """Put the backend's server (and what it starts) in a CPU cgroup of its own."""
    path = cgroup(name)
    path.mkdir(exist_ok=True)
    (path / "cpu.cfs_period_us").write_text("100000")
    (path / "cpu.cfs_quota_us").write_text(str(QUOTA[name]))
    for task in (Path(f"/proc/{pid}/task")).iterdir():
        (path / "tasks").write_text(task.name)


def slot_counts() -> dict[str, int]:
    return {b["ip"]: b["status"]["slots"] for b in api("GET", "/v1/pools/web")["backends"]}


def weak_now() -> tuple[int, int]:
    """The weak backend's slots and effective weight, read together."""
    status = api("GET", "/v1/pools/web/backends/10.0.0.11")["status"]
    return status["slots"], status["effective_weight"]


def weight_steps(since: float) -> list[tuple[float, float]]:
    """Each change of effective weights in the pool's history since the
    wall-clock time ``since`` (the backends changed at one moment), newest
    first: (seconds ago, the part of the pool's effective weight it moved)."""
    history = api("GET", "/v1/pools/web/history")
    steps: dict[float, list[tuple[str, int, int]]] = {}
    for event in history["events"]:
        if str(event["from"]).startswith("weight ") and event["ago"] >= since - time.time():
            was, now = int(event["from"].split()[1]), int(event["to"].split()[1])
            steps.setdefault(event["ago"], []).append((event["backend"], was, now))
    weights = {b["ip"]: b["status"]["effective_weight"] for b in api("GET", "/v1/pools/web")["backends"]}
    out = []
    for ago in sorted(steps, reverse=True):  # newest first: the weights before each step, replayed back
        moved = sum(abs(now - was) for _ip, was, now in steps[ago])
        weights.update({ip: was for ip, was, _now in steps[ago]})
        out.append((ago, moved / max(1, sum(weights.values()))))
    return out


def settle(lab: Lab, requests: int, interval: float, since: float) -> int:
    """ApacheBench in chunks until the policy made no step for two of its
    intervals (at most five chunks more); how many chunks ran."""
    chunks = 1
    lab.ab(VIP, requests, 16, path=WORK)
    while chunks < 6:
        steps = weight_steps(since)
        if not steps or steps[0][0] < -2 * interval:
            break
        lab.ab(VIP, requests // 2, 16, path=WORK)
        chunks += 1
    return chunks


def run(lab: Lab, policy: str, requests: int) -> dict:
    body: dict = {"adaptive": None, "agent_check": None}
    interval = 5.0
    if policy == "least_connections":
        body["adaptive"] = {"interval": interval, "max_move": MAX_MOVE}
    if policy == "agent":
        interval = 1.0
        body["agent_check"] = {"port": 7777, "interval": interval, "timeout": 0.9, "step": 10}
    api("PATCH", "/v1/pools/web", body)
    since = time.time()
    time.sleep(2.0)
    wait_no_hold(BASE, timeout=30)
    before = slot_counts()
    # the policy settles under load, with long-lived connections open across its moves
    streams = lab.spawn_client(
        "c1", f"http://{VIP}/", "--streams", "6", "--lines", "200", "--ms", "100", log=f"adaptive-{policy}.json"
    )
    time.sleep(0.5)
    chunks = settle(lab, requests, interval, since)
    streams.wait(120)
    kept = lab.client_report(f"adaptive-{policy}.json")
    settled = slot_counts()
    wait_no_hold(BASE, timeout=30)
    measured = lab.ab(VIP, requests, 16, path=WORK)
    after = slot_counts()
    weak_slots, weak_weight = weak_now()
    # open loop: a fixed rate of new connections below the pool's capacity, above the weak backend's third
    out = lab.run(
        "c1", sys.executable, str(TOOLS / "dsr_client.py"), f"http://{VIP}{WORK}",
        "--rate", str(OPEN_RATE), "--duration", "30", "--timeout", "20", timeout=120,
    )  # fmt: skip
    paced = json.loads(out)
    paced["weak_slots"], paced["weak_weight"] = weak_now()
    paced["weak_share"] = paced["by_backend"].get("b11", 0) / max(1, paced["ok"])
    steps = weight_steps(since)
    return {
        **measured,
        "chunks": chunks,
        "moved": sum(abs(settled[ip] - before.get(ip, 0)) for ip in settled) // 2,
        "moved_measured": sum(abs(after[ip] - settled.get(ip, 0)) for ip in after) // 2,
        "slots": sum(after.values()),
        "weak_weight": weak_weight,
        "weak_slots": weak_slots,
        "steps": len(steps),
        "largest_step": max((moved for _ago, moved in steps), default=0.0),
        "intact": f"{kept['intact']}/6",
        "open": paced,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--policies", default="static,least_connections,agent")
    args = parser.parse_args()
    lab = Lab("dsradapt")
    CGROUP_VIEW.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "cgroup", "-o", "cpu", "cgroup", str(CGROUP_VIEW)], check=True)
    try:
        lab.start_switch(controller_port=OF_PORT)
        lab.add_host("c1", 1)
        for name, last in BACKENDS.items():
            lab.add_host(name, last)
            lab.make_backend(name, [VIP])
            server = lab.serve_http(name)
            limit(lab, name, server.pid)
            view = str(CGROUP_VIEW / cgroup(name).name)
            lab.spawn(name, sys.executable, str(TOOLS / "dsr_agent.py"), "--cgroup", view)
        settings = {"state_file": str(lab.run_dir / "state.db"), "probe_ip": "10.0.0.250", "stats_interval": 1}
        lab.start_controller(settings, rest_port=REST_PORT, of_port=OF_PORT)
        lab.wait_connected()
        pool = {
            "name": "web",
            "backends": [{"ip": f"10.0.0.{n}"} for n in BACKENDS.values()],
            "health_check": {"kind": "tcp", "port": 80, "interval": 1.0, "timeout": 0.9, "fall": 3},
        }
        api("POST", "/v1/pools", pool)
        api(
            "POST",
            "/v1/vips",
            {"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"},
        )
        wait_backends_up(BASE, 3)
        results = {policy: run(lab, policy, args.requests) for policy in args.policies.split(",")}
    finally:
        lab.destroy()
        for name in BACKENDS:
            try:
                cgroup(name).rmdir()
            except OSError:
                pass
        subprocess.run(["umount", str(CGROUP_VIEW)], check=False)
    print(f"one backend of three with a third of the others' CPU; {args.requests} requests of 10 ms CPU, 16 at a time")
    rows = (
        ("requests a second", lambda r: f"{r['per_second']:.1f}"),
        ("p50 / p99 (ms)", lambda r: f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f}"),
        ("errors", lambda r: str(r["failed"])),
        ("slots moved while settling / measured", lambda r: f"{r['moved']} / {r['moved_measured']} of {r['slots']}"),
        ("runs of ApacheBench while settling", lambda r: str(r["chunks"])),
        ("weak backend: slots / effective weight", lambda r: f"{r['weak_slots']} / {r['weak_weight']}"),
        ("changes of weight / the largest's move", lambda r: f"{r['steps']} / {r['largest_step']:.2f}"),
        ("long-lived streams intact while settling", lambda r: r["intact"]),
        (
            f"open loop, {OPEN_RATE} a second: p50 / p99 (ms)",
            lambda r: f"{r['open']['p50_ms']:.0f} / {r['open']['p99_ms']:.0f}",
        ),
        ("  answered / failed", lambda r: f"{r['open']['ok']} / {r['open']['failed']}"),
        (
            "  weak backend: share / slots / weight after",
            lambda r: f"{r['open']['weak_share']:.2f} / {r['open']['weak_slots']} / {r['open']['weak_weight']}",
        ),
    )
    print(f"  {'':<40}" + "".join(f"{policy:>20}" for policy in results))
    for name, cell in rows:
        print(f"  {name:<40}" + "".join(f"{cell(r):>20}" for r in results.values()))
    static = results.get("static")
    for policy, r in results.items():
        if static and policy != "static":
            better = static["p99_ms"] / r["p99_ms"] if r["p99_ms"] else float("nan")
            opened = static["open"]["p99_ms"] / r["open"]["p99_ms"] if r["open"]["p99_ms"] else float("nan")
            print(
                f"  {policy}: p99 {better:.1f}x better than static closed loop, {opened:.1f}x open loop "
                f"(goal: 2x), errors {r['failed']} / {r['open']['failed']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
