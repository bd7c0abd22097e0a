#!/usr/bin/env python3
"""Two controllers sharing state in etcd: how long a failover takes, and
what etcd costs a REST write, beside the embedded SQLite store.

On this machine: Open vSwitch (userspace), a client and two DSR backends in
namespaces, etcd (Debian's etcd-server) on loopback, ryu-manager.

1. REST writes per second, one after the other (POST /v1/vips, each
   answered once saved and, where the controller is master, confirmed by
   the switch): one controller with SQLite; the etcd master; the etcd
   slave (saved in etcd, written to the switch by the master's watch,
   which is also timed: POST to the VIP's rule on the switch).
2. Failover, for each lease TTL: kill -9 of the master; the time to the
   switch's answer that the other controller is its master, and to the
   first flow change the new master makes (a VIP posted to it right after
   the kill, seen in the switch's flow table); and the client requests
   (one every 20 ms) that failed meanwhile.
3. The same at scale (1,000 and 10,000 VIPs): the PUT that loads them
   through etcd, single writes beside them, and a failover, which reads the
   whole state from etcd and compares the switch's flows.

Run as root:  .venv/bin/python bench/cluster.py [--writes 200] [--ttls 2,5] [--rounds 3] [--scale 1000,10000]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import time

from ryu_dsr.lab import Lab, rest, wait_backends_up

VIP = "10.0.0.100"
ETCD_PORT = 12579
NODES = {"alpha": (18095, 16695), "beta": (18096, 16696)}
PROBE_IP = "10.0.0.250"


def base(node: str) -> str:
    return f"http://127.0.0.1:{NODES[node][0]}"


def writes(url: str, count: int, tag: str, net: int, lab: Lab | None = None) -> tuple[float, float | None]:
    """(POSTs per second, median seconds from a POST to its rule on the
    switch, measured on every tenth when ``lab`` is given)."""
    seen = []
    started = time.monotonic()
    for i in range(count):
        address = f"10.{net}.{i // 250}.{i % 250 + 1}"
        vip = {"name": f"{tag}{i}", "ip": address, "protocol": "tcp", "port": 80, "pool": "web"}
        sent = time.monotonic()
        status, body = rest(url, "POST", "/v1/vips", vip)
        if status != 201:
            raise RuntimeError(f"POST /v1/vips: {status} {body}")
        if lab is not None and i % 10 == 0:
            while not on_switch(lab, address):
                if time.monotonic() - sent > 10:
                    raise RuntimeError(f"{address} did not reach the switch")
                time.sleep(0.002)
            seen.append(time.monotonic() - sent)
    rate = count / (time.monotonic() - started - sum(seen))
    return rate, statistics.median(seen) if seen else None


def on_switch(lab: Lab, address: str) -> bool:
    """Whether the VIP address has its rule on the switch (a dump of that
    address's rules only: a dump of a table of 10,000 VIPs would load the
    switch the failover is timed on)."""
    return f"nw_dst={address}," in lab.ofctl("dump-flows", lab.bridge, f"table=0,ip,nw_dst={address}")


def start(lab: Lab, node: str, settings: dict) -> object:
    rest_port, of_port = NODES[node]
    return lab.start_controller(
        {"probe_ip": PROBE_IP, "node_name": node, **settings},
        rest_port=rest_port,
        of_port=of_port,
        log_name=f"{node}.log",
        conf_name=f"{node}.conf",
    )


def confirmed_master(node: str) -> bool:
    try:
        status = rest(base(node), "GET", "/v1/cluster", timeout=1)[1]
    except OSError:
        return False
    return status["role"] == "master" and [s["role"] for s in status["switches"]] == ["master"]


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def failover(lab: Lab, procs: dict, settings: dict, number: int) -> tuple[float, float, int, int]:
    old = next(node for node in NODES if confirmed_master(node))
    new = "beta" if old == "alpha" else "alpha"
    wait_backends_up(base(old), 2)
    client = lab.spawn_client("c1", f"http://{VIP}/", "--count", "500", "--interval", "0.02", log=f"f{number}.json")
    time.sleep(1.0)
    killed = time.monotonic()
    procs[old].send_signal(signal.SIGKILL)
    address = f"10.3.{number // 100}.{number % 100 + 1}"
    vip = {"name": f"after{number}", "ip": address, "protocol": "tcp", "port": 80, "pool": "web"}
    while True:  # saved in etcd at once, by the slave
        status, body = rest(base(new), "POST", "/v1/vips", vip)
        if status == 201:
            break
        if status != 409:
            raise RuntimeError(f"POST /v1/vips: {status} {body}")
        time.sleep(0.01)
    wait(lambda: confirmed_master(new), 300, f"{new} master")
    master_after = time.monotonic() - killed
    wait(lambda: on_switch(lab, address), 300, "the new VIP")
    flow_after = time.monotonic() - killed
    client.wait(60)
    report = lab.client_report(f"f{number}.json")
    procs[old] = start(lab, old, settings)  # back, as slave
    wait(lambda: rest(base(old), "GET", "/v1/cluster")[1]["role"] == "slave", 30, f"{old} slave")
    return master_after, flow_after, report["failed"], report["ok"] + report["failed"]


def at_scale(lab: Lab, procs: dict, settings: dict, count: int) -> tuple:
    """``count`` VIPs loaded through the master by one PUT /v1/config (in
    steps of etcd's transaction limit), single writes beside them, then a
    kill -9 failover: how long the new master takes to read etcd, claim
    the switch and bring it in line."""
    master = next(node for node in NODES if confirmed_master(node))
    pools = [{"name": "web", "backends": [{"ip": "10.0.0.11"}, {"ip": "10.0.0.12"}]}]
    vips = [
        {"name": f"v{i}", "ip": f"10.{100 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}", "protocol": "tcp",
         "port": 80, "pool": "web"}
        for i in range(count)
    ]  # fmt: skip
    vips.append({"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"})
    started = time.monotonic()
    status, body = rest(base(master), "PUT", "/v1/config", {"pools": pools, "vips": vips}, timeout=1800)
    if status != 200:
        raise RuntimeError(f"PUT /v1/config: {status} {body}")
    loaded = time.monotonic() - started
    rate, _seen = writes(base(master), 50, f"x{count}-", 50 + count // 1000)
    master_after, flow_after, failed, total = failover(lab, procs, settings, 900 + count // 1000)
    return count, loaded, rate, master_after, flow_after, failed, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--ttls", default="2,5")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", default="1000,10000", help="VIP counts for the failover at scale ('' to skip)")
    args = parser.parse_args()
    lab = Lab("dsrclu")
    write_rows, failover_rows, scale_rows = [], [], []
    try:
        lab.start_switch(controller_port=NODES["alpha"][1])
        lab.add_host("c1", 1)
        for name, last in (("b11", 11), ("b12", 12)):
            lab.add_host(name, last)
            lab.make_backend(name, [VIP])
            lab.serve_http(name)
        pool = {"name": "web", "backends": [{"ip": "10.0.0.11"}, {"ip": "10.0.0.12"}]}
        www = {"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"}

        # 1. SQLite, one controller
        proc = start(lab, "alpha", {"state_file": str(lab.run_dir / "state.db")})
        lab.wait_connected()
        rest(base("alpha"), "POST", "/v1/pools", pool)
        write_rows.append(("one controller, SQLite", *writes(base("alpha"), args.writes, "s", 20, lab)))
        lab.stop(proc)

        # 2. etcd, two controllers
        lab.start_etcd(ETCD_PORT)
        ttls = [int(x) for x in args.ttls.split(",")]
        for ttl in ttls:
            settings = {"etcd_endpoints": f"http://127.0.0.1:{ETCD_PORT}", "etcd_lease_ttl": ttl, "state_file": ""}
            settings["etcd_prefix"] = f"/bench{ttl}"
            procs = {"alpha": start(lab, "alpha", settings)}
            wait(lambda: confirmed_master("alpha"), 30, "alpha master")
            procs["beta"] = start(lab, "beta", settings)
            lab.set_controllers([of for _rest, of in NODES.values()])
            wait(lambda: confirmed_master("alpha"), 30, "alpha master of the switch")
            if not write_rows[1:]:
                rest(base("alpha"), "POST", "/v1/pools", pool)
                rest(base("alpha"), "POST", "/v1/vips", www)
                write_rows.append(("etcd, through the master", *writes(base("alpha"), args.writes, "m", 30, lab)))
                write_rows.append(("etcd, through the slave", *writes(base("beta"), args.writes, "l", 40, lab)))
            else:
                rest(base("alpha"), "POST", "/v1/pools", pool)
                rest(base("alpha"), "POST", "/v1/vips", www)
            for number in range(args.rounds):
                failover_rows.append((ttl, *failover(lab, procs, settings, ttl * 100 + number)))
            if ttl == ttls[-1]:
                for count in [int(x) for x in args.scale.split(",") if x]:
                    scale_rows.append((ttl, *at_scale(lab, procs, settings, count)))
            for proc in procs.values():
                lab.stop(proc)
            lab.vsctl("set-controller", lab.bridge, f"tcp:127.0.0.1:{NODES['alpha'][1]}")
    finally:
        lab.destroy()
    header = f"{'REST writes (POST /v1/vips, one at a time)':<44} | {'per second':>10} | {'POST to switch':>14}"
    print(header)
    print("-" * len(header))
    for label, rate, seen in write_rows:
        print(f"{label:<44} | {rate:>10.1f} | {seen * 1000:>11.0f} ms")
    print()
    header = f"{'lease TTL':>9} | {'kill to master':>14} | {'kill to first flow change':>25} | {'failed requests':>15}"
    print(header)
    print("-" * len(header))
    for ttl, master_after, flow_after, failed, total in failover_rows:
        print(f"{ttl:>7} s | {master_after:>12.2f} s | {flow_after:>23.2f} s | {failed:>7} of {total}")
    if scale_rows:
        print()
        header = (
            f"{'VIPs':>6} | {'PUT /v1/config':>14} | {'writes/s beside':>15} | {'kill to master':>14} | "
            f"{'kill to first flow change':>25} | {'failed requests':>15}"
        )
        print(header)
        print("-" * len(header))
        for _ttl, count, loaded, rate, master_after, flow_after, failed, total in scale_rows:
            print(
                f"{count:>6} | {loaded:>12.1f} s | {rate:>15.1f} | {master_after:>12.2f} s | {flow_after:>23.2f} s | "
                f"{failed:>7} of {total}"
            )
        print(f"(lease TTL {scale_rows[0][0]} s; the PUT is written in steps of {128 - 2} VIPs, etcd's default limit)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
