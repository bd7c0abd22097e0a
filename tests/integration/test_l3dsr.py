"""L3DSR on real Open vSwitch: three backends in other subnets behind a Linux
router namespace (forwarding "dscp": their own address written over the
VIP's, a DSCP value naming the VIP, the TTL down; an nftables rule on each
backend writes the VIP back) and one on the switch's segment, in one pool."""

from __future__ import annotations

import json
import sys
import time

import pytest

from ryu_dsr.lab import TOOLS, Lab, rest, wait_no_hold
from tests.integration.conftest import PROBE_IP, VIP, wait_for

REST_PORT, OF_PORT = 18111, 16711
BASE = f"http://127.0.0.1:{REST_PORT}"
ROUTED = {"b21": 51, "b22": 52, "b23": 53}  # behind r1, in 192.168.SUBNET.0/24
ROUTES = "192.168.48.0/20 via 10.0.0.254, 2001:db8:50::/44 via 2001:db8::254"
VIP6 = "2001:db8::100"
PROBE6 = "2001:db8::250"


def api(method, path, body=None):
    return rest(BASE, method, path, body)


def backend_tool(lab, host, *args):
    return lab.run(host, sys.executable, str(TOOLS / "dsr_backend.py"), *args)


@pytest.fixture(scope="module")
def lab():
    lab = Lab("dsr3")
    try:
        lab.start_switch(controller_port=OF_PORT)
        lab.add_host("c1", 1, ip6=True)
        lab.add_host("b11", 11)
        lab.make_backend("b11", [VIP])
        lab.serve_http("b11")
        lab.serve_udp("b11", 53, [VIP])
        lab.add_host("r1", 254, ip6=True)
        lab.make_router("r1")
        for name, subnet in ROUTED.items():
            lab.add_routed_host(name, "r1", subnet, ip6=True)
            lab.serve_http(name, bind="::")
        settings = {
            "state_file": str(lab.run_dir / "state.db"),
            "probe_ip": f"{PROBE_IP},{PROBE6}",
            "routes": ROUTES,
        }
        lab.start_controller(settings, rest_port=REST_PORT, of_port=OF_PORT)
        lab.wait_connected()
        yield lab
    finally:
        lab.destroy()


def test_a_pool_of_routed_and_local_backends_serves_one_vip_by_dsr(lab):
    backends = [{"ip": f"192.168.{subnet}.2", "forwarding": "dscp"} for subnet in ROUTED.values()]
    pool = {
        "name": "web",
        "backends": [*backends, {"ip": "10.0.0.11"}],
        "health_check": {"kind": "tcp", "port": 80, "interval": 0.5, "timeout": 0.4, "fall": 2, "rise": 2},
    }
    assert api("POST", "/v1/pools", pool)[0] == 201
    vip = {"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"}
    status, created = api("POST", "/v1/vips", vip)
    assert status == 201 and created["dscp"] == 1
    udp = {"name": "dns", "ip": VIP, "protocol": "udp", "port": 53, "pool": "web", "hash": "5tuple"}
    assert api("POST", "/v1/vips", udp)[0] == 201
    for name in ROUTED:  # each routed backend maps DSCP 1 back to the VIP
        backend_tool(lab, name, "apply", "--dscp", f"{VIP}=1")
        lab.serve_udp(name, 53, [VIP])
    wait_for(
        lambda: [b["status"]["state"] for b in api("GET", "/v1/pools/web")[1]["backends"]] == ["up"] * 4,
        20,
        0.2,
        "four backends up (the routed ones checked through their rewrite)",
    )
    wait_no_hold(BASE)
    time.sleep(0.5)
    r1 = lab.hosts["r1"].mac
    dump = lab.capture("c1", f"src host {VIP} and tcp", "l3-replies.log", "-e")
    arrivals = lab.capture("b21", "tcp dst port 80 and src host 10.0.0.1", "b21.log", "-v", "-c", "1")
    report = lab.requests("c1", f"http://{VIP}/", 120)
    time.sleep(0.3)
    lab.stop(dump)
    assert report["failed"] == 0, report
    assert set(report["by_backend"]) == {"b11", *ROUTED} and min(report["by_backend"].values()) >= 10, report
    assert set(report["clients_seen"]) == {"10.0.0.1"}, report  # every backend saw the client's own address
    # replies reached the client from the VIP straight from b11, or through the router from the others
    senders = {line.split()[1] for line in (lab.run_dir / "l3-replies.log").read_text().splitlines() if VIP in line}
    assert senders == {lab.hosts["b11"].mac, r1}, senders
    # a request reached b21 at its own address with DSCP 1 (TOS 0x4), its checksum right, two hops less
    # (the switch's and the router's: the client sent TTL 64)
    arrivals.wait(10)
    seen = (lab.run_dir / "b21.log").read_text()
    assert "tos 0x4" in seen and "ttl 62" in seen and "> 192.168.51.2.80" in seen and "(correct)" in seen, seen
    # UDP the same way
    out = lab.run("c1", sys.executable, str(TOOLS / "udp_load.py"), VIP, "53", "--count", "200", "--concurrency", "4")
    udp_report = json.loads(out.strip().splitlines()[-1])
    assert udp_report["failed"] == 0 and len(set(udp_report["by_backend"]) & set(ROUTED)) >= 1, udp_report


def test_ipv6_vips_reach_routed_backends_the_same_way(lab):
    """The same backends by their IPv6 addresses, behind the same router:
    the IPv6 address written over the VIP's, the DSCP in the traffic
    class, the hop limit down; checked from the IPv6 probe address."""
    backends = [{"ip": f"2001:db8:{subnet}::2", "forwarding": "dscp"} for subnet in ROUTED.values()]
    pool = {"name": "web6", "backends": backends, "health_check": {"kind": "tcp", "port": 80, "interval": 0.5}}
    assert api("POST", "/v1/pools", pool)[0] == 201
    vip = {"name": "www6", "ip": VIP6, "protocol": "tcp", "port": 80, "pool": "web6", "hash": "5tuple"}
    status, created = api("POST", "/v1/vips", vip)
    assert status == 201 and created["dscp"] == 2  # the next value: 1 names 10.0.0.100
    for name in ROUTED:
        backend_tool(lab, name, "apply", "--dscp", f"{VIP6}=2")
    wait_for(
        lambda: [b["status"]["state"] for b in api("GET", "/v1/pools/web6")[1]["backends"]] == ["up"] * 3,
        20,
        0.2,
        "three IPv6 routed backends up",
    )
    wait_no_hold(BASE, pool="web6")
    arrivals = lab.capture("b22", "ip6 and tcp dst port 80 and src host 2001:db8::1", "b22.log", "-v", "-c", "1")
    report = lab.requests("c1", f"http://[{VIP6}]/", 90)
    assert report["failed"] == 0 and set(report["by_backend"]) == set(ROUTED), report
    assert set(report["clients_seen"]) == {"2001:db8::1"}, report
    arrivals.wait(10)
    seen = (lab.run_dir / "b22.log").read_text()
    assert "class 0x08" in seen and "hlim 62" in seen and "> 2001:db8:52::2.80" in seen, seen


def test_a_routed_backend_without_its_rewrite_leaves_the_hash_saying_why(lab):
    backend_tool(lab, "b22", "undo", "--dscp", f"{VIP}=1")
    lab.run("b22", "ip", "addr", "add", f"{VIP}/32", "dev", "lo")  # the VIP is there, the rewrite is not

    def state():
        return api("GET", "/v1/pools/web/backends/192.168.52.2")[1]["status"]

    wait_for(lambda: state()["state"] == "unhealthy", 10, 0.2, "b22 out")
    assert "its rewrite of the DSCP to the VIP (nft) is missing" in state()["reason"], state()
    report = lab.requests("c1", f"http://{VIP}/", 60)
    assert report["failed"] == 0 and "b22" not in report["by_backend"], report
    backend_tool(lab, "b22", "apply", "--dscp", f"{VIP}=1")
    wait_for(lambda: state()["state"] == "up", 10, 0.2, "b22 back")


def test_long_lived_connections_to_routed_backends_survive_an_added_and_a_drained_backend(lab):
    lab.add_routed_host("b24", "r1", 54)
    lab.serve_http("b24")
    backend_tool(lab, "b24", "apply", "--dscp", f"{VIP}=1")
    streams = lab.spawn_client(
        "c1", f"http://{VIP}/", "--streams", "12", "--lines", "50", "--ms", "100", "--timeout", "5", log="l3s.json"
    )
    time.sleep(1.0)
    assert api("POST", "/v1/pools/web/backends", {"ip": "192.168.54.2", "forwarding": "dscp"})[0] == 201
    wait_for(lambda: api("GET", "/v1/pools/web/backends/192.168.54.2")[1]["status"]["state"] == "up", 10, 0.2, "b24 up")
    assert api("PATCH", "/v1/pools/web/backends/192.168.51.2", {"weight": 0})[0] == 200
    assert streams.wait(60) == 0
    report = lab.client_report("l3s.json")
    assert report["intact"] == 12, [r for r in report["results"] if not r["intact"]]
    after = lab.requests("c1", f"http://{VIP}/", 60)
    assert after["failed"] == 0 and "b21" not in after["by_backend"] and after["by_backend"].get("b24", 0) > 3
