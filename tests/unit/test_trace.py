"""The trace: where a client's packet to a VIP goes and why, walked through
the controller's own rules and checked against the simulator's switch,
which runs the rules the controller wrote (given the same hash)."""

from __future__ import annotations

import pytest
from ryu_dsr.flows.ovs_hash import source_hash, symmetric_l4

from ryu_dsr.model import InvalidInput
from tests.conftest import BACKENDS, CLIENT_MAC, make_rig
from tests.simulator import syn, tcp
from tests.unit.test_fabric import CLIENT, FABRIC_BACKENDS, VIP_MAC, fabric_rig, walk

VIP, VIP_MAC_WEB = "10.0.0.100", "02:d5:0a:00:00:64"
CLIENT_IP = "10.0.0.2"


def web(tmp_path):
    rig = make_rig(tmp_path)
    rig.connect()
    rig.setup_web()
    rig.resolve_all()
    rig.learn(CLIENT_MAC, 1)
    rig.settle()
    return rig


def ask(rig, client_port: int, **extra) -> dict:
    query = {"vip": "web", "client": CLIENT_IP, "client_port": str(client_port), "client_mac": CLIENT_MAC}
    return rig.status.trace({**query, **{k: str(v) for k, v in extra.items()}})


def on_switch(rig, packet: dict, dpid: int = 1, in_port: int = 1) -> list:
    """What the simulator's switch does with the packet, given the hash
    Open vSwitch would give it."""
    return rig.switches[dpid].send(dict(packet, dp_hash=symmetric_l4(packet)), in_port)


def backend_of(mac: str) -> str:
    return next(ip for ip, (bmac, _port) in BACKENDS.items() if bmac == mac)


def test_ovs_hashes_are_the_ones_open_vswitch_computed():
    """Values read from Open vSwitch 3.1 (userspace datapath): packets sent
    through a select group and multipath(nw_src, 0, modulo_n, 4096), the
    low 12 bits of dp_hash and the link counted by rules of a real bridge."""
    cases = [
        ("10.0.0.1", "10.0.0.100", 1234, 80, 3724, 1921),
        ("10.0.0.7", "10.0.0.100", 40000, 80, 3002, 3583),
        ("192.168.3.4", "10.1.2.3", 5555, 443, 3504, 102),
        ("2001:db8::1", "2001:db8::100", 1234, 80, 3092, 2779),
        ("2001:db8::a:7", "2001:db8::100", 50000, 80, 1065, 490),
    ]
    for src, dst, sport, dport, low_bits, link in cases:
        family = ("ipv6_src", "ipv6_dst") if ":" in src else ("ipv4_src", "ipv4_dst")
        packet = {family[0]: src, family[1]: dst, "ip_proto": 6, "tcp_src": sport, "tcp_dst": dport}
        assert symmetric_l4(packet) & 0xFFF == low_bits
        assert source_hash(packet, 0, 4096) == link
        # symmetric: the reply hashes the same
        back = {family[0]: dst, family[1]: src, "ip_proto": 6, "tcp_src": dport, "tcp_dst": sport}
        assert symmetric_l4(back) == symmetric_l4(packet)


def test_a_connection_is_traced_to_the_backend_the_switch_sends_it_to(tmp_path):
    rig = web(tmp_path)
    seen = set()
    for port in range(40000, 40040):
        answer = ask(rig, port)
        [out] = on_switch(rig, syn(CLIENT_IP, VIP, port, 80, CLIENT_MAC, VIP_MAC_WEB))
        assert answer["backend"] == backend_of(out.packet["eth_dst"])
        assert answer["delivered"] == [
            {
                "switch": 1,
                "port": out.port,
                "eth_dst": out.packet["eth_dst"],
                "ip_dst": VIP,
                "dscp": None,
                "tunnel": None,
            }
        ]
        assert answer["slot"]["backend"] == answer["backend"]
        assert answer["verdict"].startswith(f"to backend {answer['backend']} at switch 0x1 port {out.port}")
        seen.add(answer["backend"])
    assert seen == set(BACKENDS)
    said = [step["says"] for step in answer["steps"]]
    assert "VIP web matched (address, protocol and port)" in said
    assert any(words.startswith("a new connection of VIP web (counted)") for words in said)
    assert answer["why"][0].startswith(f"slot {answer['slot']['slot']} of {answer['slot']['of']} belongs to")
    assert "state up" in answer["why"][0]
    assert answer["hash"]["by"] == "the 5-tuple (the datapath hash, symmetric)"
    flow = answer["ofproto_trace"][0]["flow"]
    assert flow.startswith("in_port=1,tcp,dl_src=02:00:00:00:00:01,") and f"dp_hash={answer['hash']['value']}" in flow


def test_a_moved_slot_in_a_handover_is_explained_for_old_and_new_connections(tmp_path):
    rig = web(tmp_path)
    rig.in_use()
    rig.service.patch_backend("web", "10.0.0.11", {"weight": 300})
    held = [ask(rig, port) for port in range(40000, 40200)]
    held = next(answer for answer in held if answer["handover"] and answer["handover"]["holding"])
    assert held["backend"] == held["handover"]["from"]  # in the hold new connections stay where they went
    assert any(words.startswith("the move is new (checked or in its hold)") for words in held["why"])
    rig.pass_hold()
    moved = []
    for port in range(40000, 42000):
        answer = ask(rig, port, packet="later")
        if answer["handover"] is not None:
            moved.append((port, answer))
        if len(moved) == 2:
            break
    (port, later), (other, _answer) = moved
    first = ask(rig, other)
    old, new = later["handover"]["from"], later["handover"]["to"]
    assert old != new and new == "10.0.0.11"
    assert later["backend"] == old and first["backend"] == new
    # on the switch: a new connection goes to the new backend, an older one's packet to the old
    [out] = on_switch(rig, syn(CLIENT_IP, VIP, other, 80, CLIENT_MAC, VIP_MAC_WEB))
    assert backend_of(out.packet["eth_dst"]) == first["backend"]
    [out] = on_switch(rig, tcp(CLIENT_IP, VIP, port, 80, CLIENT_MAC, VIP_MAC_WEB))
    assert backend_of(out.packet["eth_dst"]) == later["backend"]
    # the new connection was pinned: its later packets stay with it, which the trace says it cannot see
    [out] = on_switch(rig, tcp(CLIENT_IP, VIP, other, 80, CLIENT_MAC, VIP_MAC_WEB))
    assert backend_of(out.packet["eth_dst"]) == new
    assert any("pinned" in note for note in ask(rig, other, packet="later")["notes"])
    said = [step["says"] for step in later["steps"]]
    assert any("a packet of an older connection goes to the old backend" in words for words in said)
    assert f"new connections go to {new}" in later["why"]
    assert any(words.startswith(f"slot {later['slot']['slot']} moved from {old} to {new}") for words in later["why"])
    assert any("pins this connection" in note for note in first["notes"])


def test_a_drained_backend_is_named_and_takes_no_new_connection(tmp_path):
    rig = web(tmp_path)
    rig.service.patch_backend("web", "10.0.0.12", {"weight": 0})
    rig.settle()
    answers = [ask(rig, port) for port in range(40000, 40030)]
    assert {answer["backend"] for answer in answers} == {"10.0.0.11", "10.0.0.13"}
    assert any(words.startswith("10.0.0.12 is draining") for words in answers[0]["why"]), answers[0]["why"]


def test_traffic_no_vip_serves_and_a_pool_with_no_backend_are_dropped_with_the_reason(tmp_path):
    rig = web(tmp_path)
    other = ask(rig, 40000, port=81)
    assert other["backend"] is None and other["verdict"] == (
        "dropped: traffic for VIP address 10.0.0.100 that no VIP serves (protocol or port): dropped"
    )
    assert not on_switch(rig, syn(CLIENT_IP, VIP, 40000, 81, CLIENT_MAC, VIP_MAC_WEB))
    for ip in BACKENDS:
        rig.service.patch_backend("web", ip, {"weight": 0})
    rig.settle()
    nothing = ask(rig, 40000)
    assert nothing["verdict"].startswith("dropped: no backend chosen"), nothing["verdict"]
    assert nothing["why"][0].endswith("has none that takes new connections")


def test_a_path_across_the_fabric_is_followed_to_the_backends_leaf(tmp_path):
    rig, links = fabric_rig(tmp_path)
    mac, ip, leaf, port = CLIENT
    crossed = 0
    for sport in range(4000, 4016):
        answer = rig.status.trace(
            {"vip": "www", "client": ip, "client_port": str(sport), "switch": str(leaf), "in_port": str(port)}
        )
        packet = syn(ip, VIP, sport, 80, mac, VIP_MAC)
        [(dpid, edge, out)] = walk(rig, links, leaf, port, dict(packet, dp_hash=symmetric_l4(packet)))
        assert answer["path"][-1]["switch"] == dpid and answer["delivered"][0]["port"] == edge
        backend = next(b for b, (bmac, bleaf, bport) in FABRIC_BACKENDS.items() if (bleaf, bport) == (dpid, edge))
        assert answer["backend"] == backend
        if len(answer["path"]) > 1:
            crossed += 1
            assert answer["path"][1]["switch"] in (101, 102)  # a spine carries it
            assert any(step["says"].startswith("came in from another switch") for step in answer["steps"])
    assert crossed


def test_a_trace_query_is_checked_naming_the_parameter(tmp_path):
    rig = web(tmp_path)
    base = {"vip": "web", "client": CLIENT_IP, "client_port": "40000", "client_mac": CLIENT_MAC}
    for change, field, rule in (
        ({"client": "2001:db8::1"}, "client", "of the VIP's address family"),
        ({"client_port": "0"}, "client_port", "from 1 to 65535"),
        ({"packet": "middle"}, "packet", "first"),
        ({"colour": "red"}, "colour", "unknown parameter"),
        ({"client_mac": "02:00:00:00:00:99"}, "client_mac", "was not learned"),
        ({"switch": "1"}, "in_port", "go together"),
    ):
        with pytest.raises(InvalidInput, match=rule) as refused:
            rig.status.trace({**base, **change})
        assert refused.value.field == field


def test_a_client_the_switch_has_not_learned_is_shown_to_the_controller_through_the_meter(tmp_path):
    rig = web(tmp_path)
    answer = rig.status.trace(
        {"vip": "web", "client": CLIENT_IP, "client_port": "40000", "switch": "1", "in_port": "4"}
    )  # the default source MAC, never seen on port 4
    assert answer["backend"] in BACKENDS  # the request still goes to its backend
    said = [step["says"] for step in answer["steps"]]
    assert "source MAC not known here: forwarded, and shown to the controller to learn" in said
    assert any(note.startswith("to the controller through meter 1: at most") for note in answer["notes"])


def test_an_ipv6_connection_is_traced_to_the_backend_the_switch_sends_it_to(rig):
    from tests.simulator import tcp6
    from tests.unit.test_ipv6 import BACKENDS6, CLIENT6, VIP6, web6

    rig.connect()
    web6(rig)
    rig.settle()
    vip_mac = rig.core.config.vips["web6"].mac
    seen = set()
    for port in range(40000, 40030):
        answer = rig.status.trace(
            {"vip": "web6", "client": CLIENT6, "client_port": str(port), "client_mac": CLIENT_MAC, "packet": "later"}
        )
        packet = tcp6(CLIENT6, VIP6, port, 80, CLIENT_MAC, vip_mac)
        [out] = rig.switches[1].send(dict(packet, dp_hash=symmetric_l4(packet)), 1)
        assert BACKENDS6[answer["backend"]][0] == out.packet["eth_dst"]
        seen.add(answer["backend"])
        assert answer["ofproto_trace"][0]["flow"].startswith("in_port=1,tcp6,")
    assert seen == set(BACKENDS6)
