"""L3 DSR with GRE (forwarding "gre", as Maglev's): backends in other
subnets, behind a router on the switch's segment; the request goes whole
out of the switch's GRE port (Open vSwitch's tunnel routes it) with the
backend's address as the tunnel's destination; through the simulator."""

from __future__ import annotations

import pytest
from ryu_dsr.flows import frames
from ryu_dsr.flows.ovs_hash import symmetric_l4

from ryu_dsr.model import InvalidInput
from tests.conftest import CLIENT_MAC, make_rig
from tests.simulator import syn, tcp, udp

VIP = "10.0.0.100"
PROBE, PROBE_MAC = "10.0.0.250", "02:d4:00:00:00:01"
GATEWAY, GATEWAY_MAC, GATEWAY_PORT = "10.0.0.254", "02:00:00:00:00:fe", 5
GRE_PORT = 6
TUNNELLED = ("192.168.50.21", "192.168.51.22", "192.168.52.23")
LOCAL = ("10.0.0.11", "02:00:00:00:00:0b", 2)
ROUTES = "192.168.48.0/21 via 10.0.0.254"
CHECK = {"kind": "tcp", "port": 80, "interval": 1.0, "timeout": 0.5}


def rig_and_switch(tmp_path, gre_port: bool = True):
    rig = make_rig(tmp_path, routes=ROUTES, probe_ip=PROBE)
    names = {GRE_PORT: "dsr-gre"} if gre_port else {}
    switch = rig.connect(ports=(1, 2, 3, 4, 5, GRE_PORT), port_names={1: "eth1", **names})
    return rig, switch


def service(rig, check=None):
    """Pool "web": three gre backends behind the gateway and one on the
    segment; VIP "www" on it. The gateway and the local backend answer ARP."""
    backends = [{"ip": ip, "forwarding": "gre"} for ip in TUNNELLED] + [{"ip": LOCAL[0]}]
    rig.service.create_pool({"name": "web", "backends": backends, "health_check": check or {"kind": "none"}})
    rig.service.create_vip({"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"})
    rig.service.create_vip({"name": "dns", "ip": VIP, "protocol": "udp", "port": 53, "pool": "web"})
    rig.answer_arp(GATEWAY, GATEWAY_MAC, GATEWAY_PORT)
    rig.answer_arp(LOCAL[0], LOCAL[1], LOCAL[2])
    rig.learn(CLIENT_MAC, 1)


def test_a_gre_backend_is_refused_without_a_route_an_ipv4_address_or_a_check_that_goes_through_the_tunnel(tmp_path):
    rig, _switch = rig_and_switch(tmp_path)
    with pytest.raises(InvalidInput, match="has no route") as refused:
        rig.service.create_pool({"name": "web", "backends": [{"ip": "172.16.0.9", "forwarding": "gre"}]})
    assert refused.value.field == "backends[0].forwarding"
    with pytest.raises(InvalidInput, match="through the tunnel\\); arp cannot reach them") as refused:
        rig.service.create_pool({"name": "web", "backends": [{"ip": TUNNELLED[0], "forwarding": "gre"}]})
    assert refused.value.field == "health_check.kind"
    with pytest.raises(InvalidInput, match="needs an IPv4 address") as refused:
        rig.service.create_pool({"name": "web", "backends": [{"ip": "2001:db8:50::21", "forwarding": "gre"}]})
    assert refused.value.field == "backends[0].ip"
    with pytest.raises(InvalidInput, match="must be one of: l2, dscp, gre"):
        rig.service.create_pool({"name": "web", "backends": [{"ip": TUNNELLED[0], "forwarding": "ipip"}]})
    assert "web" not in rig.core.config.pools


def test_requests_to_gre_backends_leave_whole_through_the_tunnel_and_only_requests(tmp_path):
    rig, switch = rig_and_switch(tmp_path)
    service(rig)
    vip_mac = rig.core.config.vips["www"].mac
    reached: dict[str, int] = {}
    for n in range(400):
        client = f"10.1.{n // 200}.{n % 200 + 1}"
        out = switch.send(dict(syn(client, VIP, 40000 + n, 80, CLIENT_MAC, vip_mac), ttl=64), in_port=1)
        assert len(out) == 1, out
        p = out[0].packet
        # the request itself is not touched: the client's address, the VIP, the TTL, no DSCP
        assert (p["ipv4_src"], p["ipv4_dst"], p["tcp_dst"], p["ttl"]) == (client, VIP, 80, 64)
        assert "ip_dscp" not in p
        if out[0].port == GRE_PORT:  # carried to the backend's own address
            reached[p["tun_ipv4_dst"]] = reached.get(p["tun_ipv4_dst"], 0) + 1
        else:  # on the segment: the destination MAC only
            assert (p["eth_dst"], out[0].port) == (LOCAL[1], LOCAL[2]) and "tun_ipv4_dst" not in p
            reached[LOCAL[0]] = reached.get(LOCAL[0], 0) + 1
    assert set(reached) == {*TUNNELLED, LOCAL[0]} and min(reached.values()) > 50
    # UDP too, to the same backends
    dns = {
        switch.send(udp(f"10.5.0.{n}", VIP, 5000 + n, 53, CLIENT_MAC, vip_mac), 1)[0].packet.get("tun_ipv4_dst")
        for n in range(1, 100)
    }
    assert set(TUNNELLED) <= dns
    # the replies come back from the VIP through the gateway's port: allowed, as from any backend
    reply = tcp(VIP, "10.1.0.1", 80, 40000, GATEWAY_MAC, CLIENT_MAC)
    assert [e.port for e in switch.send(reply, in_port=GATEWAY_PORT)] == [1]
    status = rig.status.backend_status("web", TUNNELLED[0])
    assert status["routed"] == {"gateway": GATEWAY, "tunnel": "gre"} and status["state"] == "up"
    assert "routed (gre) through gateway 10.0.0.254" in status["reason"]


def test_connections_to_a_gre_backend_are_kept_across_a_change(tmp_path):
    rig, switch = rig_and_switch(tmp_path)
    service(rig)
    vip_mac = rig.core.config.vips["www"].mac
    opened = []
    for n in range(300):
        first = syn(f"10.2.{n // 200}.{n % 200 + 1}", VIP, 30000 + n, 80, CLIENT_MAC, vip_mac)
        out = switch.send(first, 1)[0]
        opened.append((first, out.port, out.packet.get("tun_ipv4_dst")))
    rig.in_use()
    rig.service.add_backend("web", {"ip": "192.168.53.24", "forwarding": "gre"})
    rig.pass_hold()
    assert switch.handover_rules()  # slots moved
    for first, port, tunnel in opened:
        later = {k: v for k, v in first.items() if k != "tcp_flags"}
        out = switch.send(later, 1)[0]
        assert (out.port, out.packet.get("tun_ipv4_dst")) == (port, tunnel)  # still where it was
    news = {
        switch.send(syn(f"10.3.0.{n}", VIP, 50000 + n, 80, CLIENT_MAC, vip_mac), 1)[0].packet.get("tun_ipv4_dst")
        for n in range(1, 200)
    }
    assert "192.168.53.24" in news  # new connections reach the new backend


def test_a_switch_without_the_gre_port_takes_gre_backends_out_and_sends_them_nothing(tmp_path):
    rig, switch = rig_and_switch(tmp_path, gre_port=False)
    service(rig)
    status = rig.status.backend_status("web", TUNNELLED[0])
    assert status["state"] == "down" and "has no GRE port (dsr-gre)" in status["reason"], status
    vip_mac = rig.core.config.vips["www"].mac
    ports = {switch.send(syn(f"10.6.0.{n}", VIP, 6000 + n, 80, CLIENT_MAC, vip_mac), 1)[0].port for n in range(1, 60)}
    assert ports == {LOCAL[2]}  # every connection to the backend on the segment


def test_a_switch_that_drops_its_connection_keeps_its_gre_backends_in_the_hash(tmp_path):
    """A switch not connected says nothing against its GRE port (as against
    its links): its gre backends keep their slots until it comes back
    without the port, so a controller's lost connection moves no one."""
    rig, switch = rig_and_switch(tmp_path)
    service(rig)
    slots = rig.status.slot_counts("web")
    assert all(rig.status.backend_status("web", ip)["state"] == "up" for ip in TUNNELLED)
    rig.balancer.switch_disconnected(1)
    assert all(rig.status.backend_status("web", ip)["state"] == "up" for ip in TUNNELLED)
    assert rig.status.slot_counts("web") == slots
    rig.connect(ports=(1, 2, 3, 4, 5, GRE_PORT), port_names={1: "eth1"})  # back, without its GRE port
    status = rig.status.backend_status("web", TUNNELLED[0])
    assert status["state"] == "down" and "has no GRE port (dsr-gre)" in status["reason"], status


def test_a_gre_backend_is_checked_through_the_tunnel_and_at_its_own_address(tmp_path):
    rig, switch = rig_and_switch(tmp_path)
    service(rig, check=CHECK)
    probes = []
    for _ in range(8):  # in turn: the VIP through the tunnel, then its own address, plainly
        rig.clock.now += 1.1
        rig.balancer.tick()
        for out in switch.packet_outs:
            segment = frames.parse_tcp(out.data)
            if segment is None or segment.flags != frames.TCP_SYN:
                continue
            probes.append((out, segment))
            if out.tunnel == TUNNELLED[1]:
                continue  # it lost its decapsulation: what comes through the tunnel is dropped
            if out.tunnel is not None or segment.dst in TUNNELLED:
                answer = frames.Tcp(
                    GATEWAY_MAC, PROBE_MAC, segment.dst, PROBE, 80, segment.sport, 7, segment.seq + 1, 0x12, b""
                )
                rig.balancer.packet_in(1, GATEWAY_PORT, frames.build_tcp(answer))
        switch.packet_outs.clear()
    tunnelled = {out.tunnel for out, s in probes if out.port == GRE_PORT and s.dst == VIP}
    assert tunnelled == set(TUNNELLED)  # to the VIP, whole, through the tunnel to each backend
    plain = {s.dst: out.port for out, s in probes if out.tunnel is None and s.dst in TUNNELLED}
    assert plain == dict.fromkeys(TUNNELLED, GATEWAY_PORT)  # and plainly to its own address, to the gateway
    checks = rig.core.backends.health
    assert checks.healthy("web", TUNNELLED[0]) and not checks.healthy("web", TUNNELLED[1])
    status = rig.status.backend_status("web", TUNNELLED[1])
    assert status["state"] == "unhealthy", status
    assert "no answer from 10.0.0.100 in 0.5 s through the GRE tunnel" in status["reason"], status
    assert "gre0 up, rp_filter off, the VIP on lo" in status["reason"]


def test_the_trace_of_a_connection_to_a_gre_backend_names_the_tunnel(tmp_path):
    rig, switch = rig_and_switch(tmp_path)
    service(rig)
    rig.settle()  # no slot held for a backend found after the VIP
    vip_mac = rig.core.config.vips["www"].mac
    seen = set()
    for sport in range(7000, 7040):
        answer = rig.status.trace(
            {"vip": "www", "client": "10.7.0.1", "client_port": str(sport), "client_mac": CLIENT_MAC}
        )
        packet = syn("10.7.0.1", VIP, sport, 80, CLIENT_MAC, vip_mac)
        [out] = switch.send(dict(packet, dp_hash=symmetric_l4(packet)), 1)  # the hash Open vSwitch gives it
        [delivered] = answer["delivered"]
        assert (delivered["port"], delivered["tunnel"]) == (out.port, out.packet.get("tun_ipv4_dst"))
        if delivered["tunnel"]:
            assert answer["backend"] == delivered["tunnel"] and delivered["ip_dst"] == VIP
            seen.add(delivered["tunnel"])
    assert seen == set(TUNNELLED)


def test_a_second_pool_of_the_same_gre_backends_gets_its_own_routed_rules(tmp_path):
    """The same backends in another pool (another VIP): their uids there are
    new, and the gateway's rules route them too (they were not written when
    the gateway had been found before the pool existed)."""
    rig, switch = rig_and_switch(tmp_path)
    service(rig)
    backends = [{"ip": ip, "forwarding": "gre"} for ip in TUNNELLED]
    rig.service.create_pool({"name": "api", "backends": backends, "health_check": {"kind": "none"}})
    rig.service.create_vip({"name": "api", "ip": "10.0.0.101", "protocol": "tcp", "port": 80, "pool": "api"})
    rig.settle()
    api_mac = rig.core.config.vips["api"].mac
    tunnels = set()
    for n in range(1, 120):
        [out] = switch.send(syn(f"10.8.0.{n}", "10.0.0.101", 8000 + n, 80, CLIENT_MAC, api_mac), 1)
        assert out.port == GRE_PORT, out  # every one into the tunnel, none to the gateway as it is
        tunnels.add(out.packet["tun_ipv4_dst"])
    assert tunnels == set(TUNNELLED)
