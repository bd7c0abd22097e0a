"""IPv6 on real Open vSwitch: a dual-stack service (an IPv4 and an IPv6 VIP
on one pool), Neighbor Discovery answered by the switch, DSR over IPv6 for
TCP and UDP, health checks, connections kept across changes, forged
advertisements, and Packet Too Big."""

from __future__ import annotations

import struct
import sys
import time

from ryu_dsr.flows import frames

from ryu_dsr.lab import TOOLS, wait_no_hold
from tests.integration.conftest import VIP, fabric_fixture, wait_for

VIP6 = "2001:db8::100"
CLIENT6 = "2001:db8::1"
BACKENDS6 = {"b11": "2001:db8::11", "b12": "2001:db8::12", "b13": "2001:db8::13"}
STREAMS = 12

fabric = fabric_fixture("dsr6", rest_port=18110, of_port=16710, clients=("c1", "c2"), vips6=(VIP6,))


def create_service(fabric) -> None:
    """Pool "web" of the three backends by their IPv6 addresses, with a TCP
    check (no probe address needed for IPv6), and two VIPs on it: VIP6 and
    the IPv4 VIP."""
    lab = fabric.lab
    pool = {
        "name": "web",
        "backends": [{"ip": ip} for ip in BACKENDS6.values()],
        "health_check": {"kind": "tcp", "port": 80, "interval": 0.5, "fall": 2, "rise": 2},
    }
    assert fabric.api("POST", "/v1/pools", pool)[0] == 201
    for name, ip in (("www6", VIP6), ("www", VIP)):
        vip = {"name": name, "ip": ip, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"}
        assert fabric.api("POST", "/v1/vips", vip)[0] == 201
    udp = {"name": "dns6", "ip": VIP6, "protocol": "udp", "port": 53, "pool": "web", "hash": "5tuple"}
    assert fabric.api("POST", "/v1/vips", udp)[0] == 201
    for name in BACKENDS6:
        lab.serve_udp(name, 53, [VIP6])
    fabric.wait_backends_up(count=3)
    wait_no_hold(fabric.base)


def pcap_frames(path) -> list[bytes]:
    data = path.read_bytes()
    out, at = [], 24
    while at + 16 <= len(data):
        _sec, _usec, size, _orig = struct.unpack_from("<IIII", data, at)
        out.append(data[at + 16 : at + 16 + size])
        at += 16 + size
    return out


def test_the_switch_answers_a_solicitation_for_the_vip_and_the_client_kernel_takes_it(fabric):
    lab = fabric.lab
    create_service(fabric)
    vip_mac = fabric.api("GET", "/v1/vips/www6")[1]["mac"]
    lab.run("c1", "ip", "-6", "neigh", "flush", "dev", "eth0")
    dump = lab.capture("c1", "icmp6 and ip6[40] == 136", "na.pcap.log", "-U", "-w", str(lab.run_dir / "na.pcap"))
    lab.run("c1", "ping", "-6", "-c", "1", "-W", "1", VIP6, check=False)  # makes the kernel solicit the VIP
    time.sleep(0.3)
    lab.stop(dump)
    answers = [frames.parse_nd(frame) for frame in pcap_frames(lab.run_dir / "na.pcap")]
    answers = [na for na in answers if na is not None and na.target == VIP6]
    assert answers, "no advertisement for the VIP reached the client"
    na = answers[0]
    assert (na.eth_src, na.eth_dst) == (vip_mac, lab.hosts["c1"].mac)
    assert (na.src, na.dst, na.hop_limit) == (VIP6, CLIENT6, 255)
    assert na.flags == frames.NA_SOLICITED | frames.NA_OVERRIDE  # solicited, override, not a router
    assert na.link_layer == vip_mac and na.checksum_ok
    # and the client's kernel believed it: a solicited answer makes the entry REACHABLE
    neigh = lab.run("c1", "ip", "-6", "neigh", "show", VIP6, "dev", "eth0")
    assert f"lladdr {vip_mac}" in neigh and "REACHABLE" in neigh, neigh


def test_http_over_ipv6_is_spread_over_the_backends_and_answered_directly(fabric):
    lab = fabric.lab
    macs = {lab.hosts[name].mac: name for name in BACKENDS6}
    dump = lab.capture("c1", f"ip6 src {VIP6} and tcp src port 80", "replies6.log", "-e")
    report = lab.requests("c1", f"http://[{VIP6}]/", 90)
    time.sleep(0.3)
    lab.stop(dump)
    assert report["failed"] == 0, report
    assert set(report["by_backend"]) == set(BACKENDS6) and min(report["by_backend"].values()) >= 10, report
    assert set(report["clients_seen"]) == {CLIENT6}, report  # each backend saw the client's own address
    # every reply came from the VIP with a backend's own MAC: straight from the backend, through no balancer
    senders = {line.split()[1] for line in (lab.run_dir / "replies6.log").read_text().splitlines() if VIP6 in line}
    assert senders and senders <= set(macs), senders
    assert {macs[mac] for mac in senders} == set(BACKENDS6)


def test_udp_over_ipv6_is_spread_and_answered_from_the_vip(fabric):
    out = fabric.lab.run(
        "c1", sys.executable, str(TOOLS / "udp_load.py"), VIP6, "53", "--count", "120", "--concurrency", "4"
    )
    report = __import__("json").loads(out.strip().splitlines()[-1])
    assert report["failed"] == 0 and report["answered"] == 120, report
    # one client: its port's low bits pick among 16 of the 256 slots (the datapath hash leaves UDP ports out)
    assert set(report["by_backend"]) <= set(BACKENDS6) and len(report["by_backend"]) >= 2, report


def test_both_vips_of_the_dual_stack_service_reach_the_same_backends(fabric):
    four = fabric.lab.requests("c1", f"http://{VIP}/", 60)
    six = fabric.lab.requests("c1", f"http://[{VIP6}]/", 60)
    assert four["failed"] == six["failed"] == 0
    assert set(four["by_backend"]) == set(six["by_backend"]) == set(BACKENDS6)
    assert set(four["clients_seen"]) == {"10.0.0.1"} and set(six["clients_seen"]) == {CLIENT6}


def test_forged_advertisements_for_the_vip_or_a_backend_change_nothing(fabric):
    lab = fabric.lab
    vip_mac = fabric.api("GET", "/v1/vips/www6")[1]["mac"]
    before = {b["ip"]: b["status"]["mac"] for b in fabric.api("GET", "/v1/pools/web")[1]["backends"]}
    c2 = lab.hosts["c2"].mac
    script = FORGE.format(
        frames=[
            frames.build_nd(
                frames.Nd(c2, "33:33:00:00:00:01", target, "ff02::1", 255, 136, frames.NA_OVERRIDE, target, c2, True)
            ).hex()
            for target in (VIP6, BACKENDS6["b12"])
        ]
    )
    for _ in range(3):
        lab.run("c2", sys.executable, "-c", script)
        time.sleep(0.5)
    neigh = lab.run("c1", "ip", "-6", "neigh", "show", VIP6, "dev", "eth0")
    assert c2 not in neigh, neigh  # the client never heard the claim
    assert fabric.api("GET", "/v1/vips/www6")[1]["mac"] == vip_mac
    after = {b["ip"]: b["status"]["mac"] for b in fabric.api("GET", "/v1/pools/web")[1]["backends"]}
    assert after == before
    report = lab.requests("c1", f"http://[{VIP6}]/", 30)
    assert report["failed"] == 0 and "c2" not in report["by_backend"]


FORGE = r"""
import socket
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind(("eth0", 0))
for frame in {frames!r}:
    sock.send(bytes.fromhex(frame))
"""

TOO_BIG = r"""
import socket, struct, sys
vip, client = sys.argv[1], sys.argv[2]
inner = struct.pack('!IHBB16s16s', 6 << 28, 1440, 6, 64,
                    socket.inet_pton(socket.AF_INET6, vip), socket.inet_pton(socket.AF_INET6, client))
inner += struct.pack('!HHI', 80, 40000, 1) + bytes(64)
body = struct.pack('!BBHI', 2, 0, 0, 1280) + inner  # the kernel fills in the ICMPv6 checksum
sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
for _ in range(3):
    sock.sendto(body, (vip, 0))
"""


def test_packet_too_big_for_the_vip_reaches_every_backend(fabric):
    """Path MTU discovery over IPv6, where routers never fragment: the
    switch cannot tell which connection a Packet Too Big is about, so every
    backend behind the VIP gets it."""
    lab = fabric.lab

    def counts():
        return {name: int(lab.run(name, "nstat", "-az", "Icmp6InPktTooBigs").split()[-2]) for name in BACKENDS6}

    before = counts()
    lab.run("c1", sys.executable, "-c", TOO_BIG, VIP6, CLIENT6)
    time.sleep(0.5)
    after = counts()
    assert all(after[name] - before[name] == 3 for name in after), (before, after)


def test_ipv6_connections_are_kept_across_a_backend_added_and_one_drained(fabric):
    lab = fabric.lab
    lab.add_host("b14", 14, ip6=True)
    lab.make_backend("b14", [VIP, VIP6])
    lab.serve_http("b14", bind="::")
    streams = lab.spawn_client(
        "c1",
        f"http://[{VIP6}]/",
        "--streams",
        str(STREAMS),
        "--lines",
        "50",
        "--ms",
        "100",
        "--timeout",
        "5",
        log="streams6.json",
    )
    time.sleep(1.0)
    assert fabric.api("POST", "/v1/pools/web/backends", {"ip": "2001:db8::14"})[0] == 201
    wait_for(
        lambda: fabric.api("GET", "/v1/pools/web/backends/2001:db8::14")[1]["status"]["state"] == "up", what="b14 up"
    )
    assert fabric.api("PATCH", "/v1/pools/web/backends/2001:db8::11", {"weight": 0})[0] == 200
    assert streams.wait(60) == 0
    report = lab.client_report("streams6.json")
    assert report["intact"] == STREAMS, [r for r in report["results"] if not r["intact"]]
    after = lab.requests("c1", f"http://[{VIP6}]/", 60)
    assert after["failed"] == 0 and after["by_backend"].get("b14", 0) > 5 and "b11" not in after["by_backend"]


WITH_OPTIONS = r"""
import json, socket, sys
from collections import Counter
vip, count = sys.argv[1], int(sys.argv[2])
options = bytes([0, 0, 1, 4, 0, 0, 0, 0])  # a Destination Options header: one PadN option (the kernel sets its next header)
seen, failed = Counter(), 0
for _ in range(count):
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as conn:
            conn.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, options)
            conn.settimeout(3)
            conn.connect((vip, 80))
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
        seen[answer.split(b"\r\n\r\n", 1)[-1].split()[0].decode()] += 1
    except OSError:
        failed += 1
print(json.dumps({"by_backend": seen, "failed": failed}))
"""


def test_packets_with_an_extension_header_are_hashed_by_their_transport_ports(fabric):
    """Every packet of these connections carries a Destination Options
    header before TCP: Open vSwitch reads past it, so the VIP's rule and the
    5-tuple hash see the ports as for any packet, and the connections work
    and spread."""
    lab = fabric.lab
    dump = lab.capture("b12", "ip6[6] == 60", "dstopts.log", "-c", "1")
    report = __import__("json").loads(lab.run("c1", sys.executable, "-c", WITH_OPTIONS, VIP6, "60"))
    assert report["failed"] == 0, report
    assert len(report["by_backend"]) >= 2 and set(report["by_backend"]) <= set(BACKENDS6) | {"b14"}, report
    dump.wait(10)  # a backend saw the header itself: it reached the backends as it left the client
    assert "DSTOPT" in (lab.run_dir / "dstopts.log").read_text(), (lab.run_dir / "dstopts.log").read_text()


def test_a_killed_ipv6_backend_leaves_the_hash(fabric):
    lab = fabric.lab
    lab.stop(fabric.servers["b13"])
    wait_for(
        lambda: fabric.api("GET", "/v1/pools/web/backends/2001:db8::13")[1]["status"]["state"] == "unhealthy",
        10,
        what="b13 unhealthy",
    )
    reason = fabric.api("GET", "/v1/pools/web/backends/2001:db8::13")[1]["status"]["reason"]
    assert "connection to [2001:db8::13]:80 refused" in reason, reason
    report = lab.requests("c1", f"http://[{VIP6}]/", 60)
    assert report["failed"] == 0 and "b13" not in report["by_backend"], report
