"""Two controllers, one switch, the state in etcd (Debian's etcd-server on
loopback): one master elected through etcd, the other slave, as Open
vSwitch itself records them; failover by kill -9 and by SIGSTOP without a
failed request or a broken connection; etcd restarted under them; writes
through the slave."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from ryu_dsr.etcd import Etcd
from ryu_dsr.lab import Lab, program, rest, wait_backends_up
from tests.integration.conftest import BACKENDS, PROBE_IP, VIP, wait_for

ETCD_PORT = 12379
TTL = 3
NODES = {"alpha": (18100, 16700), "beta": (18101, 16701)}
STREAMS = 10


class Cluster:
    def __init__(self) -> None:
        self.lab = Lab("ct")
        first_of = NODES["alpha"][1]
        self.lab.start_switch(controller_port=first_of)
        self.lab.add_host("c1", 1)
        for name, last in BACKENDS.items():
            self.lab.add_host(name, last)
            self.lab.make_backend(name, [VIP])
            self.lab.serve_http(name)
        self.etcd = self.lab.start_etcd(ETCD_PORT)
        self.procs = {}
        for node in NODES:
            self.start(node)
        self.lab.set_controllers([of for _rest, of in NODES.values()])

    def start(self, node: str) -> None:
        rest_port, of_port = NODES[node]
        settings = {
            "etcd_endpoints": f"http://127.0.0.1:{ETCD_PORT}",
            "etcd_lease_ttl": TTL,
            "node_name": node,
            "probe_ip": PROBE_IP,
            "state_file": "",
        }
        self.procs[node] = self.lab.start_controller(
            settings, rest_port=rest_port, of_port=of_port, log_name=f"{node}.log", conf_name=f"{node}.conf"
        )

    def base(self, node: str) -> str:
        return f"http://127.0.0.1:{NODES[node][0]}"

    def api(self, node: str, method: str, path: str, body=None):
        return rest(self.base(node), method, path, body)

    def cluster(self, node: str) -> dict:
        return self.api(node, "GET", "/v1/cluster")[1]

    def switch_master(self) -> str | None:
        """The node Open vSwitch records as master in its database (it
        updates the record a few seconds after a change)."""
        for node, (_rest, of_port) in NODES.items():
            role, connected = self.lab.controller_roles().get(of_port, ("", False))
            if role == "master" and connected:
                return node
        return None

    def confirmed_master(self, node: str) -> bool:
        """The switch answered the node's role request: master."""
        try:
            status = self.cluster(node)
        except OSError:
            return False
        return status["role"] == "master" and [s["role"] for s in status["switches"]] == ["master"]

    def wait_master(self, node: str, timeout: float = 20) -> None:
        wait_for(lambda: self.confirmed_master(node), timeout, what=f"{node} master of the switch")
        wait_for(lambda: self.switch_master() == node, 15, what=f"{node} master in the switch's database")

    def log(self, node: str) -> str:
        return (self.lab.run_dir / f"{node}.log").read_text(errors="replace")

    def vip_flows(self) -> str:
        return self.lab.ofctl("dump-flows", self.lab.bridge)


@pytest.fixture(scope="module")
def cluster():
    built = Cluster()
    yield built
    built.lab.destroy()


def other(node: str) -> str:
    return "beta" if node == "alpha" else "alpha"


def test_one_master_the_other_slave_as_the_switch_records_it(cluster):
    cluster.wait_master("alpha")  # it stood first
    status = cluster.cluster("beta")
    assert status["role"] == "slave" and status["master"] == "alpha", status
    assert [m["node"] for m in status["members"]] == ["alpha", "beta"]
    assert status["etcd"]["healthy"] is True
    wait_for(lambda: cluster.lab.controller_roles()[NODES["beta"][1]][0] == "slave", what="beta slave at the switch")
    assert cluster.cluster("alpha")["generation"] == status["generation"] > 0
    shown = subprocess.run(
        [program("dsrctl"), "--api", cluster.base("beta"), "cluster"], capture_output=True, text=True, check=True
    ).stdout
    assert "beta: slave (etcd); master alpha" in shown and "healthy" in shown, shown
    assert re.search(r"0000000000000001\s+slave", shown), shown
    scrape = urllib.request.urlopen(cluster.base("beta") + "/metrics", timeout=5).read().decode()
    assert 'ryu_dsr_cluster_master{node="beta"} 0.0' in scrape and "ryu_dsr_cluster_candidates 2.0" in scrape
    assert "ryu_dsr_cluster_etcd_healthy 1.0" in scrape


def test_a_write_on_the_slave_reaches_the_switch(cluster):
    pool = {"name": "web", "backends": [{"ip": "10.0.0.11"}, {"ip": "10.0.0.12"}], "health_check": {"kind": "arp"}}
    assert cluster.api("beta", "POST", "/v1/pools", pool)[0] == 201
    wait_backends_up(cluster.base("alpha"), 2)  # the master found them (the slave sends nothing to the switch)
    vip = {"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"}
    assert cluster.api("beta", "POST", "/v1/vips", vip)[0] == 201
    wait_for(lambda: f"nw_dst={VIP}" in cluster.vip_flows(), what="the VIP's rules on the switch")
    assert cluster.api("alpha", "GET", "/v1/vips/www")[0] == 200
    report = cluster.lab.requests("c1", f"http://{VIP}/", 40)
    assert report["failed"] == 0 and set(report["by_backend"]) == {"b11", "b12"}, report


def failover(cluster, stop, resume=None):
    """Requests and long-lived streams run while ``stop`` takes the master
    away; the other must take over; returns (old, new, seconds to master)."""
    lab = cluster.lab
    old = cluster.switch_master()
    new = other(old)
    short = lab.spawn_client("c1", f"http://{VIP}/", "--count", "600", "--interval", "0.02", log="short.json")
    streams = lab.spawn_client(
        "c1",
        f"http://{VIP}/",
        "--streams",
        str(STREAMS),
        "--lines",
        str(int((TTL + 9) * 10)),
        "--ms",
        "100",
        "--timeout",
        "5",
        log="streams.json",
    )
    time.sleep(1.5)
    started = time.monotonic()
    stop(old)
    wait_for(lambda: cluster.confirmed_master(new), TTL + 10, 0.05, what=f"{new} master of the switch")
    took = time.monotonic() - started
    cluster.wait_master(new)
    if resume is not None:
        resume(old)
    # A change right after the failover reaches the switch.
    assert cluster.api(new, "POST", "/v1/pools/web/backends", {"ip": "10.0.0.13"})[0] == 201
    wait_for(
        lambda: cluster.api(new, "GET", "/v1/pools/web/backends/10.0.0.13")[1]["status"]["state"] == "up",
        timeout=15,
        what="b13 up through the new master",
    )
    assert streams.wait(60) == 0 and short.wait(60) == 0
    report = lab.client_report("short.json")
    assert report["failed"] == 0 and report["ok"] == 600, report
    kept = lab.client_report("streams.json")
    assert kept["intact"] == STREAMS, [r for r in kept["results"] if not r["intact"]]
    assert cluster.api(new, "DELETE", "/v1/pools/web/backends/10.0.0.13")[0] == 204
    return old, new, took


def discovery_key() -> str:
    """The key that seals discovery frames, as the cluster keeps it in etcd."""
    _revision, kvs = Etcd([f"http://127.0.0.1:{ETCD_PORT}"]).range_prefix("/ryu_dsr/runtime/flags/discovery_key")
    return kvs[0].value if kvs else ""


def test_kill_9_of_the_master_fails_over_within_the_lease_without_a_failed_request(cluster):
    key = discovery_key()
    assert len(key) == 64  # made by the first master, kept for the cluster
    old, new, took = failover(cluster, lambda node: cluster.procs[node].send_signal(signal.SIGKILL))
    assert discovery_key() == key  # the new master seals with the same key
    assert took <= TTL + 1 + 1.5, took  # the lease, a second, and the test's own polling
    assert cluster.cluster(new)["role"] == "master"
    cluster.start(old)  # back as a slave, last in line
    wait_for(lambda: cluster.cluster(old)["role"] == "slave" and cluster.cluster(old)["master"] == new, 15)
    assert cluster.switch_master() == new


def test_a_stopped_master_is_refused_by_the_switch_when_it_comes_back_and_steps_down(cluster):
    def stop(node):
        os.killpg(cluster.procs[node].pid, signal.SIGSTOP)

    def resume(node):
        os.killpg(cluster.procs[node].pid, signal.SIGCONT)

    old, new, _took = failover(cluster, stop, resume)
    wait_for(lambda: cluster.cluster(old)["role"] == "slave", 15, what=f"{old} slave again")
    log = cluster.log(old)
    # After SIGCONT it asks the switch again (as master after a stall, or as slave once it finds its
    # lease gone, with the generation it had): the switch answers that a newer master exists.
    assert re.search(r"switch 0000000000000001 refused us: our role request carries a stale generation", log), log
    assert cluster.switch_master() == new
    assert cluster.lab.controller_roles()[NODES[old][1]][0] == "slave"


def test_both_controllers_recover_their_watches_after_etcd_restarts(cluster):
    master = cluster.switch_master()
    slave = other(master)
    cluster.lab.stop(cluster.etcd, signal.SIGKILL)
    wait_for(lambda: not cluster.cluster(slave)["etcd"]["healthy"], 10, what="etcd seen down")
    assert cluster.api(slave, "PATCH", "/v1/pools/web", {"health_check": {"kind": "arp", "interval": 0.5}})[0] == 500
    assert cluster.switch_master() == master  # the switches keep their master while etcd is away
    cluster.etcd = cluster.lab.start_etcd(ETCD_PORT)
    for node in NODES:
        wait_for(lambda node=node: cluster.cluster(node)["etcd"]["healthy"], 15, what=f"{node} back on etcd")
    assert cluster.switch_master() == master
    # A later change through the slave reaches the switch through the master's watch.
    vip = {"name": "www2", "ip": "10.0.0.101", "protocol": "tcp", "port": 80, "pool": "web"}
    assert cluster.api(slave, "POST", "/v1/vips", vip)[0] == 201
    wait_for(lambda: "nw_dst=10.0.0.101" in cluster.vip_flows(), 10, what="the new VIP on the switch")
    assert cluster.api(master, "GET", "/v1/vips/www2")[0] == 200


def test_a_new_empty_etcd_cluster_still_elects_a_master_the_switch_takes(cluster):
    """etcd replaced by a new one (its revisions from 1 again, below the
    generation ids the switch has seen): the winner, refused as stale,
    reads the switch's generation id and raises the cluster's floor above
    it; the VIP's rules, unknown to the empty state, are kept and served."""
    before = cluster.cluster(cluster.switch_master())["generation"]
    cluster.lab.stop(cluster.etcd, signal.SIGKILL)
    shutil.rmtree(cluster.lab.run_dir / "etcd")
    cluster.etcd = cluster.lab.start_etcd(ETCD_PORT)

    def new_master():
        return next(
            (n for n in NODES if cluster.confirmed_master(n) and cluster.cluster(n)["generation"] > before), None
        )

    master = wait_for(new_master, 60, what="a master of the new etcd that the switch takes")
    assert "generations start above it" in cluster.log("alpha") + cluster.log("beta")
    wait_for(lambda: cluster.cluster(other(master))["master"] == master, 30, what="the other one a slave of it")
    report = cluster.lab.requests("c1", f"http://{VIP}/", 20)
    assert report["failed"] == 0, report
