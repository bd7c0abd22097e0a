"""Forwarding behaviour of the computed rules, walked through the simulator."""

from __future__ import annotations

from collections import Counter

import pytest
from ryu_dsr.flows.frames import build_arp
from ryu_dsr.flows.pipeline import REG_OLDER_TCP, REG_SLOT, REG_SYN_TO, Kind, Slots, Table, kind_of, pin_cookie
from ryu_dsr.flows.rules import FlowAdd, FlowDelete, FlowDeleteByCookie, PacketOut, Resubmit, SetField
from ryu_dsr.rest import views

from ryu_dsr.model import InvalidInput
from tests.conftest import BACKENDS, CLIENT_MAC, make_rig
from tests.simulator import arp_request, fragment, syn, tcp, udp

VIP = "10.0.0.100"
VIP_MAC = "02:d5:0a:00:00:64"
BACKEND_MACS = {mac: ip for ip, (mac, _port) in BACKENDS.items()}
BACKEND_PORTS = {mac: port for _ip, (mac, port) in BACKENDS.items()}


def ready(tmp_path, mode="ovs", settings=None, in_use=True, **kwargs):
    """A switch with the web VIP over three backends, in steady state, and
    (``in_use``) every slot having carried traffic: a slot that moves then
    hands its connections over."""
    rig = make_rig(tmp_path, **(settings or {}))
    switch = rig.connect(mode=mode)
    rig.setup_web(**kwargs)
    rig.resolve_all()
    rig.learn(CLIENT_MAC, 1)
    rig.settle()
    if in_use and mode == "ovs":
        rig.in_use()
    return rig, switch


def pins(switch, mac: str | None = None) -> list:
    """Learned pins (to ``mac``, if given)."""
    return [
        r
        for r in switch.rules(Table.SLOTS)
        if kind_of(r.cookie) == Kind.PIN and (mac is None or r.actions[0].value == mac)
    ]


def backend_of(outputs) -> str:
    """The backend a VIP packet was sent to: exactly one output, to the
    backend's port, addressed to the backend's MAC."""
    assert len(outputs) == 1, outputs
    mac = outputs[0].packet["eth_dst"]
    assert outputs[0].port == BACKEND_PORTS[mac]
    return BACKEND_MACS[mac]


def test_vip_traffic_reaches_every_backend_and_only_eth_dst_changes(tmp_path):
    rig, switch = ready(tmp_path)
    reached = Counter()
    for sport in range(1000, 1300):
        packet = tcp("10.0.0.1", VIP, sport, 80, CLIENT_MAC, VIP_MAC)
        outputs = switch.send(packet, in_port=1)
        reached[backend_of(outputs)] += 1
        changed = {k for k in packet if outputs[0].packet[k] != packet[k]}
        assert changed == {"eth_dst"}
    assert set(reached) == set(BACKENDS)
    assert min(reached.values()) > 60  # 300 connections over 3 equal backends


def test_source_ip_hash_keeps_a_client_on_one_backend(tmp_path):
    rig, switch = ready(tmp_path, hash_fields="source_ip")
    per_client = {}
    for client in range(1, 60):
        ip = f"10.0.1.{client}"
        backends = {
            backend_of(switch.send(tcp(ip, VIP, sport, 80, CLIENT_MAC, VIP_MAC), 1)) for sport in range(5000, 5010)
        }
        assert len(backends) == 1
        per_client[ip] = backends.pop()
    assert len(set(per_client.values())) == 3


def test_arp_for_the_vip_is_answered_by_the_switch(tmp_path):
    rig, switch = ready(tmp_path)
    outputs = switch.send(arp_request(CLIENT_MAC, "10.0.0.1", VIP), in_port=1)
    assert len(outputs) == 1
    reply = outputs[0]
    assert reply.port == 1
    assert reply.packet["arp_op"] == 2
    assert (reply.packet["arp_sha"], reply.packet["arp_spa"]) == (VIP_MAC, VIP)
    assert (reply.packet["arp_tha"], reply.packet["arp_tpa"]) == (CLIENT_MAC, "10.0.0.1")
    assert (reply.packet["eth_src"], reply.packet["eth_dst"]) == (VIP_MAC, CLIENT_MAC)


def test_a_backend_claiming_the_vip_by_arp_is_not_heard_and_shows_it(tmp_path):
    """Only the controller sees it (through the learning meter), and the
    backend's status says so."""
    rig, switch = ready(tmp_path)
    gratuitous = arp_request("02:00:00:00:00:0b", VIP, VIP)
    claim = dict(arp_request("02:00:00:00:00:0b", VIP, "10.0.0.1"), arp_op=2)
    for frame in (gratuitous, claim):
        outputs = switch.send(frame, in_port=2)
        assert [out.port for out in outputs] == ["controller"]
        rule = switch.lookup(Table.INGRESS, dict(frame, in_port=2))
        assert rule.meter is not None
    assert views.backend_json(rig.status, "web", "10.0.0.12")["status"]["arp_for_vip"] is None
    rig.balancer.packet_in(
        1,
        2,
        build_arp(
            2, "02:00:00:00:00:0b", "02:00:00:00:00:01", "02:00:00:00:00:0b", VIP, "02:00:00:00:00:01", "10.0.0.1"
        ),
    )
    seen = views.backend_json(rig.status, "web", "10.0.0.11")["status"]["arp_for_vip"]
    assert seen["address"] == VIP and seen["last_seen"].endswith("Z")


def test_only_the_vips_backends_may_send_from_its_address(tmp_path):
    """A host that is not a backend cannot answer clients in the VIP's name."""
    rig, switch = ready(tmp_path)
    reply = tcp(VIP, "10.0.0.1", 80, 4000, "02:00:00:00:00:0c", CLIENT_MAC)
    assert [out.port for out in switch.send(reply, in_port=3)] == [1]  # from backend .12's port
    forged = tcp(VIP, "10.0.0.1", 80, 4000, "02:00:00:00:00:99", CLIENT_MAC)
    assert switch.send(forged, in_port=5) == []
    assert switch.send(tcp("10.0.0.5", "10.0.0.1", 80, 4000, "02:00:00:00:00:99", CLIENT_MAC), in_port=5)


def test_the_guard_follows_the_pool_its_ports_and_pools_sharing_an_address(tmp_path):
    """Two-step guard: the address names its pool, GUARD allows the pool's
    backends by MAC and port; a backend that leaves the pool may no longer
    send; an address shared by two pools allows the backends of both."""
    from ryu_dsr.flows.pipeline import Table

    rig, switch = ready(tmp_path)
    assert len(switch.rules(Table.GUARD)) == 3  # one per backend, not per address and backend
    reply = tcp(VIP, "10.0.0.1", 80, 4000, "02:00:00:00:00:0c", CLIENT_MAC)
    assert switch.send(reply, in_port=5) == []  # the right MAC from another port
    assert [o.port for o in switch.send(reply, in_port=3)] == [1]
    rig.service.delete_backend("web", "10.0.0.12")
    assert switch.send(reply, in_port=3) == []  # no longer a backend of the address's pool
    # a second pool on the same address: each pool's backends may send
    rig.service.create_pool(
        {
            "name": "api",
            "backends": [{"ip": "10.0.0.21", "mac": "02:00:00:00:00:15", "location": {"dpid": 1, "port": 5}}],
        }
    )
    rig.service.create_vip({"name": "api", "ip": VIP, "protocol": "tcp", "port": 8080, "pool": "api", "hash": "5tuple"})
    api_reply = tcp(VIP, "10.0.0.1", 8080, 4000, "02:00:00:00:00:15", CLIENT_MAC)
    assert [o.port for o in switch.send(api_reply, in_port=5)] == [1]
    web_reply = tcp(VIP, "10.0.0.1", 80, 4000, "02:00:00:00:00:0b", CLIENT_MAC)
    assert [o.port for o in switch.send(web_reply, in_port=2)] == [1]
    assert switch.send(tcp(VIP, "10.0.0.1", 80, 4000, "02:00:00:00:00:99", CLIENT_MAC), in_port=4) == []


def test_other_traffic_is_forwarded_by_l2(tmp_path):
    rig = make_rig(tmp_path)
    switch = rig.connect()
    # an unknown source is shown to the controller; an unknown destination flooded
    first = switch.send(tcp("10.0.0.1", "10.0.0.11", 4000, 22, CLIENT_MAC, "02:00:00:00:00:0b"), in_port=1)
    assert [o.port for o in first] == [2, 3, 4, 5, "controller"]  # forwarded, then (metered) shown
    rig.learn(CLIENT_MAC, 1)
    rig.learn("02:00:00:00:00:0b", 2)
    again = switch.send(tcp("10.0.0.1", "10.0.0.11", 4000, 22, CLIENT_MAC, "02:00:00:00:00:0b"), in_port=1)
    assert [o.port for o in again] == [2]
    back = switch.send(tcp("10.0.0.11", "10.0.0.1", 22, 4000, "02:00:00:00:00:0b", CLIENT_MAC), in_port=2)
    assert [(o.port, o.packet["eth_dst"]) for o in back] == [(1, CLIENT_MAC)]
    # ARP between hosts is flooded
    flooded = switch.send(arp_request(CLIENT_MAC, "10.0.0.1", "10.0.0.11"), in_port=1)
    assert sorted(o.port for o in flooded) == [2, 3, 4, 5]


def test_other_ip_for_the_vip_is_dropped_and_udp_is_not_tcp(tmp_path):
    rig, switch = ready(tmp_path)
    assert switch.send(udp("10.0.0.1", VIP, 1000, 80, CLIENT_MAC, VIP_MAC), 1) == []
    assert switch.send(tcp("10.0.0.1", VIP, 1000, 443, CLIENT_MAC, VIP_MAC), 1) == []


def test_udp_vip_on_all_ports(tmp_path):
    rig, switch = ready(tmp_path, protocol="udp", port=None)
    reached = {
        backend_of(switch.send(udp("10.0.0.1", VIP, s, d, CLIENT_MAC, VIP_MAC), 1))
        for s in range(2000, 2030)
        for d in (53, 5000)
    }
    assert reached == set(BACKENDS)


def fragments_reach(switch, packet: dict) -> set[str]:
    """The backends the first and a later fragment of one datagram reach."""
    return {backend_of(switch.send(fragment(packet, later), 1)) for later in (False, True)}


def test_every_fragment_of_a_udp_datagram_reaches_one_backend_in_both_hash_modes(tmp_path):
    """Only the first fragment carries the ports, and Open vSwitch reads
    none: the fragments of a datagram must not be dropped for lack of the
    VIP's port, and must all reach the backend that reassembles them."""
    for hash_fields in ("5tuple", "source_ip"):
        rig, switch = ready(tmp_path / hash_fields, hash_fields=hash_fields, protocol="udp", port=53)
        assert switch.fragments == "normal"  # what the fragment rules count on: ports read as 0
        reached = Counter()
        for sport in range(3000, 3100):
            packet = udp(f"10.0.1.{sport % 50}", VIP, sport, 53, CLIENT_MAC, VIP_MAC)
            backends = fragments_reach(switch, packet)
            assert len(backends) == 1, (hash_fields, sport, backends)
            reached[backends.pop()] += 1
        assert set(reached) == set(BACKENDS), hash_fields  # fragmented datagrams are still spread


def test_fragments_to_an_address_whose_udp_vips_differ_reach_no_backend(tmp_path):
    """Two UDP VIPs on one address with different pools: a fragment cannot
    say which it belongs to; it is dropped, never sent to a backend of the
    wrong pool."""
    rig, switch = ready(tmp_path, protocol="udp", port=53)
    rig.service.create_pool({"name": "other", "backends": [{"ip": "10.0.0.11"}]})
    rig.service.create_vip({"name": "other", "ip": VIP, "protocol": "udp", "port": 54, "pool": "other"})
    rig.settle()
    packet = udp("10.0.0.1", VIP, 4000, 53, CLIENT_MAC, VIP_MAC)
    assert len(switch.send(packet, 1)) == 1  # whole datagrams have their port
    assert switch.send(fragment(packet, later=False), 1) == switch.send(fragment(packet, later=True), 1) == []
    rig.service.delete_vip("other")  # one pool again: fragments follow the port 53 VIP
    rig.settle()
    assert len(fragments_reach(switch, packet)) == 1


def test_new_connections_cost_the_switch_no_per_connection_work_in_steady_state(tmp_path):
    rig, switch = ready(tmp_path)
    for s in range(3000, 3400):
        backend_of(switch.send(syn("10.0.0.1", VIP, s, 80, CLIENT_MAC, VIP_MAC), 1))
        backend_of(switch.send(tcp("10.0.0.1", VIP, s, 80, CLIENT_MAC, VIP_MAC), 1))
    assert switch.learned == 0 and pins(switch) == []
    # one rule per slot, none of them learns; the VIP hashes in the datapath (group)
    slot_rules = [r for r in switch.rules(Table.SLOTS)]
    assert len(slot_rules) == len(rig.balancer.desired.planner.table("web")) == 256
    assert not [r for r in slot_rules if any(type(a).__name__ == "LearnPin" for a in r.actions)]
    assert [type(a).__name__ for a in switch.rules(Table.INGRESS) if a.priority == 200 for a in a.actions] == [
        "SetField",
        "Group",
    ]


def test_established_connections_stay_when_a_backend_is_added(tmp_path):
    rig, switch = ready(tmp_path)
    before = {
        s: backend_of(switch.send(syn("10.0.0.1", VIP, s, 80, CLIENT_MAC, VIP_MAC), 1)) for s in range(3000, 3400)
    }
    assert switch.learned == 0
    rig.service.add_backend("web", {"ip": "10.0.0.14", "mac": "02:00:00:00:00:0e", "location": {"dpid": 1, "port": 5}})
    rig.pass_hold()
    BACKEND_MACS["02:00:00:00:00:0e"], BACKEND_PORTS["02:00:00:00:00:0e"] = "10.0.0.14", 5
    try:
        after = {s: backend_of(switch.send(tcp("10.0.0.1", VIP, s, 80, CLIENT_MAC, VIP_MAC), 1)) for s in before}
        assert after == before
        new = Counter(backend_of(switch.send(syn("10.0.0.2", VIP, s, 80, CLIENT_MAC, VIP_MAC), 1)) for s in range(400))
        assert new["10.0.0.14"] > 60
        # only connections of the moved slots (a quarter) were pinned: old ones seen since, and new ones
        assert 0 < len(pins(switch)) < 400
    finally:
        del BACKEND_MACS["02:00:00:00:00:0e"], BACKEND_PORTS["02:00:00:00:00:0e"]


def test_removing_a_backend_deletes_its_pins_and_moves_its_connections(tmp_path):
    rig, switch = ready(tmp_path)
    before = {
        s: backend_of(switch.send(tcp("10.0.0.1", VIP, s, 80, CLIENT_MAC, VIP_MAC), 1)) for s in range(3000, 3300)
    }
    rig.sent.clear()
    rig.service.delete_backend("web", "10.0.0.12")
    deletes = [c for _, commands in rig.sent for c in commands if isinstance(c, FlowDeleteByCookie)]
    assert len(deletes) == 1 and kind_of(deletes[0].cookie) == Kind.PIN
    after = {s: backend_of(switch.send(tcp("10.0.0.1", VIP, s, 80, CLIENT_MAC, VIP_MAC), 1)) for s in before}
    assert "10.0.0.12" not in after.values()
    assert all(after[s] == b for s, b in before.items() if b != "10.0.0.12")


def test_draining_backend_keeps_its_connections_but_gets_no_new_ones(tmp_path):
    rig, switch = ready(tmp_path)
    before = {
        s: backend_of(switch.send(tcp("10.0.0.1", VIP, s, 80, CLIENT_MAC, VIP_MAC), 1)) for s in range(3000, 3300)
    }
    rig.sent.clear()
    rig.service.patch_backend("web", "10.0.0.12", {"weight": 0})
    rig.pass_hold()  # new connections stop going to it two seconds later
    assert not [c for _, cs in rig.sent for c in cs if isinstance(c, FlowDeleteByCookie)]
    assert {s: backend_of(switch.send(tcp("10.0.0.1", VIP, s, 80, CLIENT_MAC, VIP_MAC), 1)) for s in before} == before
    fresh = {backend_of(switch.send(syn("10.0.0.3", VIP, s, 80, CLIENT_MAC, VIP_MAC), 1)) for s in range(300)}
    assert fresh == {"10.0.0.11", "10.0.0.13"}
    assert views.backend_json(rig.status, "web", "10.0.0.12")["status"]["state"] == "draining"
    # its connections are pinned: a stats poll counts them (and only theirs) as its pinned connections
    uid = rig.balancer.config.backend("web", "10.0.0.12").uid
    holders = rig.balancer.pin_holders()
    assert uid in holders
    rig.balancer.traffic_read(1, [], {u: switch.flow_count(Table.SLOTS, pin_cookie(u)) for u in holders})
    status = views.backend_json(rig.status, "web", "10.0.0.12")["status"]
    assert status["pinned_connections"] == sum(1 for b in before.values() if b == "10.0.0.12") > 0
    assert views.pool_stats(rig.status, "web")["backends"]["10.0.0.12"]["pinned_connections"] > 0


def test_drain_timeout_ends_remaining_connections(tmp_path):
    rig, switch = ready(tmp_path, settings={"drain_timeout": 30})
    rig.service.patch_backend("web", "10.0.0.12", {"weight": 0})
    for s in range(3000, 3300):  # packets of open connections: those on 10.0.0.12 are pinned there
        switch.send(tcp("10.0.0.1", VIP, s, 80, CLIENT_MAC, VIP_MAC), 1)
    drained = len(pins(switch, "02:00:00:00:00:0c"))
    assert drained > 50
    rig.clock.now += 29
    rig.resolve_all()  # the backends answer their health checks
    rig.balancer.tick()
    assert len(pins(switch, "02:00:00:00:00:0c")) == drained
    rig.clock.now += 2
    rig.resolve_all()
    rig.balancer.tick()
    assert pins(switch, "02:00:00:00:00:0c") == []
    # its slots hand over no more: what is left of them goes to the others
    reached = {backend_of(switch.send(tcp("10.0.0.1", VIP, s, 80, CLIENT_MAC, VIP_MAC), 1)) for s in range(3000, 3300)}
    assert reached == {"10.0.0.11", "10.0.0.13"}


def test_port_down_takes_the_backend_out_of_the_hash(tmp_path):
    rig, switch = ready(tmp_path)
    rig.balancer.port_changed(1, 3, up=False)  # 10.0.0.12's port
    reached = {backend_of(switch.send(tcp("10.0.0.1", VIP, s, 80, CLIENT_MAC, VIP_MAC), 1)) for s in range(300)}
    assert reached == {"10.0.0.11", "10.0.0.13"}
    assert views.backend_json(rig.status, "web", "10.0.0.12")["status"]["state"] == "down"


def test_plain_openflow_mode_balances_by_client_address_without_extensions(tmp_path):
    rig, switch = ready(tmp_path, mode="plain")
    from ryu_dsr.flows.rules import LearnPin, Move, Multipath, Resubmit

    extensions = (Move, Resubmit, Multipath, LearnPin)
    assert not [r for r in switch.rules() if any(isinstance(a, extensions) for a in r.actions)]
    reached = Counter(
        backend_of(switch.send(tcp(f"10.0.{c // 250}.{c % 250 + 1}", VIP, 999, 80, CLIENT_MAC, VIP_MAC), 1))
        for c in range(600)
    )
    assert set(reached) == set(BACKENDS)
    # ARP for the VIP goes to the controller, which answers
    assert [o.port for o in switch.send(arp_request(CLIENT_MAC, "10.0.0.1", VIP), 1)] == ["controller"]
    rig.sent.clear()
    from ryu_dsr.flows.frames import build_arp, parse_arp

    rig.balancer.packet_in(
        1, 1, build_arp(1, CLIENT_MAC, "ff:ff:ff:ff:ff:ff", CLIENT_MAC, "10.0.0.1", "00:00:00:00:00:00", VIP)
    )
    outs = [c for _, cs in rig.sent for c in cs if isinstance(c, PacketOut)]
    assert len(outs) == 1 and outs[0].port == 1
    answer = parse_arp(outs[0].data)
    assert (answer.op, answer.sha, answer.spa, answer.tpa) == (2, VIP_MAC, VIP, "10.0.0.1")


def test_a_change_sends_only_what_differs(tmp_path):
    rig, switch = ready(tmp_path)
    rig.sent.clear()
    rig.service.patch_pool("web", {"description": "front end"})
    assert [c for _, cs in rig.sent for c in cs if isinstance(c, (FlowAdd, FlowDelete))] == []
    table = list(rig.balancer.desired.planner.table("web"))
    size = len(table)
    assert size == 256  # 64 slots per backend, a power of two
    rig.service.patch_backend("web", "10.0.0.13", {"weight": 50})
    new_table = rig.balancer.desired.planner.table("web")
    moved = sum(1 for a, b in zip(table, new_table) if a != b)
    sent = [c for _, cs in rig.sent for c in cs if isinstance(c, (FlowAdd, FlowDelete))]
    # each moved slot: while the switch's counters are read, its one rule
    # names its old backend for every TCP packet (each connection pinned
    # where it goes, its backend unchanged), then the pool's mark (what its
    # slot flows are now); once they came back (it carried packets) the hold
    # needs no other rule (the pool's TCP only): the mark again
    marks = [i for i, c in enumerate(sent) if c.rule.table == Table.MARKS]
    assert marks == [moved, moved + 1] and len(sent) == moved + 2
    assert all(isinstance(c, FlowAdd) for c in sent)
    assert {(c.rule.table, c.rule.priority) for c in sent[:moved]} == {(Table.SLOTS, Slots.SLOT)}
    uids = {ip: backend.uid for ip, backend in rig.balancer.config.pools["web"].backends.items()}
    older = SetField(REG_OLDER_TCP, uids["10.0.0.13"])
    assert all(older in c.rule.actions and Resubmit(Table.MOVED) in c.rule.actions for c in sent[:moved])
    rig.sent.clear()
    rig.pass_hold()
    sent = [c for _, cs in rig.sent for c in cs if isinstance(c, (FlowAdd, FlowDelete))]
    assert sent[-1].rule.table == Table.MARKS
    sent = sent[:-1]
    # then each slot's one rule again: its new backend, SYNs named for it, the rest still for the old one
    assert len(sent) == moved and all(c.rule.priority == Slots.SLOT for c in sent)
    for c in sent:
        new = new_table[dict(c.rule.match)[REG_SLOT]]
        assert SetField(REG_SYN_TO, uids[new]) in c.rule.actions and older in c.rule.actions, c.rule
    assert abs(moved - size * (1 / 3 - 50 / 250)) <= 2  # 13 gives up exactly its surplus share
    rig.sent.clear()
    rig.settle()  # the window ends: each slot's one rule, its new backend alone; no rule to delete
    sent = [c for _, cs in rig.sent for c in cs if isinstance(c, (FlowAdd, FlowDelete))]
    assert sent[-1].rule.table == Table.MARKS and len(sent) == moved + 1
    for c in sent[:-1]:
        assert isinstance(c, FlowAdd) and c.rule.priority == Slots.SLOT and len(c.rule.actions) == 2, c


def test_vip_delete_removes_its_rules_and_keeps_the_rest(tmp_path):
    rig, switch = ready(tmp_path)
    rig.service.delete_vip("web")
    outputs = switch.send(tcp("10.0.0.1", VIP, 1000, 80, CLIENT_MAC, VIP_MAC), 1)
    assert outputs and all(o.packet["eth_dst"] == VIP_MAC for o in outputs)  # plain L2 now, no backend chosen
    kinds = {kind_of(r.cookie) for r in switch.rules()}
    assert Kind.VIP not in kinds
    assert switch.send(arp_request(CLIENT_MAC, "10.0.0.1", VIP), 1)[0].port != 1  # flooded, not answered


def test_backend_transitions_are_logged_with_reason_and_time(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="ryu_dsr")
    rig, switch = ready(tmp_path)
    status = views.backend_json(rig.status, "web", "10.0.0.12")["status"]
    assert (
        status["state"] == "up"
        and "found by ARP: 02:00:00:00:00:0c on switch 0000000000000001 port 3" == status["reason"]
    )
    assert status["since"].endswith("Z")
    rig.balancer.port_changed(1, 3, up=False)
    status = views.backend_json(rig.status, "web", "10.0.0.12")["status"]
    assert status["state"] == "down" and "port 3 is down" in status["reason"]
    assert "pool web backend 10.0.0.12: up -> down (switch 0000000000000001 port 3 is down)" in caplog.text
    rig.balancer.port_changed(1, 3, up=True)
    assert views.backend_json(rig.status, "web", "10.0.0.12")["status"]["state"] == "up"
    assert "10.0.0.12: down -> up" in caplog.text


def icmp_too_big(src_ip: str, dst_ip: str) -> dict:
    return {
        "eth_src": CLIENT_MAC,
        "eth_dst": VIP_MAC,
        "eth_type": 0x0800,
        "ipv4_src": src_ip,
        "ipv4_dst": dst_ip,
        "ip_proto": 1,
        "icmpv4_type": 3,
        "icmpv4_code": 4,
    }


def test_fragmentation_needed_for_a_vip_reaches_every_backend_behind_it(tmp_path):
    rig, switch = ready(tmp_path)
    outputs = switch.send(icmp_too_big("192.0.2.1", VIP), 1)  # a router on the way back to a client
    assert sorted((o.port, o.packet["eth_dst"]) for o in outputs) == sorted(
        (port, mac) for mac, port in BACKEND_PORTS.items()
    )
    # other ICMP for the VIP is still dropped; a backend that dies is left out
    echo = dict(icmp_too_big("192.0.2.1", VIP), icmpv4_type=8, icmpv4_code=0)
    assert switch.send(echo, 1) == []
    rig.balancer.port_changed(1, 3, up=False)  # 10.0.0.12
    assert sorted(o.port for o in switch.send(icmp_too_big("192.0.2.1", VIP), 1)) == [2, 4]


def test_frames_from_unknown_sources_reach_the_controller_through_a_meter(tmp_path):
    rig = make_rig(tmp_path, packet_in_limit=500)
    switch = rig.connect()
    meter = switch.meters[1]
    assert (meter.rate, meter.burst) == (500, 50)
    learn = [r for r in switch.rules(Table.LEARN)]
    assert len(learn) == 1 and learn[0].meter == 1 and learn[0].actions[0].port == "controller"
    # with no limit, no meter and the plain form
    plain = make_rig(tmp_path / "plain", packet_in_limit=0)
    unmetered = plain.connect()
    assert unmetered.meters == {} and unmetered.rules(Table.LEARN) == []


def test_traffic_counters_count_each_vips_and_backends_new_connections_and_packets(tmp_path):
    """The switch counts as it forwards; a poll of DECIDE and CHOSEN gives
    per VIP and per backend totals that match what each backend received,
    and counters that start again (a replaced flow) lose nothing."""
    from ryu_dsr.flows.pipeline import Table

    rig, switch = ready(tmp_path)
    received = Counter()
    macs = {ip: mac for mac, ip in BACKEND_MACS.items()}
    for sport in range(5000, 5020):
        backend = backend_of(switch.send(syn("10.0.0.1", VIP, sport, 80, CLIENT_MAC, VIP_MAC), 1))
        received[backend] += 1
        for _ in range(2):
            backend_of(switch.send(tcp("10.0.0.1", VIP, sport, 80, CLIENT_MAC, VIP_MAC), 1))
        # the backend answers straight to the client, from the VIP: a SYN-ACK, and a reset for every fifth
        for flags in (0x012, 0x014) if sport % 5 == 0 else (0x012,):
            reply = dict(tcp(VIP, "10.0.0.1", 80, sport, macs[backend], CLIENT_MAC), tcp_flags=flags)
            assert [out.port for out in switch.send(reply, BACKEND_PORTS[macs[backend]])] == [1]
    poll = (Table.DECIDE, Table.CHOSEN, Table.REPLIES)
    rig.balancer.traffic_read(1, switch.flow_stats(poll))
    stats = views.vip_stats(rig.status, "web")["traffic"]
    assert (stats["new_connections"], stats["packets"], stats["bytes"]) == (20, 60, 6000)
    per_backend = views.pool_stats(rig.status, "web")["backends"]
    assert {ip: s["new_connections"] for ip, s in per_backend.items() if s["new_connections"]} == dict(received)
    assert sum(s["packets"] for s in per_backend.values()) == 60
    assert {ip: s["replies"]["answered"] for ip, s in per_backend.items() if s["replies"]["answered"]} == dict(received)
    assert sum(s["replies"]["resets"] for s in per_backend.values()) == 4
    # a later poll adds what grew; a flow replaced (counters at 0) loses nothing
    rig.clock.now += 10
    backend_of(switch.send(syn("10.0.0.1", VIP, 6000, 80, CLIENT_MAC, VIP_MAC), 1))
    decide = [r for r in switch.rules(Table.DECIDE) if dict(r.match).get("tcp_flags")][0]
    switch.counts[decide.key] = [1, 100]  # as if the flow had been replaced just before that SYN
    rig.balancer.traffic_read(1, switch.flow_stats(poll))
    stats = views.vip_stats(rig.status, "web")["traffic"]
    assert stats["new_connections"] == 21 and stats["rates"]["new_connections"] == 0.1


def test_a_backend_that_resets_its_connections_is_reported_from_the_switchs_counters(tmp_path, caplog):
    """The passive signal: connections sent to a backend against the SYN-ACKs
    the switch saw it send back; a backend that resets them (its server
    stopped: the kernel answers RST) is shown and logged, while its ARP
    check still passes."""
    import logging

    from ryu_dsr.flows.pipeline import Table

    caplog.set_level(logging.INFO, logger="ryu_dsr")
    rig, switch = ready(tmp_path)
    macs = {ip: mac for mac, ip in BACKEND_MACS.items()}
    poll = (Table.DECIDE, Table.CHOSEN, Table.REPLIES)
    rig.balancer.traffic_read(1, switch.flow_stats(poll))

    def second(dead: str | None) -> None:
        for sport in range(7000, 7060):
            backend = backend_of(switch.send(syn("10.0.0.1", VIP, sport, 80, CLIENT_MAC, VIP_MAC), 1))
            flags = 0x014 if backend == dead else 0x012  # RST+ACK from the dead one's kernel
            reply = dict(tcp(VIP, "10.0.0.1", 80, sport, macs[backend], CLIENT_MAC), tcp_flags=flags)
            assert len(switch.send(reply, BACKEND_PORTS[macs[backend]])) == 1
        rig.clock.now += 1
        rig.balancer.traffic_read(1, switch.flow_stats(poll))

    second(dead="10.0.0.12")
    status = {ip: rig.status.backend_status("web", ip) for ip in BACKENDS}
    assert status["10.0.0.12"]["passive"]["answered_share"] == 0.0
    assert status["10.0.0.12"]["passive"]["resets_per_s"] > 1 and status["10.0.0.12"]["state"] == "up"
    assert status["10.0.0.11"]["passive"]["answered_share"] == 1.0
    assert "backend 10.0.0.12 (02:00:00:00:00:0c) answered 0% of the" in caplog.text
    second(dead=None)
    assert rig.status.backend_status("web", "10.0.0.12")["passive"]["answered_share"] == 1.0
    assert "backend 10.0.0.12 (02:00:00:00:00:0c) answers its connections again" in caplog.text


def test_a_pool_with_passive_fail_takes_out_a_backend_that_resets_its_connections(tmp_path):
    """``passive: fail``: the switch's signal counts as a failed check, so
    the resetting backend leaves the hash at once (its ARP check still
    passes) and comes back after ``rise`` passing checks."""
    from ryu_dsr.flows.pipeline import Table

    rig, switch = ready(tmp_path)
    rig.service.patch_pool("web", {"health_check": {"passive": "fail"}})
    macs = {ip: mac for mac, ip in BACKEND_MACS.items()}
    poll = (Table.DECIDE, Table.CHOSEN, Table.REPLIES)
    rig.balancer.traffic_read(1, switch.flow_stats(poll))
    sent = Counter()
    for sport in range(7000, 7060):
        backend = backend_of(switch.send(syn("10.0.0.1", VIP, sport, 80, CLIENT_MAC, VIP_MAC), 1))
        sent[backend] += 1
        flags = 0x014 if backend == "10.0.0.12" else 0x012
        reply = dict(tcp(VIP, "10.0.0.1", 80, sport, macs[backend], CLIENT_MAC), tcp_flags=flags)
        switch.send(reply, BACKEND_PORTS[macs[backend]])
    rig.clock.now += 1
    rig.balancer.traffic_read(1, switch.flow_stats(poll))
    status = rig.status.backend_status("web", "10.0.0.12")
    assert status["state"] == "unhealthy" and "answer 0% of its new connections" in status["reason"]
    assert rig.status.backend_status("web", "10.0.0.11")["state"] == "up"
    assert status["slots"] == 0 and sent["10.0.0.12"] > 0
    for _ in range(5):  # its ARP checks pass again: it is back
        rig.clock.now += 0.3
        rig.balancer.tick()
        rig.resolve_all()
    assert rig.status.backend_status("web", "10.0.0.12")["state"] == "up", rig.status.backend_status("web", "10.0.0.12")


def test_passive_fail_needs_a_check_that_can_bring_the_backend_back(tmp_path):
    rig, _switch = ready(tmp_path)
    with pytest.raises(InvalidInput, match="health_check.passive"):
        rig.service.patch_pool("web", {"health_check": {"kind": "none", "passive": "fail"}})
    assert rig.balancer.config.pools["web"].health_check.passive == "report"


def test_a_backend_that_stopped_answering_arp_comes_back_when_it_answers_again(tmp_path):
    rig, _switch = ready(tmp_path)
    mac, port = BACKENDS["10.0.0.12"]

    def checks(answering: bool) -> str:
        for _ in range(6):
            rig.clock.now += 0.3
            rig.balancer.tick()
            if answering:
                rig.answer_arp("10.0.0.12", mac, port)
        return rig.status.backend_status("web", "10.0.0.12")["state"]

    assert checks(answering=False) == "unhealthy"
    assert checks(answering=True) == "up"


def test_a_found_backend_is_asked_again_at_its_own_port_and_everywhere_once_it_falls_silent(tmp_path):
    from ryu_dsr.flows.frames import parse_arp

    from ryu_dsr.locator import REPROBE_SECONDS

    rig, _switch = ready(tmp_path)

    def probes_for(ip: str) -> list:
        rig.sent.clear()
        rig.clock.now += REPROBE_SECONDS + 0.1
        rig.balancer.tick()
        return [
            c.port
            for _dpid, commands in rig.sent
            for c in commands
            if isinstance(c, PacketOut)
            and (parse_arp(c.data) or None)
            and parse_arp(c.data).tpa == ip
            and parse_arp(c.data).spa == "0.0.0.0"
            and parse_arp(c.data).op == 1
        ]

    rig.resolve_all()
    ports = probes_for("10.0.0.12")
    assert 3 in ports and "flood" not in ports  # its own port (the re-probe and the ARP check), not flooded
    # it stops answering (moved, say): after two silent rounds it is asked everywhere
    for _ in range(3):
        ports = probes_for("10.0.0.12")
    assert "flood" in ports


def test_the_contract_holds_each_rule_to_its_tables_fields_targets_and_priority_bands(rig):
    """Every rule the switch got was checked against its table's contract;
    a rule that breaks one is refused with the table and the rule named."""
    from ryu_dsr.flows.pipeline import CONTRACT, Ingress, Slots, check_rule
    from ryu_dsr.flows.rules import Output, Resubmit, Rule, match_items

    switch = rig.connect()
    rig.setup_web()
    rig.resolve_all()
    rules = [rule for table in CONTRACT for rule in switch.rules(table)]
    assert len({rule.table for rule in rules}) >= 7
    for rule in rules:
        check_rule(rule)  # what the controller sent holds
        assert rule.priority in CONTRACT[rule.table].priorities.__members__.values()
    ok = Rule(Table.SLOTS, Slots.SLOT, match_items(reg0=1, reg3=1), (Output(2),))
    check_rule(ok)
    with pytest.raises(ValueError, match="table SLOTS has no priority 145; its bands: PIN 200, HANDOVER_SYN 130"):
        check_rule(Rule(Table.SLOTS, Ingress.VIP_SOURCE, match_items(reg0=1)))  # another table's band
    with pytest.raises(ValueError, match="table SLOTS has no priority 201"):
        check_rule(Rule(Table.SLOTS, 201, match_items(reg0=1)))
    with pytest.raises(ValueError, match="table SLOTS does not match on ipv4_dst"):
        check_rule(Rule(Table.SLOTS, Slots.SLOT, match_items(ipv4_dst="10.0.0.100")))
    with pytest.raises(ValueError, match="table SLOTS may not go to INGRESS"):
        check_rule(Rule(Table.SLOTS, Slots.SLOT, match_items(reg0=1), (Resubmit(Table.INGRESS),)))
    with pytest.raises(ValueError, match="table INGRESS may not go to CHOSEN"):
        check_rule(Rule(Table.INGRESS, Ingress.MISS, (), goto=Table.CHOSEN))
