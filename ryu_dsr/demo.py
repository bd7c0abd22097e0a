"""The demo fabric: `make demo` (or ``python -m ryu_dsr.demo``).

Builds, on this machine, one Open vSwitch bridge (userspace datapath), two
clients and three DSR backends in network namespaces (every host
dual-stack), starts ``ryu-manager ryu_dsr``, creates a pool and two VIPs on
it, an IPv4 and an IPv6 one (a dual-stack service), with the REST calls the
README shows, drives real requests to both and prints what happened. Then it stays
up for your own curl and REST calls until Ctrl-C or ``make demo-stop``.

    python -m ryu_dsr.demo [--exit-after-report] [--stop] [--rest-port 8080] [--of-port 6653]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from ryu_dsr.lab import Lab, rest, wait_backends_up, wait_no_hold

PREFIX = "dsrdemo"
VIP = "10.0.0.100"
VIP6 = "2001:db8::100"
PROBE_IP = "10.0.0.250"  # source of the controller's HTTP health probes
CLIENTS = {"c1": 1, "c2": 2}
BACKENDS = {"b1": 11, "b2": 12, "b3": 13}


def say(text: str = "") -> None:
    print(text, flush=True)


def token_header() -> str:
    """The header a change needs, reading the demo controller's token file."""
    return f'-H "Authorization: Bearer $(cut -d: -f2 {Lab(PREFIX).run_dir / "api-token"})"'


def curl(method: str, path: str, body: dict | None, port: int) -> str:
    data = f" -H 'Content-Type: application/json' -d '{json.dumps(body)}'" if body is not None else ""
    auth = f" {token_header()}" if method != "GET" else ""
    return f"curl -X {method}{auth} http://127.0.0.1:{port}{path}{data}"


def api(base_port: int, method: str, path: str, body: dict | None = None):
    say(f"  $ {curl(method, path, body, base_port)}")
    status, answer = rest(f"http://127.0.0.1:{base_port}", method, path, body)
    if status >= 300:
        raise RuntimeError(f"{method} {path}: {status} {answer}")
    say(f"    -> {status}")
    return answer


def build(lab: Lab, rest_port: int, of_port: int, ovsdb_port: int) -> None:
    say("== Open vSwitch (userspace datapath) and hosts in network namespaces")
    lab.start_switch(controller_port=of_port)
    for name, last in CLIENTS.items():
        host = lab.add_host(name, last, ip6=True)
        say(f"  client  {name}: {host.ip} {lab.address6(last)} {host.mac} (switch port {host.ofport})")
    for name, last in BACKENDS.items():
        host = lab.add_host(name, last, ip6=True)
        lab.make_backend(name, [VIP, VIP6])
        lab.serve_http(name, bind="::")
        say(
            f"  backend {name}: {host.ip} {lab.address6(last)} {host.mac} (switch port {host.ofport}); VIPs {VIP} "
            f"and {VIP6} on lo, arp_ignore=1, arp_announce=2, HTTP on :80 (both families)"
        )
    say("== ryu-manager ryu_dsr")
    remote = lab.serve_ovsdb(ovsdb_port)  # the controller prepares the handover zone there (README "Handovers")
    say(f"  the switch's OVSDB on 127.0.0.1:{ovsdb_port} (ovs-vsctl set-manager ptcp:{ovsdb_port}:127.0.0.1)")
    lab.start_controller(
        {"state_file": str(lab.run_dir / "state.db"), "probe_ip": PROBE_IP, "ovsdb_remote": remote},
        rest_port=rest_port,
        of_port=of_port,
    )
    lab.wait_connected()
    say(f"  controller up: OpenFlow on 127.0.0.1:{of_port}, REST on 127.0.0.1:{rest_port}")


def configure(rest_port: int) -> None:
    say("== REST: a pool of three backends (by IP only, HTTP health checks) and two VIPs on it, IPv4 and IPv6")
    backends = [{"ip": f"10.0.0.{last}"} for last in BACKENDS.values()]
    check = {"kind": "http", "port": 80, "path": "/"}
    api(rest_port, "POST", "/v1/pools", {"name": "web", "backends": backends, "health_check": check})
    api(
        rest_port,
        "POST",
        "/v1/vips",
        {"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"},
    )
    api(
        rest_port,
        "POST",
        "/v1/vips",
        {"name": "www6", "ip": VIP6, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"},
    )
    base = f"http://127.0.0.1:{rest_port}"
    wait_backends_up(base, len(BACKENDS))
    wait_no_hold(base)  # or the requests below would all go to the first backend found
    pool = rest(base, "GET", "/v1/pools/web")[1]
    for backend in pool["backends"]:
        status = backend["status"]
        where = status["location"] or {}
        say(
            f"  {backend['ip']}: {status['state']}, found by ARP at {status['mac']} on switch port "
            f"{where.get('port')}, {status['slots']} slots"
        )
    for switch in pool["handover"]["tracking"]:
        say(
            f"  switch {switch['dpid']:016x}: a moved slot's new connections use {switch['method']} ({switch['reason']})"
        )
    say(f"  slots in a handover: {pool['handover']['slots']} (the backends, found one after another, moved idle slots)")


def drive(lab: Lab, per_client: int) -> dict:
    say(f"== {per_client} HTTP requests from each client to http://{VIP}/ (a new connection each)")
    capture = lab.spawn(
        "c1", "tcpdump", "-l", "-e", "-n", "-i", "eth0", f"tcp and src host {VIP}", log="c1-tcpdump.log"
    )
    time.sleep(1.0)
    reports = {name: lab.requests(name, f"http://{VIP}/", per_client) for name in CLIENTS}
    time.sleep(0.3)
    lab.stop(capture, signal.SIGINT)
    replies = [line for line in (lab.run_dir / "c1-tcpdump.log").read_text().splitlines() if f"{VIP}.80 >" in line]
    macs = {lab.hosts[name].mac: name for name in BACKENDS}
    reply_sources = sorted({macs.get(line.split()[1], line.split()[1]) for line in replies})
    by_backend = {name: sum(r["by_backend"].get(name, 0) for r in reports.values()) for name in BACKENDS}
    say(f"== the same over IPv6: http://[{VIP6}]/, the same pool")
    reports6 = {name: lab.requests(name, f"http://[{VIP6}]/", per_client) for name in CLIENTS}
    ipv6 = {
        "requests": sum(r["ok"] + r["failed"] for r in reports6.values()),
        "failed": sum(r["failed"] for r in reports6.values()),
        "by_backend": {name: sum(r["by_backend"].get(name, 0) for r in reports6.values()) for name in BACKENDS},
        "clients_seen_by_backends": sorted({ip for r in reports6.values() for ip in r["clients_seen"]}),
    }
    return {
        "requests": sum(r["ok"] + r["failed"] for r in reports.values()),
        "failed": sum(r["failed"] for r in reports.values()),
        "by_backend": by_backend,
        "clients_seen_by_backends": sorted({ip for r in reports.values() for ip in r["clients_seen"]}),
        "reply_packets_seen_at_c1": len(replies),
        "reply_source_ip": VIP if replies else None,
        "reply_source_macs_are_backends": reply_sources,
        "ipv6": ipv6,
    }


def show(report: dict, rest_port: int) -> None:
    say("== What happened")
    say(f"  {'backend':8} {'requests':>8}")
    for name, count in report["by_backend"].items():
        say(f"  {name:8} {count:>8}")
    say(f"  {'failed':8} {report['failed']:>8}")
    say("  DSR evidence:")
    say(f"   - the backends saw the clients' own addresses: {', '.join(report['clients_seen_by_backends'])}")
    say(
        f"   - {report['reply_packets_seen_at_c1']} reply packets reached c1 from {report['reply_source_ip']} with the "
        f"source MAC of backend(s) {', '.join(report['reply_source_macs_are_backends'])}: straight from the "
        "backends, no balancer on the way back"
    )
    ipv6 = report["ipv6"]
    say(
        f"  IPv6 ({VIP6}): {ipv6['requests']} requests, {ipv6['failed']} failed, by backend "
        + ", ".join(f"{name} {count}" for name, count in ipv6["by_backend"].items())
        + f"; the backends saw {', '.join(ipv6['clients_seen_by_backends'])}"
    )
    say("REPORT " + json.dumps(report))


def how_to_try(rest_port: int) -> None:
    say("== Try it yourself (in another terminal)")
    say(f"  ip netns exec {PREFIX}-c2 curl -s http://{VIP}/            # which backend answers, whom it saw")
    say(f"  ip netns exec {PREFIX}-c2 curl -s http://[{VIP6}]/         # the same service over IPv6")
    say(f"  curl -s http://127.0.0.1:{rest_port}/v1/pools/web             # backends, where they are, their slots")
    say(
        f"  curl -s -X PATCH {token_header()} -H 'Content-Type: application/json' "
        f"http://127.0.0.1:{rest_port}/v1/pools/web/backends/10.0.0.12 -d '{{\"weight\": 0}}'  # drain"
    )
    say(f"  ip netns exec {PREFIX}-c1 ping -c1 10.0.0.11                   # ordinary traffic keeps working")
    say(
        "  kill $(pgrep -f 'echo_server.py b2')                               # b2's server dies: out in under a second"
    )
    say(f"  OVS_RUNDIR={Lab(PREFIX).run_dir} ovs-ofctl -O OpenFlow13 dump-flows {PREFIX}-br0")
    say("  make demo-stop                                                   # remove everything")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ryu_dsr.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--exit-after-report", action="store_true", help="leave the fabric up and exit after the report"
    )
    parser.add_argument("--stop", action="store_true", help="remove everything a demo created")
    parser.add_argument("--requests", type=int, default=30, help="requests per client")
    parser.add_argument("--rest-port", type=int, default=8080)
    parser.add_argument("--of-port", type=int, default=6653)
    parser.add_argument("--ovsdb-port", type=int, default=6640, help="the switch's OVSDB manager port")
    args = parser.parse_args(argv)
    lab = Lab(PREFIX)
    if args.stop:
        lab.clear_leftovers()
        left = lab.leftovers()
        say("demo stopped; nothing left" if not left else f"demo stopped; still there: {left}")
        return 0 if not left else 1
    try:
        build(lab, args.rest_port, args.of_port, args.ovsdb_port)
        configure(args.rest_port)
        report = drive(lab, args.requests)
        show(report, args.rest_port)
        how_to_try(args.rest_port)
    except BaseException:
        say(f"demo failed; logs in {lab.run_dir}; removing the fabric")
        lab.destroy()
        raise
    if args.exit_after_report:
        return 0
    say("== Up; Ctrl-C here (or make demo-stop) removes everything")
    try:
        while lab.run_dir.exists():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    lab.destroy()
    say("demo stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
