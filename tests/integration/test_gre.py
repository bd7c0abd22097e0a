"""L3 DSR with GRE on real Open vSwitch (forwarding "gre", as Maglev's):
three backends in other subnets behind a Linux router namespace, each
request carried whole in GRE out of the switch's one GRE port (the
tunnel's destination set per backend by the flow), and one backend on the
switch's segment, in one pool. The switch's tunnel leaves from an
underlay bridge with the tunnel's source address, patched into the switch
(Open vSwitch's userspace tunnels route by their own table). This kernel
has no ip_gre, so each GRE backend host takes GRE as an Open
vSwitch-based host would: its rack's bridge decapsulates and hands the
inner packet to the backend's namespace, which holds the VIP on lo and
answers the client from it through the router."""

from __future__ import annotations

import json
import re
import sys
import time

import pytest

from ryu_dsr.lab import TOOLS, Lab, rest, wait_backends_up, wait_no_hold
from tests.integration.conftest import PROBE_IP, VIP, wait_for

REST_PORT, OF_PORT = 18123, 16723
BASE = f"http://127.0.0.1:{REST_PORT}"
TUNNELLED = {"b31": 61, "b32": 62, "b33": 63}  # behind r1, in 192.168.SUBNET.0/24
ROUTES = "192.168.48.0/20 via 10.0.0.254"
TUNNEL_SOURCE = "10.0.0.249"
MSS = 1436  # 1500 less the tunnel's 24 bytes and 40 of IP and TCP headers
VIP6, PROBE6 = "2001:db8::100", "2001:db8::250"


def api(method, path, body=None):
    return rest(BASE, method, path, body)


def backend_tool(lab, host, *args):
    """tools/dsr_backend.py on a backend (this kernel has no ip_gre: not --gre, the rack's bridge
    decapsulates; the VIP on lo and the advertised MSS as on any GRE backend)."""
    return lab.run(host, sys.executable, str(TOOLS / "dsr_backend.py"), *args)


def state(ip: str) -> dict:
    return api("GET", f"/v1/pools/web/backends/{ip}")[1]["status"]


@pytest.fixture(scope="module")
def lab():
    lab = Lab("dsrg")
    try:
        lab.start_switch(controller_port=OF_PORT)
        lab.add_host("c1", 1, ip6=True)
        lab.add_host("b11", 11)
        lab.make_backend("b11", [VIP])
        lab.serve_http("b11")
        lab.serve_udp("b11", 53, [VIP])
        lab.add_host("r1", 254, ip6=True)
        lab.make_router("r1")
        lab.add_gre_port()
        lab.add_tunnel_underlay(TUNNEL_SOURCE, "10.0.0.254", ["192.168.48.0/20"])
        for name, subnet in TUNNELLED.items():
            lab.add_gre_host(name, "r1", subnet, TUNNEL_SOURCE, ip6=True)
            backend_tool(lab, name, "apply", "--vip", VIP, "--vip", VIP6, "--advmss", str(MSS))
            lab.serve_http(name, bind="::")
            lab.serve_udp(name, 53, [VIP])
        settings = {"state_file": str(lab.run_dir / "state.db"), "probe_ip": f"{PROBE_IP},{PROBE6}", "routes": ROUTES}
        lab.start_controller(settings, rest_port=REST_PORT, of_port=OF_PORT)
        lab.wait_connected()
        yield lab
    finally:
        lab.destroy()


def test_a_pool_of_gre_and_local_backends_serves_one_vip_by_dsr(lab):
    backends = [{"ip": f"192.168.{subnet}.2", "forwarding": "gre"} for subnet in TUNNELLED.values()]
    pool = {
        "name": "web",
        "backends": [*backends, {"ip": "10.0.0.11"}],
        "health_check": {"kind": "tcp", "port": 80, "interval": 0.5, "timeout": 0.4, "fall": 2, "rise": 2},
    }
    assert api("POST", "/v1/pools", pool)[0] == 201
    vip = {"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"}
    status, created = api("POST", "/v1/vips", vip)
    assert status == 201 and created["dscp"] is None  # no DSCP: the request travels whole
    udp = {"name": "dns", "ip": VIP, "protocol": "udp", "port": 53, "pool": "web", "hash": "5tuple"}
    assert api("POST", "/v1/vips", udp)[0] == 201
    wait_backends_up(BASE, 4)  # the GRE ones checked through the tunnel
    assert state("192.168.61.2")["routed"] == {"gateway": "10.0.0.254", "tunnel": "gre"}
    wait_no_hold(BASE)
    time.sleep(0.5)
    r1 = lab.hosts["r1"].mac
    replies = lab.capture("c1", f"src host {VIP} and tcp", "gre-replies.log", "-e")
    tunnel = lab.capture("r1", "proto gre", "gre-wire.log", "-v", interface="dsrg-r61p")
    report = lab.requests("c1", f"http://{VIP}/", 120)
    time.sleep(0.3)
    lab.stop(replies)
    assert report["failed"] == 0, report
    assert set(report["by_backend"]) == {"b11", *TUNNELLED} and min(report["by_backend"].values()) >= 10, report
    assert set(report["clients_seen"]) == {"10.0.0.1"}, report  # every backend saw the client's own address
    # replies reached the client from the VIP straight from b11, or through the router from the others
    senders = {line.split()[1] for line in (lab.run_dir / "gre-replies.log").read_text().splitlines() if VIP in line}
    assert senders == {lab.hosts["b11"].mac, r1}, senders
    # on the wire behind the router: GRE from the tunnel's source to b31's own address, carrying the
    # client's request to the VIP untouched
    lab.stop(tunnel)
    seen = (lab.run_dir / "gre-wire.log").read_text()
    assert f"{TUNNEL_SOURCE} > 192.168.61.2: GREv0" in seen, seen
    assert re.search(rf"10\.0\.0\.1\.\d+ > {re.escape(VIP)}\.80: Flags \[S\], cksum 0x[0-9a-f]+ \(correct\)", seen), (
        seen
    )
    # UDP the same way
    out = lab.run("c1", sys.executable, str(TOOLS / "udp_load.py"), VIP, "53", "--count", "200", "--concurrency", "4")
    udp_report = json.loads(out.strip().splitlines()[-1])
    assert udp_report["failed"] == 0 and len(set(udp_report["by_backend"]) & set(TUNNELLED)) >= 2, udp_report


def test_an_ipv6_vip_reaches_gre_backends_through_the_ipv4_tunnel(lab):
    """The tunnel carries a request of either family: an IPv6 VIP on the
    same GRE backends (their IPv4 addresses are the tunnel's ends), checked
    through the tunnel from the IPv6 probe address, answered by DSR over
    IPv6 through the router."""
    backends = [{"ip": f"192.168.{subnet}.2", "forwarding": "gre"} for subnet in TUNNELLED.values()]
    pool = {"name": "web6", "backends": backends, "health_check": {"kind": "tcp", "port": 80, "interval": 0.5}}
    assert api("POST", "/v1/pools", pool)[0] == 201
    vip = {"name": "www6", "ip": VIP6, "protocol": "tcp", "port": 80, "pool": "web6", "hash": "5tuple"}
    assert api("POST", "/v1/vips", vip)[0] == 201
    wait_backends_up(BASE, 3, pool="web6")  # checked through the tunnel from the IPv6 probe address
    wait_no_hold(BASE, pool="web6")
    tunnel = lab.capture("r1", "proto gre", "gre6-wire.log", "-v", interface="dsrg-r62p")
    report = lab.requests("c1", f"http://[{VIP6}]/", 90)
    time.sleep(0.3)
    lab.stop(tunnel)
    assert report["failed"] == 0 and set(report["by_backend"]) == set(TUNNELLED), report
    assert set(report["clients_seen"]) == {"2001:db8::1"}, report  # the client's own address
    seen = (lab.run_dir / "gre6-wire.log").read_text()
    assert f"{TUNNEL_SOURCE} > 192.168.62.2: GREv0" in seen, seen
    assert re.search(rf"2001:db8::1\.\d+ > {re.escape(VIP6)}\.80: Flags \[S\]", seen), seen  # the client's SYN inside


def test_full_size_uploads_through_the_tunnel_arrive_whole_with_the_mss_the_backends_advertise(lab):
    """The tunnel adds 24 bytes: a client's full-size segment (1500) would
    not fit the 1500-byte path behind the switch. The GRE backends
    advertise an MSS of 1436 on their default route (``dsr_backend.py
    --advmss``), so clients send segments that fit; a 2 MB upload to each
    backend arrives whole."""
    body = lab.run_dir / "upload.bin"
    body.write_bytes(bytes(2_000_000))
    syn_acks = lab.capture("c1", f"src host {VIP} and tcp[tcpflags] & tcp-syn != 0", "gre-mss.log", "-v")
    answered = {}
    for port in range(41000, 41040):
        out = lab.run(
            "c1", "curl", "-s", "-m", "10", "--local-port", str(port), "--data-binary", f"@{body}",
            "-H", "Content-Type: application/octet-stream", f"http://{VIP}/", check=False,
        )  # fmt: skip
        name, _client, got = out.split() if len(out.split()) == 3 else ("?", "", "0")
        answered[name] = answered.get(name, 0) + (int(got) == 2_000_000)
        if len(set(answered) & set(TUNNELLED)) == 3 and all(answered.values()):
            break
    lab.stop(syn_acks)
    assert set(TUNNELLED) <= set(answered) and all(n > 0 for n in answered.values()), answered
    assert "?" not in answered, answered
    seen = (lab.run_dir / "gre-mss.log").read_text()
    assert f"mss {MSS}" in seen, seen  # what the clients end up with through the tunnel


def test_a_gre_backend_whose_decapsulation_stops_leaves_the_hash_saying_why(lab):
    lab.set_gre_decap("b32", False)  # as a host whose gre0 went down
    wait_for(lambda: state("192.168.62.2")["state"] == "unhealthy", 10, 0.2, "b32 out")
    reason = state("192.168.62.2")["reason"]
    assert "through the GRE tunnel (its decapsulation: gre0 up, rp_filter off, the VIP on lo)" in reason, reason
    report = lab.requests("c1", f"http://{VIP}/", 60)
    assert report["failed"] == 0 and "b32" not in report["by_backend"], report
    lab.set_gre_decap("b32", True)
    wait_for(lambda: state("192.168.62.2")["state"] == "up", 10, 0.2, "b32 back")


def test_long_lived_connections_to_gre_backends_survive_an_added_and_a_drained_backend(lab):
    lab.add_gre_host("b34", "r1", 60, TUNNEL_SOURCE)
    backend_tool(lab, "b34", "apply", "--vip", VIP, "--advmss", str(MSS))
    lab.serve_http("b34")
    streams = lab.spawn_client(
        "c1", f"http://{VIP}/", "--streams", "12", "--lines", "50", "--ms", "100", "--timeout", "5", log="gres.json"
    )
    time.sleep(1.0)
    assert api("POST", "/v1/pools/web/backends", {"ip": "192.168.60.2", "forwarding": "gre"})[0] == 201
    wait_for(lambda: state("192.168.60.2")["state"] == "up", 10, 0.2, "b34 up")
    assert api("PATCH", "/v1/pools/web/backends/192.168.61.2", {"weight": 0})[0] == 200
    assert streams.wait(60) == 0
    report = lab.client_report("gres.json")
    assert report["intact"] == 12, [r for r in report["results"] if not r["intact"]]
    wait_no_hold(BASE)
    after = lab.requests("c1", f"http://{VIP}/", 60)
    assert after["failed"] == 0 and "b31" not in after["by_backend"] and after["by_backend"].get("b34", 0) > 3, after
