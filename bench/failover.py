#!/usr/bin/env python3
"""How fast a dead backend leaves the hash, and what clients lose meanwhile.

On this machine: Open vSwitch (userspace), a client and three DSR backends
in namespaces, ryu-manager. The client makes one HTTP request every 20 ms
(new connection each, 5-tuple hash) while one backend's HTTP server is
killed, or its link is cut. For each setting, prints the time from the kill
to the backend being out of the hash (as the REST API reports it) and the
requests that failed. Then the backend is restored before the next row.

Then the switch itself: ovs-vswitchd is killed (kill -9: its datapath and
every flow gone) and started again a second later, while the client runs
and ten long-lived connections stream; prints how soon after the restart
the VIP answers, the requests that failed, and the connections kept.

Run as root:  .venv/bin/python bench/failover.py [--intervals 0.1,0.3,1.0]
"""

from __future__ import annotations

import argparse
import sys
import time

from ryu_dsr.lab import Lab, parse_stamp, rest

VIP = "10.0.0.100"
BASE = "http://127.0.0.1:18094"


def wait_state(ip: str, state: str, since: float | None = None, timeout: float = 15.0) -> float:
    """Seconds from ``since`` to the controller's change of state (its own
    timestamp of the transition, not when this poll saw it)."""
    started = time.time()
    while time.time() - started < timeout:
        status = rest(BASE, "GET", f"/v1/pools/web/backends/{ip}")[1]["status"]
        if status["state"] == state:
            if since is None:
                return 0.0
            return parse_stamp(status["since"]) - since
        time.sleep(0.005)
    raise RuntimeError(f"{ip} did not become {state} in {timeout} s")


def run_case(lab: Lab, servers: dict, label: str, fail, restore) -> tuple[str, float, int, int]:
    wait_state("10.0.0.12", "up")
    time.sleep(1.0)
    log = f"bench-{len(lab.procs)}.json"
    client = lab.spawn_client("c1", f"http://{VIP}/", "--count", "150", "--interval", "0.02", "--timeout", "1", log=log)
    time.sleep(1.0)
    failed_at = time.time()
    fail()
    detected = wait_state("10.0.0.12", "down" if "link" in label else "unhealthy", since=failed_at)
    client.wait(120)
    report = lab.client_report(log)
    restore()
    return label, detected, report["failed"], report["ok"] + report["failed"]


def vswitchd_case(lab: Lab) -> tuple[float, int, int, int]:
    streams = lab.spawn_client(
        "c1", f"http://{VIP}/", "--streams", "10", "--lines", "100", "--ms", "100", "--timeout", "30", log="s.json"
    )
    client = lab.spawn_client(
        "c1", f"http://{VIP}/", "--count", "200", "--interval", "0.02", "--timeout", "1", log="c.json"
    )
    time.sleep(1.0)
    lab.kill_vswitchd()
    time.sleep(1.0)
    restarted = time.time()
    lab.start_vswitchd()
    while lab.requests("c1", f"http://{VIP}/", 1, "--timeout", "0.3")["ok"] != 1:
        if time.time() - restarted > 30:
            raise RuntimeError("the VIP did not answer within 30 s of the restart")
    answered = time.time() - restarted
    client.wait(120)
    streams.wait(120)
    report, kept = lab.client_report("c.json"), lab.client_report("s.json")["intact"]
    return answered, report["failed"], report["ok"] + report["failed"], kept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intervals", default="0.1,0.3,1.0")
    args = parser.parse_args()
    lab = Lab("dsrfail")
    servers = {}
    try:
        lab.start_switch(controller_port=16694)
        lab.add_host("c1", 1)
        for name, last in (("b11", 11), ("b12", 12), ("b13", 13)):
            lab.add_host(name, last)
            lab.make_backend(name, [VIP])
            servers[name] = lab.serve_http(name)
        lab.start_controller(
            # short handover windows, so each case starts from the steady state
            {"state_file": str(lab.run_dir / "state.db"), "probe_ip": "10.0.0.250", "handover_window": 3},
            rest_port=18094,
            of_port=16694,
        )
        lab.wait_connected()
        rest(BASE, "POST", "/v1/pools", {"name": "web", "backends": [{"ip": f"10.0.0.{n}"} for n in (11, 12, 13)]})
        rest(
            BASE,
            "POST",
            "/v1/vips",
            {"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"},
        )
        rows = []

        def kill():
            lab.stop(servers["b12"])

        def restart():
            servers["b12"] = lab.serve_http("b12")

        for interval in [float(x) for x in args.intervals.split(",")]:
            timeout = round(min(0.25, interval * 0.8), 3)
            check = {"kind": "http", "port": 80, "interval": interval, "timeout": timeout, "rise": 2, "fall": 2}
            rest(BASE, "PATCH", "/v1/pools/web", {"health_check": check})
            label = f"http check every {interval:g} s, timeout {timeout:g} s, fall 2"
            rows.append(run_case(lab, servers, label, kill, restart))
        rows.append(
            run_case(
                lab,
                servers,
                "link cut (port status, no probe)",
                lambda: lab.set_link("b12", False),
                lambda: lab.set_link("b12", True),
            )
        )
        wait_state("10.0.0.12", "up")
        while rest(BASE, "GET", "/v1/pools/web")[1]["handover"]["slots"]:
            time.sleep(0.2)
        switch_row = vswitchd_case(lab)
    finally:
        lab.destroy()
    header = f"{'case':<46} | {'out of the hash after':>21} | {'failed requests':>15}"
    print(header)
    print("-" * len(header))
    for label, detected, failed, total in rows:
        print(f"{label:<46} | {detected * 1000:18.0f} ms | {failed:>6} of {total:<6}")
    answered, failed, total, kept = switch_row
    print()
    header = f"{'fault':<46} | {'VIP answers again':>21} | {'failed requests':>15} | long-lived kept"
    print(header)
    print("-" * len(header))
    label = "ovs-vswitchd killed, restarted 1 s later"
    print(f"{label:<46} | {answered * 1000:12.0f} ms after | {failed:>6} of {total:<6} | {kept} of 10")
    return 0


if __name__ == "__main__":
    sys.exit(main())
