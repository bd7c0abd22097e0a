"""Port translation: a VIP's port need not be the port its backends listen
on. The switch rewrites a request's destination port on its way to the
backend and the reply's source port on its way back (the replies cross a
switch of the fabric at the backend's edge), so the client sees the VIP's
port both ways. Walked through the simulator, in both modes."""

from __future__ import annotations

import pytest
from ryu_dsr.rest import views

from ryu_dsr.model import Conflict, InvalidInput
from tests.conftest import BACKENDS, CLIENT_MAC, make_rig
from tests.simulator import fragment, syn, tcp, udp

VIP = "10.0.0.100"
VIP_MAC = "02:d5:0a:00:00:64"
BY_MAC = {mac: (ip, port) for ip, (mac, port) in BACKENDS.items()}


def translated(tmp_path, mode="ovs", protocol="tcp", port=80, backend_port=8080):
    rig = make_rig(tmp_path)
    switch = rig.connect(mode=mode)
    rig.service.create_pool({"name": "web", "backends": [{"ip": ip} for ip in BACKENDS]})
    vip = {"name": "www", "ip": VIP, "protocol": protocol, "port": port, "pool": "web", "hash": "5tuple"}
    rig.service.create_vip(vip | {"backend_port": backend_port})
    rig.resolve_all()
    rig.learn(CLIENT_MAC, 1)
    rig.settle()
    return rig, switch


def one_backend(outputs) -> tuple[str, dict]:
    assert len(outputs) == 1, outputs
    ip, port = BY_MAC[outputs[0].packet["eth_dst"]]
    assert outputs[0].port == port
    return ip, outputs[0].packet


@pytest.mark.parametrize("mode", ["ovs", "plain"])
def test_a_request_reaches_the_backends_port_and_the_reply_leaves_from_the_vips(tmp_path, mode):
    rig, switch = translated(tmp_path, mode)
    seen = set()
    for n, sport in enumerate(range(30000, 30060)):
        client = f"10.0.1.{n}"  # plain mode hashes client addresses
        ip, request = one_backend(switch.send(syn(client, VIP, sport, 80, CLIENT_MAC, VIP_MAC), 1))
        assert (request["ipv4_dst"], request["tcp_dst"], request["tcp_src"]) == (VIP, 8080, sport)
        seen.add(ip)
        mac, port = BACKENDS[ip]
        outputs = switch.send(tcp(VIP, client, 8080, sport, mac, CLIENT_MAC), port)
        assert [(o.port, o.packet["tcp_src"], o.packet["tcp_dst"]) for o in outputs] == [(1, 80, sport)]
    assert seen == set(BACKENDS)  # hashed over the pool as any VIP
    # A connection's packets after the first go to the same backend, translated too.
    first, _ = one_backend(switch.send(syn("10.0.0.1", VIP, 31000, 80, CLIENT_MAC, VIP_MAC), 1))
    again, packet = one_backend(switch.send(tcp("10.0.0.1", VIP, 31000, 80, CLIENT_MAC, VIP_MAC), 1))
    assert again == first and packet["tcp_dst"] == 8080


def test_udp_is_translated_both_ways_and_its_fragments_are_dropped(tmp_path):
    """A fragment shows no port to the switch, so it cannot be translated:
    a translated UDP VIP's fragments are dropped, not delivered to a port
    nobody listens on."""
    rig, switch = translated(tmp_path, protocol="udp", port=53, backend_port=5353)
    ip, request = one_backend(switch.send(udp("10.0.0.1", VIP, 40000, 53, CLIENT_MAC, VIP_MAC), 1))
    assert request["udp_dst"] == 5353
    mac, port = BACKENDS[ip]
    outputs = switch.send(udp(VIP, "10.0.0.1", 5353, 40000, mac, CLIENT_MAC), port)
    assert [(o.port, o.packet["udp_src"]) for o in outputs] == [(1, 53)]
    first = fragment(udp("10.0.0.1", VIP, 40001, 53, CLIENT_MAC, VIP_MAC), later=False)
    assert switch.send(first, 1) == []


def test_a_reply_from_another_port_of_the_vip_address_is_not_rewritten(tmp_path):
    rig, switch = translated(tmp_path)
    mac, port = BACKENDS["10.0.0.11"]
    outputs = switch.send(tcp(VIP, "10.0.0.1", 9000, 4000, mac, CLIENT_MAC), port)
    assert [(o.port, o.packet["tcp_src"]) for o in outputs] == [(1, 9000)]


def test_the_source_guard_still_holds_for_translated_replies(tmp_path):
    """Only the VIP's backends may send from its address: a host elsewhere
    sending from the VIP's backend port is dropped, translated or not."""
    rig, switch = translated(tmp_path)
    mac, _port = BACKENDS["10.0.0.12"]
    assert switch.send(tcp(VIP, "10.0.0.1", 8080, 4000, mac, CLIENT_MAC), 5) == []


def test_turning_translation_off_and_on_changes_only_the_vips_rules(tmp_path):
    rig, switch = translated(tmp_path)
    rig.service.patch_vip("www", {"backend_port": None})
    _ip, request = one_backend(switch.send(syn("10.0.0.1", VIP, 30000, 80, CLIENT_MAC, VIP_MAC), 1))
    assert request["tcp_dst"] == 80
    assert views.vip_json(rig.status, "www")["backend_port"] is None
    rig.service.patch_vip("www", {"backend_port": 8443})
    _ip, request = one_backend(switch.send(syn("10.0.0.1", VIP, 30000, 80, CLIENT_MAC, VIP_MAC), 1))
    assert request["tcp_dst"] == 8443


def test_translations_that_would_mix_up_replies_are_refused(tmp_path):
    rig, _switch = translated(tmp_path)
    base = {"ip": VIP, "protocol": "tcp", "pool": "web"}
    before = views.vip_json(rig.status, "www")
    for body in (
        base | {"name": "alt", "port": 8080},  # its replies would come from 8080 too
        base | {"name": "alt", "port": 81, "backend_port": 8080},  # two VIPs, one backend port
        base | {"name": "alt", "port": 81, "backend_port": 80},  # a backend port that is another VIP's port
    ):
        with pytest.raises(Conflict, match="could not be told apart"):
            rig.service.create_vip(body)
    rig.service.create_vip(base | {"name": "alt", "port": 81, "backend_port": 8081})
    rig.service.create_vip(base | {"name": "dns", "protocol": "udp", "port": 80, "backend_port": 8080})
    with pytest.raises(InvalidInput) as error:
        rig.service.create_vip(base | {"name": "all", "port": None, "backend_port": 8080, "ip": "10.0.0.101"})
    assert error.value.field == "backend_port" and "needs the VIP's port" in error.value.rule
    with pytest.raises(InvalidInput) as error:
        rig.service.patch_vip("www", {"backend_port": 70000})
    assert error.value.field == "backend_port"
    assert views.vip_json(rig.status, "www") == before
