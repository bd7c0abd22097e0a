"""IPv6: addresses, Neighbor Discovery answered in the switch, backends
found by solicitation, VIP traffic hashed and rewritten, dual-stack pools;
through the simulator and the controller's own frame codec."""

from __future__ import annotations

import ipaddress

import pytest
from ryu.lib.packet import ethernet, icmpv6, ipv6, packet
from ryu_dsr.flows import frames
from ryu_dsr.flows.family import IPV6, family_of
from ryu_dsr.flows.pipeline import Table

from ryu_dsr.model import InvalidInput
from tests.conftest import BACKENDS, CLIENT_MAC, make_rig
from tests.simulator import advertisement, as_ipv6, solicitation, syn, tcp6

VIP6 = "2001:db8::100"
CLIENT6 = "2001:db8::1"
BACKENDS6 = {
    "2001:db8::11": ("02:00:00:00:00:0b", 2),
    "2001:db8::12": ("02:00:00:00:00:0c", 3),
    "2001:db8::13": ("02:00:00:00:00:0d", 4),
}


def answer_solicitation(rig, ip: str, mac: str, port: int) -> None:
    """A backend's advertisement in answer to the controller's solicitation."""
    probe = rig.balancer.settings.probe_mac
    na = frames.Nd(mac, probe, ip, frames.link_local(probe), 255, frames.ND_ADVERT, frames.NA_SOLICITED, ip, mac, True)
    rig.balancer.packet_in(1, port, frames.build_nd(na))


def web6(rig, hash_fields: str = "5tuple", protocol: str = "tcp") -> None:
    rig.service.create_pool({"name": "web", "backends": [{"ip": ip} for ip in BACKENDS6]})
    rig.service.create_vip(
        {"name": "web6", "ip": VIP6, "protocol": protocol, "port": 80, "pool": "web", "hash": hash_fields}
    )
    for ip, (mac, port) in BACKENDS6.items():
        answer_solicitation(rig, ip, mac, port)
    rig.learn(CLIENT_MAC, 1)


# -- addresses --


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("2001:DB8:0:0::100", "2001:db8::100"), ("fd00:0:0:0:0:0:0:1", "fd00::1"), ("10.0.0.100", "10.0.0.100")],
)
def test_an_address_of_either_family_has_one_canonical_text(rig, text, canonical):
    rig.service.create_pool({"name": "web"})
    rig.service.create_vip({"name": "v", "ip": text, "protocol": "tcp", "port": 80, "pool": "web"})
    assert rig.core.config.vips["v"].ip == canonical


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("::ffff:10.0.0.1", "IPv4-mapped"),
        ("fe80::1", "link-local"),
        ("ff02::1", "not a unicast host address"),
        ("::", "not a unicast host address"),
        ("::1", "not a unicast host address"),
        ("2001:db8::1%eth0", "has a zone"),
        ("2001:db8::g", "not an IPv6 address"),
    ],
)
def test_an_address_that_names_no_host_is_refused_with_its_reason(rig, text, reason):
    with pytest.raises(InvalidInput, match=reason) as refused:
        rig.service.create_pool({"name": "web", "backends": [{"ip": text}]})
    assert refused.value.field == "backends[0].ip"
    assert "web" not in rig.core.config.pools  # nothing changed


def test_an_ipv6_vip_gets_a_locally_administered_mac_from_its_address(rig):
    rig.service.create_pool({"name": "web"})
    rig.service.create_vip({"name": "v", "ip": VIP6, "protocol": "tcp", "port": 80, "pool": "web"})
    mac = rig.core.config.vips["v"].mac
    assert mac == "02:d6:00:00:01:00"
    assert int(mac[:2], 16) & 0b11 == 0b10  # local, unicast


def test_probe_ip_holds_one_address_per_family(tmp_path):
    rig = make_rig(tmp_path, probe_ip="10.0.0.250, 2001:DB8::250")
    assert rig.balancer.settings.probe_ip == "10.0.0.250,2001:db8::250"
    for bad in ("2001:db8::1,2001:db8::2", "10.0.0.1,10.0.0.2", "10.0.0.1,fe80::1"):
        with pytest.raises(InvalidInput) as refused:
            make_rig(tmp_path, probe_ip=bad)
        assert refused.value.field == "dsr.probe_ip"


def test_an_ipv6_probe_ip_is_the_source_of_ipv6_checks_and_answered_by_the_switch(tmp_path):
    rig = make_rig(tmp_path, probe_ip="2001:db8::250")
    switch = rig.connect()
    rig.service.create_pool(
        {"name": "web", "backends": [{"ip": "2001:db8::11"}], "health_check": {"kind": "tcp", "port": 80}}
    )
    answer_solicitation(rig, "2001:db8::11", *BACKENDS6["2001:db8::11"])
    rig.clock.now += 2
    rig.balancer.tick()
    syns = [frames.parse_tcp6(out.data) for out in switch.packet_outs if frames.parse_tcp6(out.data)]
    assert syns and all(s.src == "2001:db8::250" for s in syns)
    out = switch.send(solicitation("02:00:00:00:00:0b", "2001:db8::11", "2001:db8::250"), in_port=2)
    assert [(e.port, e.packet["ipv6_nd_tll"]) for e in out] == [(2, rig.balancer.settings.probe_mac)]


# -- the frame codec, checked against Ryu's packet library --


def test_an_advertisement_the_controller_builds_is_the_one_ryu_builds():
    request = IPV6.neighbour(IPV6.probe("02:00:00:00:00:01", VIP6))  # a host's solicitation, as the codec reads it
    assert request is not None and request.request
    ours = IPV6.reply(request, "02:d6:00:00:01:00")
    theirs = packet.Packet()
    theirs.add_protocol(ethernet.ethernet(request.sender_mac, "02:d6:00:00:01:00", 0x86DD))
    theirs.add_protocol(ipv6.ipv6(src=VIP6, dst=request.sender_ip, nxt=58, hop_limit=255))
    theirs.add_protocol(
        icmpv6.icmpv6(
            type_=136,
            data=icmpv6.nd_neighbor(res=0b011, dst=VIP6, option=icmpv6.nd_option_tla(hw_src="02:d6:00:00:01:00")),
        )
    )
    theirs.serialize()
    assert ours == bytes(theirs.data)
    parsed = frames.parse_nd(ours)
    assert parsed.checksum_ok and parsed.hop_limit == 255 and parsed.flags == frames.NA_SOLICITED | frames.NA_OVERRIDE


def test_a_damaged_or_routed_advertisement_is_not_believed():
    probe = "02:00:00:00:0f:ff"
    good = frames.Nd("02:00:00:00:00:0b", probe, "2001:db8::11", "fe80::1", 255, 136, 0, "2001:db8::11", None, True)
    frame = bytearray(frames.build_nd(good))
    assert IPV6.neighbour(bytes(frame)) is not None
    frame[-1] ^= 1  # one bit of the target
    assert IPV6.neighbour(bytes(frame)) is None
    routed = frames.build_nd(frames.Nd(*[*vars(good).values()][:4], 64, *[*vars(good).values()][5:]))
    assert IPV6.neighbour(routed) is None  # RFC 4861: hop limit 255 or it came through a router


def test_the_health_probe_tcp_segment_over_ipv6_has_a_valid_checksum():
    segment = frames.Tcp(
        "02:00:00:00:0f:ff", "02:00:00:00:00:0b", "fe80::ff:fe00:fff", "2001:db8::11", 40000, 80, 7, 0, 2, b""
    )
    frame = frames.build_tcp6(segment)
    parsed = packet.Packet(frame)
    ip = parsed.get_protocol(ipv6.ipv6)
    assert (ip.src, ip.dst, ip.nxt) == ("fe80::ff:fe00:fff", "2001:db8::11", 6)
    body = frame[54 : 54 + ip.payload_length]
    pseudo = ipaddress.IPv6Address(ip.src).packed + ipaddress.IPv6Address(ip.dst).packed
    pseudo += len(body).to_bytes(4, "big") + bytes(3) + b"\x06"
    assert frames._checksum(pseudo + body) == 0
    assert frames.parse_tcp6(frame) == segment


# -- Neighbor Discovery in the switch --


def test_the_switch_answers_a_solicitation_for_the_vip_itself(rig):
    switch = rig.connect()
    web6(rig)
    out = switch.send(solicitation(CLIENT_MAC, CLIENT6, VIP6), in_port=1)
    assert len(out) == 1 and out[0].port == 1
    na = out[0].packet
    vip_mac = rig.core.config.vips["web6"].mac
    assert (na["eth_src"], na["eth_dst"]) == (vip_mac, CLIENT_MAC)
    assert (na["ipv6_src"], na["ipv6_dst"]) == (VIP6, CLIENT6)
    assert (na["icmpv6_type"], na["icmpv6_code"], na["ipv6_nd_target"]) == (136, 0, VIP6)
    assert na["nd_reserved"] == frames.NA_SOLICITED | frames.NA_OVERRIDE  # solicited, override; not a router
    assert (na["nd_options_type"], na["ipv6_nd_tll"]) == (2, vip_mac)


def test_a_host_testing_the_vip_address_for_itself_is_told_it_is_taken(rig, caplog):
    switch = rig.connect()
    web6(rig)
    before = len(switch.packet_outs)
    out = switch.send(solicitation(None, "::", VIP6), in_port=5)  # duplicate address detection
    assert [emitted.port for emitted in out] == ["controller"]
    dad = frames.build_nd(
        frames.Nd("02:00:00:00:0d:ad", "33:33:ff:00:01:00", "::", "ff02::1:ff00:100", 255, 135, 0, VIP6, None, True)
    )
    rig.balancer.packet_in(1, 5, dad)
    reply = frames.parse_nd(switch.packet_outs[-1].data)
    assert len(switch.packet_outs) > before
    assert (reply.type, reply.target, reply.link_layer) == (136, VIP6, rig.core.config.vips["web6"].mac)
    assert reply.dst == "ff02::1" and not reply.flags & frames.NA_SOLICITED  # to all nodes: the address is taken
    assert reply.checksum_ok
    assert "tested VIP address 2001:db8::100 for itself" in caplog.text


def test_advertisements_for_the_vip_and_solicitations_from_it_reach_no_host(rig):
    switch = rig.connect()
    web6(rig)
    forged = advertisement("02:00:00:00:0e:ee", VIP6)
    assert [e.port for e in switch.send(forged, in_port=5)] == ["controller"]
    from_vip = solicitation("02:00:00:00:0e:ee", VIP6, "2001:db8::1")
    assert [e.port for e in switch.send(from_vip, in_port=5)] == ["controller"]


def test_a_forged_advertisement_for_a_found_backend_does_not_move_it(rig):
    rig.connect()
    web6(rig)
    mac, port = BACKENDS6["2001:db8::12"]
    rig.balancer.packet_in(
        1,
        5,
        frames.build_nd(
            frames.Nd(
                "02:00:00:00:0e:ee",
                "33:33:00:00:00:01",
                "2001:db8::12",
                "ff02::1",
                255,
                136,
                frames.NA_OVERRIDE,
                "2001:db8::12",
                "02:00:00:00:0e:ee",
                True,
            )
        ),
    )
    found = rig.core.backends.locator.found["2001:db8::12"]
    assert (found.mac, found.port) == (mac, port)


# -- backends found and checked by solicitation --


def test_ipv6_backends_are_found_by_solicitation_from_the_probe_link_local(rig):
    switch = rig.connect()
    rig.service.create_pool({"name": "web", "backends": [{"ip": ip} for ip in BACKENDS6]})
    asked = [frames.parse_nd(out.data) for out in switch.packet_outs if frames.parse_nd(out.data)]
    assert {nd.target for nd in asked} == set(BACKENDS6)
    probe = rig.balancer.settings.probe_mac
    for nd in asked:
        assert nd.src == frames.link_local(probe) and nd.link_layer == probe and nd.checksum_ok
        assert nd.dst == frames.solicited_node(nd.target) and nd.eth_dst == frames.multicast_mac(nd.dst)
    for ip, (mac, port) in BACKENDS6.items():
        answer_solicitation(rig, ip, mac, port)
    assert {ip: f.mac for ip, f in rig.core.backends.locator.found.items()} == {
        ip: mac for ip, (mac, _port) in BACKENDS6.items()
    }


def test_the_switch_answers_for_the_probe_link_local_address(rig):
    """A backend answering a TCP check from the probe's link-local address
    must find its MAC: the switch answers that solicitation too."""
    switch = rig.connect()
    probe = rig.balancer.settings.probe_mac
    out = switch.send(solicitation("02:00:00:00:00:0b", "2001:db8::11", frames.link_local(probe)), in_port=2)
    assert [(e.port, e.packet["ipv6_nd_tll"]) for e in out] == [(2, probe)]


def test_tcp_checks_of_ipv6_backends_need_no_probe_ip(rig):
    switch = rig.connect()
    rig.service.create_pool(
        {
            "name": "web",
            "backends": [{"ip": ip} for ip in BACKENDS6],
            "health_check": {"kind": "tcp", "port": 80, "interval": 1.0},
        }
    )
    for ip, (mac, port) in BACKENDS6.items():
        answer_solicitation(rig, ip, mac, port)
    rig.clock.now += 2
    rig.balancer.tick()
    syns = [frames.parse_tcp6(out.data) for out in switch.packet_outs if frames.parse_tcp6(out.data)]
    assert {s.dst for s in syns} == set(BACKENDS6)
    assert all(s.src == frames.link_local(rig.balancer.settings.probe_mac) and s.flags == 2 for s in syns)
    with pytest.raises(InvalidInput, match="IPv4 addresses need the dsr.probe_ip"):
        rig.service.create_pool(
            {"name": "web4", "backends": [{"ip": "10.0.0.11"}], "health_check": {"kind": "tcp", "port": 80}}
        )


# -- the data plane --


def test_ipv6_vip_traffic_is_spread_and_only_its_destination_mac_rewritten(rig):
    switch = rig.connect()
    web6(rig)
    vip_mac = rig.core.config.vips["web6"].mac
    seen = {}
    for n in range(300):
        client = f"2001:db8::1:{n:x}"
        out = switch.send(tcp6(client, VIP6, 40000 + n, 80, CLIENT_MAC, vip_mac), in_port=1)
        assert len(out) == 1
        p = out[0].packet
        assert (p["ipv6_src"], p["ipv6_dst"], p["tcp_dst"], p["eth_src"]) == (client, VIP6, 80, CLIENT_MAC)
        seen[p["eth_dst"]] = out[0].port
    assert seen == {mac: port for mac, port in BACKENDS6.values()}


def test_source_address_affinity_holds_for_ipv6_clients(rig):
    switch = rig.connect()
    web6(rig, hash_fields="source_ip")
    vip_mac = rig.core.config.vips["web6"].mac
    for n in range(20):
        client = f"2001:db8::2:{n:x}"
        backends = {
            switch.send(tcp6(client, VIP6, sport, 80, CLIENT_MAC, vip_mac), 1)[0].packet["eth_dst"]
            for sport in range(41000, 41010)
        }
        assert len(backends) == 1


def test_a_dual_stack_service_reaches_the_same_backends_from_both_families(rig):
    switch = rig.connect()
    rig.setup_web()
    rig.resolve_all()
    rig.service.create_vip({"name": "web6", "ip": VIP6, "protocol": "tcp", "port": 80, "pool": "web"})
    v4, v6 = rig.core.config.vips["web"].mac, rig.core.config.vips["web6"].mac
    four, six = set(), set()
    for n in range(200):
        four.add(
            switch.send(syn(f"10.1.{n // 250}.{n % 250}", "10.0.0.100", 40000 + n, 80, CLIENT_MAC, v4), 1)[0].packet[
                "eth_dst"
            ]
        )
        six.add(
            switch.send(
                as_ipv6(syn("0.0.0.0", "0.0.0.0", 40000 + n, 80, CLIENT_MAC, v6), f"2001:db8::3:{n:x}", VIP6), 1
            )[0].packet["eth_dst"]
        )
    assert four == six == {mac for mac, _port in BACKENDS.values()}


def test_connections_of_both_families_are_kept_across_a_pool_change(rig):
    switch = rig.connect()
    rig.setup_web()
    rig.resolve_all()
    rig.service.create_vip({"name": "web6", "ip": VIP6, "protocol": "tcp", "port": 80, "pool": "web"})
    v6 = rig.core.config.vips["web6"].mac
    connections = {}
    for n in range(200):
        first = as_ipv6(syn("0.0.0.0", "0.0.0.0", 30000 + n, 80, CLIENT_MAC, v6), f"2001:db8::4:{n:x}", VIP6)
        connections[n] = (first, switch.send(first, 1)[0].packet["eth_dst"])
    rig.in_use()
    rig.service.add_backend("web", {"ip": "10.0.0.14"})
    rig.answer_arp("10.0.0.14", "02:00:00:00:00:0e", 5)
    rig.pass_hold()
    assert switch.handover_rules()  # slots moved; their IPv6 packets go by the pool's rules of table MOVED:
    assert any(dict(r.match).get("eth_type") == 0x86DD for r in switch.rules(Table.MOVED))
    for first, backend in connections.values():
        later = {k: v for k, v in first.items() if k != "tcp_flags"}
        assert switch.send(later, 1)[0].packet["eth_dst"] == backend  # established: kept where it was


def test_every_ipv6_rule_keeps_the_pipeline_contract(rig):
    """Rules are checked as they are computed; a dual-stack pool in each
    mode computes them all."""
    for mode, dpid in (("ovs", 1), ("plain", 2)):
        rig.connect(dpid, mode=mode)
    rig.setup_web()
    rig.resolve_all()
    rig.service.create_vip({"name": "web6", "ip": VIP6, "protocol": "udp", "port": 53, "pool": "web"})
    plain = rig.switches[2]
    sources = {dict(r.match).get("ipv6_src") for r in plain.rules(Table.SLOTS)} - {None}
    assert len(sources) == rig.core.desired.slot_size("web", "plain")  # a slot rule per slot, for IPv6 too
    assert family_of(VIP6) is IPV6


def router_advertisement(mac: str) -> dict:
    return {
        "eth_src": mac,
        "eth_dst": "33:33:00:00:00:01",
        "eth_type": 0x86DD,
        "ipv6_src": "fe80::1",
        "ipv6_dst": "ff02::1",
        "ip_proto": 58,
        "icmpv6_type": 134,
        "icmpv6_code": 0,
    }


def test_router_advertisements_pass_only_from_a_declared_routers_port(tmp_path):
    rig = make_rig(tmp_path, router_ports="0000000000000001:5")
    switch = rig.connect()
    rig.learn("02:00:00:00:00:99", 5)
    rig.learn(CLIENT_MAC, 1)
    assert switch.send(router_advertisement(CLIENT_MAC), in_port=1) == []  # a host making itself the router
    heard = {e.port for e in switch.send(router_advertisement("02:00:00:00:00:99"), in_port=5)}
    assert heard >= {1, 2, 3, 4}


def test_router_ports_are_checked_naming_the_setting(tmp_path):
    with pytest.raises(InvalidInput, match="dsr.router_ports") as refused:
        make_rig(tmp_path, router_ports="1:5,one:2")
    assert "'one:2' is not DPID:PORT" in str(refused.value)


def test_the_fragments_of_an_ipv6_udp_datagram_reach_one_backend(rig):
    from tests.simulator import fragment, udp

    switch = rig.connect()
    web6(rig, protocol="udp")
    vip_mac = rig.core.config.vips["web6"].mac
    for n in range(40):
        datagram = as_ipv6(udp("0.0.0.0", "0.0.0.0", 5000 + n, 80, CLIENT_MAC, vip_mac), f"2001:db8::5:{n:x}", VIP6)
        first = switch.send(fragment(datagram, later=False), 1)
        later = switch.send(fragment(datagram, later=True), 1)
        assert len(first) == len(later) == 1 and first[0].packet["eth_dst"] == later[0].packet["eth_dst"]


def test_a_check_addressed_to_an_ipv6_vip_goes_to_each_backend_s_mac(rig):
    """The VIP-addressed check: a SYN to the VIP with the backend's MAC,
    which fails a backend that lost the VIP from lo."""
    switch = rig.connect()
    rig.service.create_pool(
        {
            "name": "web",
            "backends": [{"ip": ip} for ip in BACKENDS6],
            "health_check": {"kind": "tcp", "port": 80, "target": "vip", "interval": 1.0},
        }
    )
    rig.service.create_vip({"name": "web6", "ip": VIP6, "protocol": "tcp", "port": 80, "pool": "web"})
    for ip, (mac, port) in BACKENDS6.items():
        answer_solicitation(rig, ip, mac, port)
    rig.clock.now += 2
    rig.balancer.tick()
    syns = [frames.parse_tcp6(out.data) for out in switch.packet_outs if frames.parse_tcp6(out.data)]
    assert {(s.dst, s.eth_dst) for s in syns} == {(VIP6, mac) for mac, _port in BACKENDS6.values()}


def test_an_ipv4_vip_for_a_pool_that_checks_its_vips_needs_probe_ip(rig):
    rig.service.create_pool(
        {
            "name": "web",
            "backends": [{"ip": "2001:db8::11"}],
            "health_check": {"kind": "tcp", "port": 80, "target": "vip"},
        }
    )
    rig.service.create_vip({"name": "web6", "ip": VIP6, "protocol": "tcp", "port": 80, "pool": "web"})
    with pytest.raises(InvalidInput, match="IPv4 addresses need the dsr.probe_ip"):
        rig.service.create_vip({"name": "web4", "ip": "10.0.0.100", "protocol": "tcp", "port": 80, "pool": "web"})
    assert "web4" not in rig.core.config.vips


def test_a_switch_that_cannot_make_advertisements_has_its_solicitations_answered_by_the_controller(rig, caplog):
    """A kernel datapath refuses to set nd_reserved: the switch's
    solicitations for VIPs then come to the controller, which answers them,
    and nothing is left refused."""
    switch = rig.connect()
    web6(rig)
    rig.balancer.neighbour_answers_refused(1, "flow add table 0 priority 300: error type 2 code 14")
    assert rig.reads == [1] and "cannot answer IPv6 Neighbor Solicitations itself" in caplog.text
    rig.balancer.flows_read(1, switch.installed())
    assert not any(a.field == "nd_reserved" for r in switch.rules() for a in r.actions if hasattr(a, "field"))
    out = switch.send(solicitation(CLIENT_MAC, CLIENT6, VIP6), in_port=1)
    assert [e.port for e in out] == ["controller"]
    ns = frames.build_nd(
        frames.Nd(CLIENT_MAC, "33:33:ff:00:01:00", CLIENT6, "ff02::1:ff00:100", 255, 135, 0, VIP6, CLIENT_MAC, True)
    )
    rig.balancer.packet_in(1, 1, ns)
    na = frames.parse_nd(switch.packet_outs[-1].data)
    vip_mac = rig.core.config.vips["web6"].mac
    assert (na.type, na.src, na.dst, na.eth_dst, na.target, na.link_layer) == (
        136,
        VIP6,
        CLIENT6,
        CLIENT_MAC,
        VIP6,
        vip_mac,
    )
    assert na.flags == frames.NA_SOLICITED | frames.NA_OVERRIDE and na.checksum_ok and na.hop_limit == 255
    assert switch.packet_outs[-1].port == 1
