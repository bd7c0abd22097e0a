"""Issue (hardening), the parts done: a flood of new source MACs is
forwarded but reaches the controller only through a meter, while the VIP
keeps being served."""

from __future__ import annotations

import re
import sys

from tests.integration.conftest import VIP, fabric_fixture, wait_for

fabric = fabric_fixture("dsrz", rest_port=18097, of_port=16697)

MAC_FLOOD = r"""
import os, socket, struct, sys
dst = bytes.fromhex(sys.argv[1].replace(':', ''))
count = int(sys.argv[2])
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind(('eth0', 0))
payload = bytes(46)
import time
for i in range(count):
    src = bytes([0x02, 0x66]) + struct.pack('!I', i)
    sock.send(dst + src + b'\x88\xb5' + payload)  # local experimental ethertype
    if i % 50 == 49:
        time.sleep(0.01)  # about 4,000 new source MACs a second, twice the limit
"""


def rx_packets(lab, host: str) -> int:
    return int(re.search(r"RX:.*\n\s*\d+\s+(\d+)", lab.run(host, "ip", "-s", "link", "show", "eth0"))[1])


def test_a_mac_flood_is_forwarded_but_reaches_the_controller_only_through_the_meter(fabric):
    lab = fabric.lab
    fabric.create_web()
    b11 = lab.hosts["b11"]
    before = rx_packets(lab, "b11")
    flood = lab.spawn("c1", sys.executable, "-c", MAC_FLOOD, b11.mac, "16000", log="flood.log")
    served = lab.requests("c1", f"http://{VIP}/", 30)
    assert flood.wait(60) == 0
    assert served["failed"] == 0
    # the frames were forwarded to their destination, above the limit too
    # (each new source is an upcall in Open vSwitch: a few may be lost there)
    assert rx_packets(lab, "b11") - before >= 15000
    # the meter dropped copies for the controller (above 2,000 a second; the flood runs at about 4,000)
    stats = lab.ofctl("meter-stats", lab.bridge, "meter=1")
    dropped = int(re.search(r"bands:\s*0: packet_count:(\d+)", stats)[1])
    assert dropped > 1500, stats
    switch = fabric.api("GET", "/v1/switches")[1][0]
    assert switch["hosts"] <= 4096 and switch["errors"] == 0
    _, pool = fabric.api("GET", "/v1/pools/web")
    assert [b["status"]["state"] for b in pool["backends"]] == ["up", "up", "up"]


def test_one_client_cannot_take_the_rest_api_from_the_others(fabric):
    """Eventlet serves at most 1,024 connections at once, and 1,100 that
    say nothing once held the API for as long as they stayed open. One
    client address now holds at most rest_max_per_client (64): while
    127.0.0.1 opens 1,100, the 65th and later are answered 503 and closed,
    and another address (127.0.0.2) is served at once. The 64 held are
    closed after rest_idle_timeout (10 s), and 127.0.0.1 is served again."""
    import http.client
    import resource
    import socket
    import time

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), max(hard, 4096)))
    idle = []
    try:
        for _ in range(1100):
            try:
                idle.append(socket.create_connection(("127.0.0.1", fabric.rest_port), timeout=0.5))
            except OSError:
                pass  # the listen queue is full for a moment
        assert len(idle) > 1030
        refused = idle[-1]
        refused.settimeout(5)
        answer = refused.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer, answer
        started = time.time()
        other = http.client.HTTPConnection("127.0.0.1", fabric.rest_port, timeout=5, source_address=("127.0.0.2", 0))
        other.request("GET", "/v1/vips")
        assert other.getresponse().status == 200 and time.time() - started < 2
        other.close()
        time.sleep(13)
        started = time.time()
        status, _ = rest_with_timeout(fabric.base, 15)
        assert status == 200 and time.time() - started < 2
    finally:
        for sock in idle:
            sock.close()


def rest_with_timeout(base: str, timeout: float):
    from ryu_dsr.lab import rest

    return rest(base, "GET", "/v1/vips", timeout=timeout)


def test_a_body_sent_in_chunks_is_read(fabric):
    """A client that streams its JSON (Transfer-Encoding: chunked, no
    Content-Length) gets it read, not "the request had no body"."""
    import http.client
    import json

    from ryu_dsr.lab import TOKENS

    conn = http.client.HTTPConnection("127.0.0.1", fabric.rest_port, timeout=10)
    body = json.dumps({"name": "chunked", "backends": [{"ip": "10.0.0.31"}]}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKENS[fabric.base]}"}
    conn.request("POST", "/v1/pools", body=iter([body[:20], body[20:]]), headers=headers, encode_chunked=True)
    answer = conn.getresponse()
    assert answer.status == 201, answer.read()
    assert fabric.api("GET", "/v1/pools/chunked")[1]["backends"][0]["ip"] == "10.0.0.31"
    assert fabric.api("DELETE", "/v1/pools/chunked")[0] == 204


FRAGMENTED = r"""
import json, socket, sys
vip, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
answers = {}
for port in range(20000, 20000 + count):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(('', port))
    sock.settimeout(2)
    sock.sendto(b'x' * size, (vip, 53))  # larger than the 1,500-byte MTU: sent in fragments
    try:
        data = sock.recv(65535)
        answers[port] = [data.split(b' ')[0].decode(), len(data) - len(data.split(b' ')[0]) - 1]
    except socket.timeout:
        answers[port] = None
print(json.dumps(answers))
"""


def test_a_fragmented_udp_datagram_reaches_one_backend_whole_in_both_hash_modes(fabric):
    """A 4,000-byte datagram leaves the client (MTU 1,500) in three
    fragments; only the first carries the ports. Every fragment must reach
    the same backend, or its kernel never reassembles the datagram and the
    client gets no answer."""
    import json

    lab = fabric.lab
    if fabric.api("GET", "/v1/pools/web")[0] == 404:
        fabric.create_web()
    for name in ("b11", "b12", "b13"):
        lab.serve_udp(name, 53, [VIP])
    vip = {"name": "dns", "ip": VIP, "protocol": "udp", "port": 53, "pool": "web", "hash": "5tuple"}
    assert fabric.api("POST", "/v1/vips", vip)[0] == 201
    assert "mtu 1500" in lab.run("c1", "ip", "link", "show", "eth0")
    for hash_fields in ("5tuple", "source_ip"):
        assert fabric.api("PATCH", "/v1/vips/dns", {"hash": hash_fields})[0] == 200
        answers = json.loads(lab.run("c1", sys.executable, "-c", FRAGMENTED, VIP, "40", "4000"))
        lost = [port for port, answer in answers.items() if answer is None]
        assert not lost, f"{hash_fields}: {len(lost)} of 40 datagrams never reassembled"
        assert {size for _backend, size in answers.values()} == {4000}
    assert fabric.api("DELETE", "/v1/vips/dns")[0] == 204


ARP_FRAMES = r"""
import socket, sys, time
def mac(text): return bytes.fromhex(text.replace(':', ''))
def ip(text): return socket.inet_aton(text)
eth_dst, sha, spa, tha, tpa, count = sys.argv[1:7]
frame = (mac(eth_dst) + mac(sha) + b'\x08\x06' + b'\x00\x01\x08\x00\x06\x04\x00\x02'
         + mac(sha) + ip(spa) + mac(tha) + ip(tpa))
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind(('eth0', 0))
for _ in range(int(count)):
    sock.send(frame + bytes(18))
    time.sleep(0.2)
"""

UDP_RECEIVER = r"""
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(('0.0.0.0', 9999))
while True:
    data, peer = sock.recvfrom(2048)
    print(peer[0], flush=True)
"""


def test_forged_arp_and_packets_in_the_vips_name_are_not_followed(fabric):
    """A host that claims a backend's address by ARP moves nothing and is
    shown in the backend's status; ARP from a VIP address reaches no other
    host and a backend that sends it is shown; only the VIP's backends may
    send from its address."""
    import time

    lab = fabric.lab
    if fabric.api("GET", "/v1/pools/web")[0] == 404:
        fabric.create_web()
    c1, b12, b13 = lab.hosts["c1"], lab.hosts["b12"], lab.hosts["b13"]
    probe_mac = "02:d4:00:00:00:01"
    # c1 claims 10.0.0.12 for 4 s, answering the controller's probes as if it were it
    lab.run("c1", sys.executable, "-c", ARP_FRAMES, probe_mac, c1.mac, "10.0.0.12", probe_mac, "0.0.0.0", "20")
    status = fabric.api("GET", "/v1/pools/web/backends/10.0.0.12")[1]["status"]
    assert status["mac"] == b12.mac and status["location"]["port"] == b12.ofport
    assert status["claim"]["mac"] == c1.mac and status["claim"]["port"] == c1.ofport
    assert "claimed by " + c1.mac in fabric.log()
    assert lab.requests("c1", f"http://{VIP}/", 20)["failed"] == 0
    # b13 announces the VIP by ARP: other hosts do not hear it, its status says so
    lab.run("b13", sys.executable, "-c", ARP_FRAMES, "ff:ff:ff:ff:ff:ff", b13.mac, VIP, "00:00:00:00:00:00", VIP, "3")
    vip_mac = fabric.api("GET", "/v1/vips/www")[1]["mac"]
    assert f"lladdr {vip_mac}" in lab.run("c1", "ip", "neigh", "show", VIP)  # not b13's
    seen = fabric.api("GET", "/v1/pools/web/backends/10.0.0.13")[1]["status"]["arp_for_vip"]
    assert seen and seen["address"] == VIP
    assert f"{b13.mac} (10.0.0.13)" in fabric.log() and "sends ARP for VIP address" in fabric.log()
    # c1 sends UDP to another client from the VIP's address and from its own: only its own arrives
    c2 = lab.hosts.get("c2") or lab.add_host("c2", 2)
    # a host just plugged in: its port floods only once discovery has seen it, so wait until c1 reaches it
    wait_for(lambda: "1 received" in lab.run("c1", "ping", "-c", "1", "-W", "1", c2.ip, check=False), 15, what="c2")
    receiver = lab.spawn("c2", sys.executable, "-c", UDP_RECEIVER, log="c2-receiver.log")
    time.sleep(0.5)
    lab.run("c1", "ip", "addr", "add", f"{VIP}/32", "dev", "lo")
    lab.run("c1", "ip", "neigh", "replace", c2.ip, "lladdr", c2.mac, "dev", "eth0")
    try:
        send = "import socket,sys\nfor _ in range(5):\n s=socket.socket(2,2); s.bind((sys.argv[1],0)); s.sendto(b'x',(sys.argv[2],9999))"
        lab.run("c1", sys.executable, "-c", send, VIP, c2.ip)
        lab.run("c1", sys.executable, "-c", send, c1.ip, c2.ip)
        time.sleep(0.5)
    finally:
        lab.run("c1", "ip", "addr", "del", f"{VIP}/32", "dev", "lo")
        lab.stop(receiver)
    sources = (lab.run_dir / "c2-receiver.log").read_text().split()
    assert sources == [c1.ip] * 5
