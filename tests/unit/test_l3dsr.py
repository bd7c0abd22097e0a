"""L3DSR (forwarding "dscp"): backends in other subnets, behind a router on
the switch's segment, reached with their own address written over the
VIP's and a DSCP value that names the VIP; through the simulator."""

from __future__ import annotations

import pytest
from ryu_dsr.flows import frames
from ryu_dsr.flows.pipeline import Table

from ryu_dsr.model import Conflict, InvalidInput
from tests.conftest import CLIENT_MAC, make_rig
from tests.simulator import syn, tcp

VIP = "10.0.0.100"
PROBE, PROBE_MAC = "10.0.0.250", "02:d4:00:00:00:01"
GATEWAY, GATEWAY_MAC, GATEWAY_PORT = "10.0.0.254", "02:00:00:00:00:fe", 5
ROUTED = ("192.168.50.21", "192.168.51.22", "192.168.52.23")
LOCAL = ("10.0.0.11", "02:00:00:00:00:0b", 2)
ROUTES = "192.168.48.0/21 via 10.0.0.254"
CHECK = {"kind": "tcp", "port": 80, "interval": 1.0, "timeout": 0.5}


def rig_with_routes(tmp_path, **settings):
    return make_rig(tmp_path, routes=ROUTES, probe_ip=PROBE, **settings)


def service(rig, check=None):
    """Pool "web": three dscp backends behind the gateway and one on the
    segment; VIP "www" on it. The gateway and the local backend answer ARP."""
    backends = [{"ip": ip, "forwarding": "dscp"} for ip in ROUTED] + [{"ip": LOCAL[0]}]
    rig.service.create_pool({"name": "web", "backends": backends, "health_check": check or {"kind": "none"}})
    rig.service.create_vip({"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"})
    rig.answer_arp(GATEWAY, GATEWAY_MAC, GATEWAY_PORT)
    rig.answer_arp(LOCAL[0], LOCAL[1], LOCAL[2])
    rig.learn(CLIENT_MAC, 1)


def test_routes_are_checked_naming_the_setting(tmp_path):
    for bad, reason in (
        ("192.168.50.0/24 via", "is not PREFIX via GATEWAY"),
        ("192.168.50.1/24 via 10.0.0.254", "host bits must be zero"),
        ("192.168.50.0/24 via 2001:db8::1", "not of the prefix's family"),
        ("192.168.50.0/24 via 192.168.50.1", "inside a routed prefix"),
    ):
        with pytest.raises(InvalidInput, match=reason) as refused:
            make_rig(tmp_path, routes=bad)
        assert refused.value.field == "dsr.routes"


def test_a_dscp_backend_needs_a_route_and_a_check_that_travels_as_its_traffic(tmp_path):
    rig = rig_with_routes(tmp_path)
    with pytest.raises(InvalidInput, match="has no route") as refused:
        rig.service.create_pool({"name": "web", "backends": [{"ip": "172.16.0.9", "forwarding": "dscp"}]})
    assert refused.value.field == "backends[0].forwarding"
    with pytest.raises(InvalidInput, match="arp cannot reach them") as refused:
        rig.service.create_pool({"name": "web", "backends": [{"ip": ROUTED[0], "forwarding": "dscp"}]})
    assert refused.value.field == "health_check.kind"
    with pytest.raises(InvalidInput, match="give it no MAC or location"):
        rig.service.create_pool(
            {"name": "web", "backends": [{"ip": ROUTED[0], "forwarding": "dscp", "mac": "02:00:00:00:00:01"}]}
        )
    assert "web" not in rig.core.config.pools


def test_vips_get_dscp_values_that_name_one_address_each(tmp_path):
    rig = rig_with_routes(tmp_path)
    rig.connect()
    service(rig)
    www = rig.core.config.vips["www"]
    assert www.dscp == 1
    # another VIP on the same address shares its value; another address gets the next
    rig.service.create_vip({"name": "www8", "ip": VIP, "protocol": "tcp", "port": 8080, "pool": "web"})
    rig.service.create_vip({"name": "api", "ip": "10.0.0.101", "protocol": "tcp", "port": 80, "pool": "web"})
    assert (rig.core.config.vips["www8"].dscp, rig.core.config.vips["api"].dscp) == (1, 2)
    with pytest.raises(Conflict, match="dscp 1 already names 10.0.0.100"):
        rig.service.patch_vip("api", {"dscp": 1})
    with pytest.raises(InvalidInput, match="but 46, 48 and 56") as refused:
        rig.service.patch_vip("api", {"dscp": 46})
    assert refused.value.field == "dscp" and rig.core.config.vips["api"].dscp == 2
    # a dscp pool serves VIPs of its backends' family
    with pytest.raises(Conflict, match="two address families"):
        rig.service.create_vip({"name": "v6", "ip": "2001:db8::100", "protocol": "tcp", "port": 80, "pool": "web"})


def test_a_pool_that_gains_a_dscp_backend_gives_its_vips_values(tmp_path):
    rig = rig_with_routes(tmp_path)
    rig.service.create_pool({"name": "web", "backends": [{"ip": LOCAL[0]}], "health_check": {"kind": "none"}})
    rig.service.create_vip({"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web"})
    assert rig.core.config.vips["www"].dscp is None
    rig.service.add_backend("web", {"ip": ROUTED[0], "forwarding": "dscp"})
    assert rig.core.config.vips["www"].dscp == 1


def test_requests_to_dscp_backends_are_routed_and_only_requests(tmp_path):
    rig = rig_with_routes(tmp_path)
    switch = rig.connect()
    service(rig)
    vip_mac = rig.core.config.vips["www"].mac
    reached = {}
    for n in range(400):
        client = f"10.1.{n // 200}.{n % 200 + 1}"
        out = switch.send(dict(syn(client, VIP, 40000 + n, 80, CLIENT_MAC, vip_mac), ttl=64), in_port=1)
        assert len(out) == 1, out
        p = out[0].packet
        assert (p["ipv4_src"], p["tcp_dst"], p["eth_src"]) == (client, 80, CLIENT_MAC)  # the client's own
        if p["eth_dst"] == GATEWAY_MAC:  # routed: its address, the VIP's DSCP, one hop less
            assert out[0].port == GATEWAY_PORT and p["ip_dscp"] == 1 and p["ttl"] == 63
            reached[p["ipv4_dst"]] = reached.get(p["ipv4_dst"], 0) + 1
        else:  # on the segment: the destination MAC only
            assert (p["eth_dst"], out[0].port, p["ipv4_dst"], p["ttl"]) == (LOCAL[1], LOCAL[2], VIP, 64)
            assert "ip_dscp" not in p
            reached[LOCAL[0]] = reached.get(LOCAL[0], 0) + 1
    assert set(reached) == {*ROUTED, LOCAL[0]} and min(reached.values()) > 50
    # the replies come back from the VIP through the gateway's port: allowed, as from any backend
    reply = tcp(VIP, "10.1.0.1", 80, 40000, GATEWAY_MAC, CLIENT_MAC)
    assert [e.port for e in switch.send(reply, in_port=GATEWAY_PORT)] == [1]
    forged = tcp(VIP, "10.1.0.1", 80, 40000, "02:00:00:00:00:99", CLIENT_MAC)
    assert switch.send(forged, in_port=3) == []


def test_connections_to_a_dscp_backend_are_kept_across_a_change(tmp_path):
    rig = rig_with_routes(tmp_path)
    switch = rig.connect()
    service(rig)
    vip_mac = rig.core.config.vips["www"].mac
    opened = {}
    for n in range(300):
        first = syn(f"10.2.{n // 200}.{n % 200 + 1}", VIP, 30000 + n, 80, CLIENT_MAC, vip_mac)
        out = switch.send(first, 1)[0].packet
        opened[n] = (first, out["eth_dst"], out["ipv4_dst"])
    rig.in_use()
    rig.service.add_backend("web", {"ip": "192.168.53.24", "forwarding": "dscp"})
    rig.pass_hold()
    assert switch.handover_rules()  # slots moved
    moved = 0
    for first, mac, address in opened.values():
        later = {k: v for k, v in first.items() if k != "tcp_flags"}
        p = switch.send(later, 1)[0].packet
        assert (p["eth_dst"], p["ipv4_dst"]) == (mac, address)  # still where it was, routed as before
        moved += address == "192.168.53.24"
    assert moved == 0
    news = {
        switch.send(syn(f"10.3.0.{n}", VIP, 50000 + n, 80, CLIENT_MAC, vip_mac), 1)[0].packet["ipv4_dst"]
        for n in range(1, 200)
    }
    assert "192.168.53.24" in news  # new connections reach the new backend


def test_a_dscp_backend_is_checked_through_its_rewrite(tmp_path):
    rig = rig_with_routes(tmp_path)
    switch = rig.connect()
    service(rig, check=CHECK)
    rig.clock.now += 2
    rig.balancer.tick()
    probes = [(out, frames.parse_tcp(out.data)) for out in switch.packet_outs]
    routed = {s.dst: (out, s) for out, s in probes if s is not None and s.dst in ROUTED}
    assert set(routed) == set(ROUTED)
    out, segment = routed[ROUTED[0]]
    assert segment.eth_dst == GATEWAY_MAC and out.port == GATEWAY_PORT and segment.flags == frames.TCP_SYN
    assert out.data[15] == 1 << 2  # the IPv4 TOS byte: DSCP 1, the VIP's
    # the backend whose rewrite works answers from the VIP; one without it from its own address
    for ip, source in ((ROUTED[0], VIP), (ROUTED[1], ROUTED[1])):
        sent = routed[ip][1]
        answer = frames.Tcp(GATEWAY_MAC, PROBE_MAC, source, PROBE, 80, sent.sport, 7, sent.seq + 1, 0x12, b"")
        rig.balancer.packet_in(1, GATEWAY_PORT, frames.build_tcp(answer))
    checks = rig.core.backends.health
    assert checks.status("web", ROUTED[0]).last_result.startswith("ok")
    result = checks.status("web", ROUTED[1]).last_result
    assert "answered DSCP 1 from its own address, not from VIP 10.0.0.100" in result, result
    assert "rewrite of the DSCP to the VIP (nft) is missing" in result


def test_a_dscp_backend_shows_its_gateway_and_the_values_it_must_map(tmp_path):
    rig = rig_with_routes(tmp_path)
    rig.connect()
    service(rig)
    rig.service.create_vip({"name": "api", "ip": "10.0.0.101", "protocol": "tcp", "port": 80, "pool": "web"})
    routed = rig.status.backend_status("web", ROUTED[0])
    assert routed["routed"] == {"gateway": GATEWAY, "dscp": {VIP: 1, "10.0.0.101": 2}}
    assert routed["mac"] == GATEWAY_MAC and routed["state"] == "up"
    assert "routed (dscp) through gateway 10.0.0.254" in routed["reason"]
    assert rig.status.backend_status("web", LOCAL[0])["routed"] is None


def polled_after_connections(tmp_path, n: int):
    """The service, ``n`` new connections through it, one counter poll;
    (rig, connections per destination address the switch wrote)."""
    rig = rig_with_routes(tmp_path)
    switch = rig.connect()
    service(rig)
    vip_mac = rig.core.config.vips["www"].mac
    sent: dict[str, int] = {}
    for i in range(n):
        packet = syn(f"10.4.{i // 200}.{i % 200 + 1}", VIP, 20000 + i, 80, CLIENT_MAC, vip_mac)
        out = switch.send(packet, 1)[0].packet
        sent[out["ipv4_dst"]] = sent.get(out["ipv4_dst"], 0) + 1
    rig.balancer.traffic_read(1, switch.flow_stats((Table.DECIDE, Table.CHOSEN, Table.REPLIES)))
    return rig, sent


def test_a_poll_counts_each_routed_backend_apart_behind_one_gateway(tmp_path):
    from ryu_dsr.rest import views

    rig, sent = polled_after_connections(tmp_path, 200)
    per_backend = views.pool_stats(rig.status, "web")["backends"]
    assert {ip: per_backend[ip]["packets"] for ip in ROUTED} == {ip: sent.get(ip, 0) for ip in ROUTED}
    assert per_backend[LOCAL[0]]["packets"] == sent.get(VIP, 0)  # the local one: by its MAC, as before
    # every packet sent was a SYN: each a new connection of the backend it was routed to
    assert {ip: per_backend[ip]["new_connections"] for ip in ROUTED} == {ip: sent.get(ip, 0) for ip in ROUTED}
    assert per_backend[LOCAL[0]]["new_connections"] == sent.get(VIP, 0)


def test_a_dscp_backend_is_also_checked_plainly_at_its_own_address(tmp_path):
    rig = rig_with_routes(tmp_path)
    switch = rig.connect()
    service(rig, check=CHECK)
    plain = []
    for _ in range(4):  # probes take turns: through the rewrite (the VIP's DSCP), then plainly
        before = len(switch.packet_outs)
        rig.clock.now += 1.1
        rig.balancer.tick()
        for out in switch.packet_outs[before:]:
            segment = frames.parse_tcp(out.data)
            if segment is not None and segment.dst == ROUTED[2]:
                if out.data[15] == 0:
                    plain.append(segment)
                answer_from = ROUTED[2] if out.data[15] == 0 else VIP
                reply = frames.Tcp(
                    GATEWAY_MAC, PROBE_MAC, answer_from, PROBE, 80, segment.sport, 9, segment.seq + 1, 0x12, b""
                )
                rig.balancer.packet_in(1, GATEWAY_PORT, frames.build_tcp(reply))
    assert plain, "no plain probe of the backend's own address"
    status = rig.core.backends.health.status("web", ROUTED[2])
    assert status.healthy and status.last_result.startswith("ok")


def test_metrics_show_what_was_routed_to_each_dscp_backend(tmp_path):
    from ryu_dsr.rest.metrics import render

    rig, sent = polled_after_connections(tmp_path, 100)
    text = render(rig.status).decode()
    for ip in ROUTED:
        assert f'ryu_dsr_backend_packets_total{{backend="{ip}"}} {sent.get(ip, 0)}' in text, text
