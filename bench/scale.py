#!/usr/bin/env python3
"""Control-plane scale on real Open vSwitch: thousands of VIPs over REST.

On this machine: one userspace Open vSwitch bridge and ryu-manager ryu_dsr
(with its SQLite store). Backends have configured MACs and locations and no
health checks, so no hosts are needed: what is measured is the controller.

  (a) 1,000 VIPs, each with its own pool of 4 backends: made one REST call
      at a time (POST pool with its backends, POST VIP), then deleted, then
      made again as one PUT /v1/config;
  (b) 10,000 VIPs over 100 pools of 10 backends: one PUT /v1/config, then
      100 single-object changes (a backend's weight), and one whose moved
      slots carried packets (SYNs put into the switch by ``ovs-ofctl
      packet-out``): the rules and flow changes of its handover, per slot;
  and a controller restart at 10,000 VIPs;
  (c) the same 10,000 VIPs, all IPv4 and then half IPv6 (every other VIP
      an IPv6 address on the same pools: dual-stack services), side by
      side: the PUT, flows per VIP, 100 single changes.

Each REST change returns once the switch confirmed it (barrier), so a
call's time is the time until the switch holds the change. Beside each bulk
load, in the same run: ``ovs-ofctl add-flows`` of the same flows (dumped
from the switch) into an empty bridge. Prints a table.

Run as root:  .venv/bin/python bench/scale.py [--small N]   (N VIPs for (a), for a quick look)
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from ryu_dsr.flows.frames import Tcp, build_tcp
from ryu_dsr.flows.pipeline import HASH_GROUP, LEARN_METER, Kind, Table

from ryu_dsr.lab import Lab, browse, rest

REST_PORT, OF_PORT = 18095, 16695
BASE = f"http://127.0.0.1:{REST_PORT}"
POLL_SECONDS = 10.0  # the default stats_interval
QUIET_SECONDS = 3  # a handover's window ends this long after what it keeps went quiet (default 30)


def call(method: str, path: str, body: object = None, timeout: float = 900) -> tuple[float, object]:
    started = time.perf_counter()
    status, answer = rest(BASE, method, path, body, timeout=timeout)
    took = time.perf_counter() - started
    if status >= 300:
        raise RuntimeError(f"{method} {path}: {status} {answer}")
    return took, answer


def pool_body(name: str, index: int, n_backends: int) -> dict:
    """A pool whose backends have configured MACs and switch ports."""
    backends = [
        {
            "ip": f"10.{64 + index // 250}.{index % 250}.{b + 1}",
            "mac": f"02:0b:{index // 250:02x}:{index % 250:02x}:00:{b + 1:02x}",
            "location": {"dpid": 1, "port": 10 + b},
        }
        for b in range(n_backends)
    ]
    return {"name": name, "backends": backends, "health_check": {"kind": "none"}}


def vip_body(index: int, pool: str, ipv6: bool = False) -> dict:
    ip = f"2001:db8:172::{index + 1:x}" if ipv6 else f"172.{16 + index // 62500}.{index // 250 % 250}.{index % 250 + 1}"
    return {
        "name": f"vip{index}",
        "ip": ip,
        "protocol": "tcp",
        "port": 80,
        "pool": pool,
        "hash": "5tuple",
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ms(values: list[float]) -> str:
    return f"{1000 * percentile(values, 0.5):.0f} / {1000 * percentile(values, 0.99):.0f}"


def fetch(path: str) -> float:
    """Seconds one GET takes, whatever it answers (JSON or Prometheus text)."""
    import urllib.request

    started = time.perf_counter()
    with urllib.request.urlopen(BASE + path, timeout=120) as response:
        response.read()
    return time.perf_counter() - started


def _p50_max(values: list[float]) -> str:
    return f"{percentile(values, 0.5) * 1000:.0f} / {max(values) * 1000:.0f}"


LATE_WINDOW = 21.0  # seconds: ryu_dsr_loop_late_seconds covers the last 10-20 s


def loop_late() -> tuple[float, float]:
    """The longest the controller's loop woke up late lately, and the part
    of it the controller itself worked (its CPU time), from /metrics."""
    import urllib.request

    found = {}
    with urllib.request.urlopen(BASE + "/metrics", timeout=60) as response:
        for line in response.read().decode().splitlines():
            name, _, value = line.partition(" ")
            if name in ("ryu_dsr_loop_late_seconds", "ryu_dsr_loop_late_working_seconds"):
                found[name] = float(value)
    return found.get("ryu_dsr_loop_late_seconds", float("nan")), found.get("ryu_dsr_loop_late_working_seconds", 0.0)


def probe(work) -> list[float]:
    """Seconds each small REST read took (one every 5 ms, from another
    thread) while ``work()`` ran."""
    import threading

    waits: list[float] = []
    done = threading.Event()

    def ask() -> None:
        while not done.is_set():
            waits.append(fetch("/v1/vips/vip0"))
            time.sleep(0.005)

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        work()
    finally:
        done.set()
        asker.join()
    return waits


def status_page_seconds(pool: str) -> float:
    """Seconds headless Chromium takes to load the status page, draw a
    pool's charts and hand back the page (its start included)."""
    started = time.perf_counter()
    dom = browse(f"{BASE}/status?chart={pool}", 1000)
    took = time.perf_counter() - started
    if "data-shares" not in dom:
        raise RuntimeError("the status page drew no chart")
    return took


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(pid: int, seconds: float = 5.0) -> float:
    """Share of one core the process uses while nothing changes (its
    periodic work: health checks, ARP probes, drains)."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Bench:
    def __init__(self) -> None:
        self.lab = Lab("dsrscale")
        self.lab.start_switch(controller_port=OF_PORT)
        # counters polled at the default interval: the idle CPU row includes them
        self.settings = {
            "state_file": str(self.lab.run_dir / "state.db"),
            "hash_mode": "ovs",
            "stats_interval": POLL_SECONDS,
            "handover_quiet": QUIET_SECONDS,
        }
        self.controller = self.start()
        self.rows: list[tuple[str, str]] = []
        self.figures: dict[str, float] = {}  # what the goals of issue 28 are read against

    def start(self):
        proc = self.lab.start_controller(self.settings, rest_port=REST_PORT, of_port=OF_PORT)
        self.lab.wait_connected(60)
        return proc

    def flows(self) -> int:
        return sum(
            1 for line in self.lab.ofctl("dump-flows", "--no-stats", self.lab.bridge).splitlines() if "actions" in line
        )

    def ofctl_add_flows(self, bundle: bool = False) -> float:
        """Seconds ``ovs-ofctl add-flows`` takes to load the switch's own flows
        into an empty bridge (one by one, or with ``bundle`` as one bundle)."""
        dump = self.lab.ofctl("dump-flows", "--no-stats", self.lab.bridge)
        path = self.lab.run_dir / "flows.txt"
        path.write_text("\n".join(line.strip() for line in dump.splitlines() if "actions" in line) + "\n")
        bridge = "dsrscale-cmp"
        self.lab.vsctl(
            "--may-exist", "add-br", bridge, "--", "set", "bridge", bridge,
            "datapath_type=netdev", "protocols=OpenFlow13", "fail_mode=secure",
        )  # fmt: skip
        try:
            # what the flows refer to, made as the controller makes them
            group = f"group_id={HASH_GROUP},type=select,bucket=weight=1,actions=resubmit(,{int(Table.DECIDE)})"
            self.lab.ofctl("add-group", bridge, group)
            self.lab.ofctl(
                "add-meter", bridge, f"meter={LEARN_METER},pktps,burst,band=type=drop,rate=2000,burst_size=200"
            )
            started = time.perf_counter()
            self.lab.ofctl(*(["--bundle"] if bundle else []), "add-flows", bridge, str(path))
            return time.perf_counter() - started
        finally:
            self.lab.vsctl("--if-exists", "del-br", bridge)

    def row(self, label: str, value: str) -> None:
        self.rows.append((label, value))
        print(f"  {label:<62} {value}", flush=True)

    def weight_changes(self, pools: list[str], n: int, per_pool: int) -> list[float]:
        """``n`` backend weight changes over ``pools``, each a real one (the
        backend's weight toggles between 100 and 50: it moves slots), so
        the same kind of change at 10 and at 10,000 VIPs."""
        took, weights = [], {}
        for i in range(n):
            pool = pools[i % len(pools)]
            index = int(pool.removeprefix("pool"))
            ip = f"10.{64 + index // 250}.{index % 250}.{1 + i % per_pool}"
            weights[ip] = 150 - weights.get(ip, 100)
            took.append(call("PATCH", f"/v1/pools/{pool}/backends/{ip}", {"weight": weights[ip]})[0])
        return took

    def case_a(self, n: int) -> None:
        print(f"(a) {n} VIPs, each its own pool of 4 backends", flush=True)
        started = time.perf_counter()
        latencies = []
        for i in range(n):
            latencies.append(call("POST", "/v1/pools", pool_body(f"pool{i}", i, 4))[0])
            latencies.append(call("POST", "/v1/vips", vip_body(i, f"pool{i}"))[0])
        total = time.perf_counter() - started
        flows = self.flows()
        self.row(f"one call at a time: {2 * n} calls, until the switch confirmed", f"{total:.1f} s")
        self.row("  REST p50 / p99 of the first 50 calls (ms)", ms(latencies[:50]))
        self.row("  REST p50 / p99 of the last 50 calls (ms)", ms(latencies[-50:]))
        self.row("  flows on the switch / per VIP", f"{flows} / {flows / n:.1f}")
        document = call("GET", "/v1/config")[1]
        call("PUT", "/v1/config", {"pools": [], "vips": []})
        took = call("PUT", "/v1/config", document)[0]
        self.row("one PUT /v1/config of the same, until the switch confirmed", f"{took:.2f} s")
        self.row("  ovs-ofctl add-flows of the same flows into an empty bridge", f"{self.ofctl_add_flows():.2f} s")
        self.row("  controller RSS", f"{rss_mb(self.controller.pid):.0f} MB")
        call("PUT", "/v1/config", {"pools": [], "vips": []})

    def case_b(self, n_vips: int, n_pools: int, per_pool: int) -> None:
        print(f"(b) {n_vips} VIPs over {n_pools} pools of {per_pool} backends", flush=True)
        small = {"pools": [pool_body("pool0", 0, per_pool)], "vips": [vip_body(i, "pool0") for i in range(10)]}
        call("PUT", "/v1/config", small)
        at_ten = self.weight_changes(["pool0"], 100, per_pool)
        self.row("  100 single changes at 10 VIPs: REST p50 / p99 (ms)", ms(at_ten))
        pools = [pool_body(f"pool{p}", p, per_pool) for p in range(n_pools)]
        vips = [vip_body(i, f"pool{i % n_pools}") for i in range(n_vips)]
        took = call("PUT", "/v1/config", {"pools": pools, "vips": vips})[0]
        flows = self.flows()
        self.row("one PUT /v1/config, until the switch confirmed", f"{took:.2f} s")
        ofctl, bundled = self.ofctl_add_flows(), self.ofctl_add_flows(bundle=True)
        self.row("  ovs-ofctl add-flows of the same flows into an empty bridge", f"{ofctl:.2f} s")
        self.row("  ovs-ofctl --bundle add-flows of the same (one bundle)", f"{bundled:.2f} s")
        self.row("  flows on the switch / per VIP", f"{flows} / {flows / n_vips:.1f}")
        at_many = self.weight_changes([f"pool{p}" for p in range(n_pools)], 100, per_pool)
        self.row(f"  100 single changes at {n_vips} VIPs: REST p50 / p99 (ms)", ms(at_many))
        self.row("  p99 at many VIPs / p99 at 10 VIPs", f"{percentile(at_many, 0.99) / percentile(at_ten, 0.99):.2f}x")
        self.row("  controller RSS", f"{rss_mb(self.controller.pid):.0f} MB")
        self.busy_change()
        self.figures.update(
            put_ratio=took / ofctl,
            put_bundle_ratio=took / bundled,
            p99=percentile(at_many, 0.99) * 1000,
            p99_ratio=percentile(at_many, 0.99) / percentile(at_ten, 0.99),
            rss=rss_mb(self.controller.pid),
        )
        self.row(
            f"  controller CPU while idle, counters polled every {POLL_SECONDS:.0f} s (share of a core)",
            f"{idle_cpu(self.controller.pid, 2 * POLL_SECONDS):.3f}",
        )
        self.observability(n_vips)
        self.restart()
        self.goals()

    def goals(self) -> None:
        """Issue 28's goals, each figure of this run beside the issue's
        baseline (README's run at HEAD 36366bd) and the goal."""
        f = self.figures
        rows = (
            ("single change at 10,000 VIPs: p99 (ms)", "203", f"{f['p99']:.0f}", "< 50", f["p99"] < 50),
            ("  p99 / p99 at 10 VIPs", "7.27x", f"{f['p99_ratio']:.2f}x", "<= 1.5x", f["p99_ratio"] <= 1.5),
            ("bulk PUT / ovs-ofctl add-flows", "1.4-1.5x", f"{f['put_ratio']:.2f}x", "<= 1.1x", f["put_ratio"] <= 1.1),
            ("  bulk PUT / ovs-ofctl --bundle add-flows", "", f"{f['put_bundle_ratio']:.2f}x", "", None),
            ("controller RSS, steady (MB)", "423-445", f"{f['rss']:.0f}", "< 250", f["rss"] < 250),
            ("controller RSS after a restart (MB)", "", f"{f['rss_restart']:.0f}", "< 250", f["rss_restart"] < 250),
            ("GET /metrics p50 (ms)", "834", f"{f['metrics']:.0f}", "< 100", f["metrics"] < 100),
            ("longest wait of a small read (ms)", "522", f"{f['wait']:.0f}", "<= 20", f["wait"] <= 20),
            ("  the same, nothing else asked (ms)", "", f"{f['idle_wait']:.0f}", "", None),
            ("the loop's own lateness, at most (ms)", "", f"{f['late']:.0f}", "", None),
            ("  of it, the controller working (ms)", "", f"{f['working']:.0f}", "<= 20", f["working"] <= 20),
            ("restart: in line with the switch's flows (s)", "17", f"{f['restart']:.1f}", "< 5", f["restart"] < 5),
            ("handover rules per moved slot", "3", f"{f['handover_rules']:.2f}", "<= 1.5", f["handover_rules"] <= 1.5),
            ("  flow changes per moved slot, whole handover", "", f"{f['handover_writes']:.2f}", "", None),
        )
        print("  issue 28's goals at 10,000 VIPs", flush=True)
        print(f"    {'':<46}{'baseline':>10}{'this run':>10}{'goal':>9}  met", flush=True)
        for label, baseline, now, goal, met in rows:
            mark = "" if met is None else ("yes" if met else "no")
            print(f"    {label:<46}{baseline:>10}{now:>10}{goal:>9}  {mark}", flush=True)

    def case_c(self, n_vips: int, n_pools: int, per_pool: int) -> None:
        print(f"(c) {n_vips} VIPs over {n_pools} pools: IPv4 only, then half IPv6", flush=True)
        pools = [pool_body(f"pool{p}", p, per_pool) for p in range(n_pools)]
        figures = {}
        for label, ipv6 in (("IPv4 only", lambda i: False), ("half IPv6", lambda i: i % 2 == 1)):
            call("PUT", "/v1/config", {"pools": [], "vips": []})
            vips = [vip_body(i, f"pool{i % n_pools}", ipv6(i)) for i in range(n_vips)]
            took = call("PUT", "/v1/config", {"pools": pools, "vips": vips})[0]
            flows = self.flows()
            changes = self.weight_changes([f"pool{p}" for p in range(n_pools)], 100, per_pool)
            figures[label] = (took, flows / n_vips, changes, rss_mb(self.controller.pid))
        print(f"  {'':<40}{'IPv4 only':>14}{'half IPv6':>14}")
        rows = (
            ("one PUT /v1/config, until confirmed (s)", lambda f: f"{f[0]:.2f}"),
            ("flows on the switch per VIP", lambda f: f"{f[1]:.1f}"),
            ("100 single changes: p50 / p99 (ms)", lambda f: ms(f[2])),
            ("controller RSS (MB)", lambda f: f"{f[3]:.0f}"),
        )
        for name, cell in rows:
            print(f"  {name:<40}{cell(figures['IPv4 only']):>14}{cell(figures['half IPv6']):>14}", flush=True)
        call("PUT", "/v1/config", {"pools": [], "vips": []})

    def table_flows(self) -> tuple[int, int]:
        """(flows of the tables a handover writes to, but pins; slot rules
        that name backends for table MOVED) on the switch now."""
        tables = (Table.SLOTS, Table.MOVED, Table.UNPINNED, Table.TRACKED)
        flows = naming = 0
        for table in tables:
            for line in self.lab.ofctl("dump-flows", "--no-stats", self.lab.bridge, f"table={int(table)}").splitlines():
                cookie = re.search(r"cookie=0x([0-9a-f]+)", line)
                if "actions" in line and not (cookie and int(cookie[1], 16) >> 56 == Kind.PIN):
                    flows += 1
                    naming += f"resubmit(,{int(Table.MOVED)})" in line
        return flows, naming

    def busy_change(self) -> None:
        """One weight change of a pool whose slots carried packets (SYNs to
        its VIP from 4,000 client ports: nearly every slot of its 1,024, put
        into the switch by ``ovs-ofctl packet-out``): its moved slots hand
        over. The rules the switch holds for the handover beyond the steady
        ones, and the flow changes the controller sent from the change to
        the window's end, per slot that handed over; then the change back,
        with no packet since."""
        vip = call("GET", "/v1/vips/vip0")[1]
        frames = [
            build_tcp(Tcp("02:00:00:00:aa:01", vip["mac"], "10.200.0.1", vip["ip"], 40000 + n, 80, 1, 0, 0x02, b""))
            for n in range(4000)
        ]
        for i in range(0, len(frames), 200):
            self.lab.ofctl("packet-out", self.lab.bridge, "LOCAL", "table", *(f.hex() for f in frames[i : i + 200]))
        steady = self.table_flows()[0]
        sent = call("GET", "/v1/switches")[1][0]["flow_mods"]
        ip = "10.64.0.1"
        weight = call("GET", f"/v1/pools/pool0/backends/{ip}")[1]["weight"]
        call("PATCH", f"/v1/pools/pool0/backends/{ip}", {"weight": 150 - weight})
        handing, most, naming = 0, 0, 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            slots = call("GET", "/v1/pools/pool0")[1]["handover"]["slots"]
            flows, named = self.table_flows()
            handing, most, naming = max(handing, slots), max(most, flows - steady), max(naming, named)
            if handing and not slots:
                break
            time.sleep(0.5)
        writes = call("GET", "/v1/switches")[1][0]["flow_mods"] - sent
        # the same change back, with no packet since: a slot that carried none since its backend was chosen
        # moves at once
        call("PATCH", f"/v1/pools/pool0/backends/{ip}", {"weight": weight})
        again = 0
        for _ in range(6):
            again = max(again, call("GET", "/v1/pools/pool0")[1]["handover"]["slots"])
            time.sleep(0.5)
        self.row("  a change whose slots carried packets: slots handed over", f"{handing}")
        self.row("    rules on the switch for the handover, per slot (most)", f"{most / max(handing, 1):.2f}")
        self.row("    slot rules that name backends for table MOVED (most)", f"{naming}")
        self.row("    flow changes sent, the change to the window's end, per slot", f"{writes / max(handing, 1):.2f}")
        self.row("  the change back, no packet since: slots handed over", f"{again}")
        self.figures.update(handover_rules=most / max(handing, 1), handover_writes=writes / max(handing, 1))

    def observability(self, n_vips: int) -> None:
        """What reading the counters and serving them costs at this size."""
        polls = []
        for _ in range(3):
            time.sleep(POLL_SECONDS)
            polls.append(call("GET", "/v1/switches")[1][0]["last_poll"])
        took = [p["seconds"] for p in polls if p]
        self.row(
            f"  one counter poll at {n_vips} VIPs ({polls[-1]['flows']} flows): p50 / max (ms)",
            _p50_max(took),
        )
        self.stalls(n_vips)

    def stalls(self, n_vips: int) -> None:
        """What a user of the REST API waits while the controller works on
        something big: a small read (one VIP) every 5 ms, its longest wait
        while nothing else is asked, during each big read, and over a
        counter poll; beside it, how late the controller's own loop woke
        up (``ryu_dsr_loop_late_seconds``: the wait that is the
        controller's, not this machine's two cores being busy). Each phase
        starts after a quiet window, so the figure is its own."""
        quiet = probe(lambda: time.sleep(3.0))
        self.row("  a small REST read every 5 ms, nothing else asked: p50 / max (ms)", _p50_max(quiet))
        self.figures["idle_wait"] = max(quiet) * 1000
        trace = "/v1/trace?vip=vip0&client=10.200.0.1&client_port=40000&switch=1&in_port=1"
        for path, goal in (
            ("/metrics", "goal: scrape < 100 ms"),
            ("/v1/stats", ""),
            ("/v1/status?limit=50", ""),
            ("/v1/pools/pool0/history", "the charts of one pool"),
            (trace, "one connection's trace"),
        ):
            time.sleep(LATE_WINDOW)
            times: list[float] = []
            waits = probe(lambda path=path, times=times: times.extend(fetch(path) for _ in range(5)))
            late, working = loop_late()
            self.row(f"  GET {path}: p50 / max (ms){'  [' + goal + ']' if goal else ''}", _p50_max(times))
            self.row("    a small read sent meanwhile waited at most (ms)  [goal: 20]", f"{max(waits) * 1000:.0f}")
            self.row("    the controller's own loop ran late at most (ms)", f"{late * 1000:.0f}")
            self.row("      of it, the controller working (its CPU time) (ms)  [goal: 20]", f"{working * 1000:.0f}")
            if path == "/metrics":
                self.figures["metrics"] = percentile(times, 0.5) * 1000
            if path in ("/metrics", "/v1/stats", "/v1/status?limit=50"):  # the goal's scrape, status read
                self.figures["wait"] = max(self.figures.get("wait", 0.0), max(waits) * 1000)
                self.figures["late"] = max(self.figures.get("late", 0.0), late * 1000)
                self.figures["working"] = max(self.figures.get("working", 0.0), working * 1000)
        self.row(
            "  the status page with one pool's charts, drawn by headless Chromium (s)",
            f"{status_page_seconds('pool0'):.2f}",
        )
        time.sleep(LATE_WINDOW)
        during_poll = probe(lambda: time.sleep(POLL_SECONDS + 1))
        late, working = loop_late()
        self.row(
            f"  a small read over a counter poll at {n_vips} VIPs waited at most (ms)", f"{max(during_poll) * 1000:.0f}"
        )
        self.row("    the controller's own loop ran late at most (ms)", f"{late * 1000:.0f}")
        self.row("      of it, the controller working (its CPU time) (ms)  [goal: 20]", f"{working * 1000:.0f}")
        self.figures["wait"] = max(self.figures.get("wait", 0.0), max(during_poll) * 1000)
        self.figures["late"] = max(self.figures.get("late", 0.0), late * 1000)
        self.figures["working"] = max(self.figures.get("working", 0.0), working * 1000)

    def restart(self) -> None:
        flows_before = self.flows()
        self.lab.stop(self.controller)
        started = time.perf_counter()
        self.controller = self.start()
        serving = time.perf_counter() - started
        while True:
            switches = call("GET", "/v1/switches")[1]
            if switches and switches[0]["in_line"]:
                break
            time.sleep(0.1)
        in_line = time.perf_counter() - started
        self.row("controller restart: REST answering after", f"{serving:.1f} s")
        self.row("  switch compared and in line after", f"{in_line:.1f} s")
        self.row("  flow changes sent on reconnect", str(switches[0]["flow_mods"]))
        self.row("  flows before / after", f"{flows_before} / {self.flows()}")
        self.row("  controller RSS after the restart", f"{rss_mb(self.controller.pid):.0f} MB")
        self.figures.update(restart=in_line, rss_restart=rss_mb(self.controller.pid))

    def close(self) -> None:
        self.lab.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=0, help="a quick run: this many VIPs in (a), 10x in (b)")
    parser.add_argument("--cases", default="a,b,c", help="which cases to run: a, b, c, comma separated")
    args = parser.parse_args()
    n_a = args.small or 1000
    n_b = args.small * 10 if args.small else 10000
    bench = Bench()
    try:
        if "a" in args.cases:
            bench.case_a(n_a)
        if "b" in args.cases:
            bench.case_b(n_b, max(1, n_b // 100), 10)
        if "c" in args.cases:
            bench.case_c(n_b, max(1, n_b // 100), 10)
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
