"""The fabric's graph: discovery, shortest paths, the flooding tree."""

from __future__ import annotations

import json

import pytest

from ryu_dsr.fabric import Fabric, load_links
from ryu_dsr.model import InvalidInput

SPINES = (101, 102)
LEAVES = (1, 2, 3)


def leaf_spine(now: float = 0.0) -> Fabric:
    """Two spines, three leaves: leaf L's port 1 to spine 101 (port L), port
    2 to spine 102 (port L); leaves have hosts on ports 3 and 4."""
    fabric = Fabric(hold=1.0)
    for leaf in LEAVES:
        fabric.switch_up(leaf, {1, 2, 3, 4}, now)
    for spine in SPINES:
        fabric.switch_up(spine, set(LEAVES), now)
    for leaf in LEAVES:
        for index, spine in enumerate(SPINES, 1):
            assert both_ways(fabric, leaf, index, spine, leaf, now) == "new"
    return fabric


def both_ways(fabric: Fabric, a: int, pa: int, b: int, pb: int, now: float) -> str:
    """Frames came over a link both ways: what the second did."""
    fabric.link_seen(a, pa, b, pb, now)
    return fabric.link_seen(b, pb, a, pa, now)


def test_paths_are_shortest_and_every_switch_agrees():
    fabric = leaf_spine()
    assert len(fabric.links()) == 6
    # leaf 1 to leaf 3: up through the lowest spine, then down
    assert fabric.next_port(1, 3) == 1
    assert fabric.next_port(101, 3) == 3
    assert fabric.next_port(3, 3) is None
    assert fabric.transit(101) and not fabric.transit(1)
    assert fabric.edge_ports(1) == {3, 4} and fabric.edge_ports(101) == set()


def test_flooding_follows_a_spanning_tree_and_new_ports_wait_for_the_hold():
    fabric = leaf_spine(now=0.0)
    tree = fabric.tree()
    assert len(tree) == 4  # five switches
    # every switch reaches every other over the tree alone
    reached, frontier = {1}, [1]
    while frontier:
        node = frontier.pop()
        for a, _pa, b, _pb in tree:
            for here, there in ((a, b), (b, a)):
                if here == node and there not in reached:
                    reached.add(there)
                    frontier.append(there)
    assert reached == {1, 2, 3, 101, 102}
    assert fabric.flood_ports(1, now=0.5) == tuple(sorted(p for p in (1, 2) if _in_tree(fabric, 1, p)))
    assert set(fabric.flood_ports(1, now=1.0)) >= {3, 4}
    # a link off the tree carries no flood on either end
    spare = next(link for link in fabric.links() if link not in tree)
    assert spare[1] not in fabric.flood_ports(spare[0], now=5) and spare[3] not in fabric.flood_ports(spare[2], now=5)


def _in_tree(fabric: Fabric, dpid: int, port: int) -> bool:
    return any((a, pa) == (dpid, port) or (b, pb) == (dpid, port) for a, pa, b, pb in fabric.tree())


def test_a_cut_link_moves_paths_to_the_other_spine_and_a_rejoined_one_moves_nothing_back_by_itself():
    fabric = leaf_spine()
    assert fabric.next_port(1, 3) == 1
    gone = fabric.port_down(1, 1)  # leaf 1 to spine 101
    assert gone == [(1, 1, 101, 1)]
    assert fabric.next_port(1, 3) == 2 and fabric.next_port(102, 1) == 1
    assert len(fabric.tree()) == 4  # still spans all five
    fabric.port_up(1, 1, now=10)
    assert both_ways(fabric, 101, 1, 1, 1, now=10) == "new"
    assert fabric.next_port(1, 3) == 1


def test_discovered_links_expire_and_a_switch_that_leaves_takes_its_links():
    fabric = leaf_spine(now=0.0)
    for leaf in LEAVES:
        both_ways(fabric, leaf, 2, 102, leaf, now=3.0)  # only spine 102's links are seen again
    assert sorted(fabric.expire(now=4.0)) == [(1, 1, 101, 1), (2, 1, 101, 2), (3, 1, 101, 3)]
    assert fabric.next_port(1, 3) == 2
    assert len(fabric.switch_down(102)) == 3
    assert fabric.next_port(1, 3) is None  # no path left


def test_static_links_from_a_file(tmp_path):
    path = tmp_path / "topology.json"
    path.write_text(
        json.dumps({"links": [{"a": {"dpid": "0000000000000001", "port": 1}, "b": {"dpid": 2, "port": 5}}]})
    )
    links = load_links(str(path))
    assert links == [(1, 1, 2, 5)]
    fabric = Fabric()
    fabric.declare(links)
    fabric.switch_up(1, {1, 2}, 0.0)
    assert fabric.next_port(1, 2) is None  # switch 2 not up yet
    fabric.switch_up(2, {5, 6}, 0.0)
    assert fabric.next_port(1, 2) == 1 and fabric.flood_ports(2, now=0.0) == (5, 6)
    assert both_ways(fabric, 1, 2, 2, 6, now=0.0) == "static"  # discovery does not change a static fabric
    assert fabric.expire(now=60.0) == [] and fabric.next_port(1, 2) == 1  # declared links do not time out
    for body, rule in (
        ({"links": [{"a": {"dpid": 1, "port": 1}, "b": {"dpid": 1, "port": 2}}]}, "two different switches"),
        ({"links": [{"a": {"dpid": 1}}]}, '"a": {"dpid"'),
        ([], '"links"'),
    ):
        path.write_text(json.dumps(body))
        with pytest.raises(InvalidInput, match=rule):
            load_links(str(path))


# -- the pipeline on a fabric, through the table simulator --

CLIENT = ("02:00:00:00:00:01", "10.0.0.1", 1, 3)  # MAC, IP, leaf, port
OTHER_CLIENT = ("02:00:00:00:00:02", "10.0.0.2", 3, 4)
FABRIC_BACKENDS = {"10.0.1.11": ("02:00:00:00:01:0b", 2, 3), "10.0.1.12": ("02:00:00:00:01:0c", 3, 3)}
VIP, VIP_MAC = "10.0.0.100", "02:d5:0a:00:00:64"


def fabric_rig(tmp_path):
    """Leaves 1-3 (ports 1, 2 to spines 101 and 102; hosts on 3 and 4),
    spines with a port per leaf; links found by discovery frames; two
    backends on leaves 2 and 3, clients on leaves 1 and 3."""
    from tests.conftest import make_rig

    rig = make_rig(tmp_path, handover_window=1, udp_handover_window=1)
    for leaf in LEAVES:
        rig.connect(leaf, ports=(1, 2, 3, 4))
    for spine in SPINES:
        rig.connect(spine, ports=LEAVES)
    links = {}
    for leaf in LEAVES:
        for index, spine in enumerate(SPINES, 1):
            links[(leaf, index)], links[(spine, leaf)] = (spine, leaf), (leaf, index)

    def second() -> None:
        """A second passes: the switches hand back each other's discovery
        frames, backends answer their checks."""
        for (a, pa), (b, pb) in links.items():
            rig.balancer.packet_in(b, pb, rig.balancer.l2.sealed.frame(a, pa))
        for ip, (mac, leaf, port) in FABRIC_BACKENDS.items():
            rig.answer_arp(ip, mac, port, leaf)
        rig.clock.now += 1
        rig.balancer.tick()

    second()
    rig.service.create_pool({"name": "web", "backends": [{"ip": ip} for ip in FABRIC_BACKENDS]})
    rig.service.create_vip({"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"})
    for mac, _ip, leaf, port in (CLIENT, OTHER_CLIENT):
        rig.learn(mac, port, leaf)
    for _ in range(5):  # holds and handover windows over
        second()
    return rig, links


def walk(rig, links, dpid: int, in_port: int, packet: dict) -> list[tuple[int, int, dict]]:
    """Where a packet that enters at (dpid, in_port) leaves the fabric: every
    (switch, edge port, packet); fails on a loop."""
    delivered, queue, hops = [], [(dpid, in_port, packet)], 0
    while queue:
        here, port, frame = queue.pop()
        hops += 1
        assert hops < 100, "the packet goes round a loop"
        for out in rig.switches[here].send(frame, port):
            if (here, out.port) in links:
                queue.append((*links[(here, out.port)], out.packet))
            else:
                delivered.append((here, out.port, out.packet))
    return delivered


def test_vip_traffic_is_balanced_at_the_edge_and_carried_to_backends_on_other_leaves(tmp_path):
    from tests.simulator import syn, tcp

    rig, links = fabric_rig(tmp_path)
    mac, ip, leaf, port = CLIENT
    reached = {}
    for sport in range(4000, 4064):
        out = walk(rig, links, leaf, port, syn(ip, VIP, sport, 80, mac, VIP_MAC))
        assert len(out) == 1, out
        dpid, edge, packet = out[0]
        backend = next(b for b, (bmac, bleaf, bport) in FABRIC_BACKENDS.items() if (bleaf, bport) == (dpid, edge))
        assert packet["eth_dst"] == FABRIC_BACKENDS[backend][0] and packet["ipv4_dst"] == VIP
        reached[sport] = backend
        # the rest of the connection follows
        assert walk(rig, links, leaf, port, tcp(ip, VIP, sport, 80, mac, VIP_MAC))[0][:2] == (dpid, edge)
    assert set(reached.values()) == set(FABRIC_BACKENDS)
    # spines are transit: no VIP rule, no slot table; leaves have them
    from ryu_dsr.flows.pipeline import Table

    assert all(not rig.switches[s].rules(Table.DECIDE) and not rig.switches[s].rules(Table.SLOTS) for s in SPINES)
    assert all(rig.switches[leaf].rules(Table.SLOTS) for leaf in LEAVES)
    # the same connection entering at another leaf picks the same backend (same slot table everywhere)
    other_mac, _other_ip, other_leaf, other_port = OTHER_CLIENT
    out = walk(rig, links, other_leaf, other_port, syn(ip, VIP, 4000, 80, other_mac, VIP_MAC))
    assert out[0][2]["eth_dst"] == FABRIC_BACKENDS[reached[4000]][0]
    # a backend's reply goes back to the client across the fabric, from the VIP
    bmac, bleaf, bport = FABRIC_BACKENDS["10.0.1.12"]
    reply = walk(rig, links, bleaf, bport, tcp(VIP, ip, 80, 4000, bmac, mac))
    assert [(d, p) for d, p, _ in reply] == [(leaf, port)]


def test_port_translation_across_the_fabric_rewrites_each_direction_once(tmp_path):
    """A translated VIP (80 to the backends' 8080): the request is rewritten
    where it enters the fabric, the reply where it leaves its backend,
    whatever leaves they are on; the spines only carry them."""
    from tests.simulator import syn, tcp

    rig, links = fabric_rig(tmp_path)
    rig.service.patch_vip("www", {"backend_port": 8080})
    mac, ip, leaf, port = CLIENT
    reached = set()
    for sport in range(4000, 4032):
        [(dpid, edge, packet)] = walk(rig, links, leaf, port, syn(ip, VIP, sport, 80, mac, VIP_MAC))
        backend = next(b for b, (_bmac, bleaf, bport) in FABRIC_BACKENDS.items() if (bleaf, bport) == (dpid, edge))
        assert (packet["tcp_dst"], packet["tcp_src"]) == (8080, sport)
        reached.add(backend)
        bmac, bleaf, bport = FABRIC_BACKENDS[backend]
        [(back_at, back_port, answer)] = walk(rig, links, bleaf, bport, tcp(VIP, ip, 8080, sport, bmac, mac))
        assert (back_at, back_port) == (leaf, port) and (answer["tcp_src"], answer["tcp_dst"]) == (80, sport)
    assert reached == set(FABRIC_BACKENDS)


def test_broadcast_reaches_every_edge_port_once_and_never_loops(tmp_path):
    from tests.simulator import arp_request

    rig, links = fabric_rig(tmp_path)
    mac, ip, leaf, port = CLIENT
    out = walk(rig, links, leaf, port, arp_request(mac, ip, "10.0.0.77"))
    edges = sorted((d, p) for d, p, _ in out)
    assert edges == sorted({(lf, p) for lf in LEAVES for p in (3, 4)} - {(leaf, port)})


def test_a_cut_link_reroutes_and_connections_keep_their_backend(tmp_path):
    from tests.simulator import tcp

    rig, links = fabric_rig(tmp_path)
    mac, ip, leaf, port = CLIENT
    before = {s: walk(rig, links, leaf, port, tcp(ip, VIP, s, 80, mac, VIP_MAC))[0][:2] for s in range(5000, 5032)}
    used = rig.switches[leaf].send(tcp(ip, VIP, 5000, 80, mac, VIP_MAC), port)[0].port  # the uplink in use
    spine = links[(leaf, used)]
    rig.balancer.port_changed(leaf, used, up=False)
    rig.balancer.port_changed(spine[0], spine[1], up=False)
    del links[(leaf, used)], links[spine]
    after = {s: walk(rig, links, leaf, port, tcp(ip, VIP, s, 80, mac, VIP_MAC))[0][:2] for s in range(5000, 5032)}
    assert after == before
    assert rig.switches[leaf].send(tcp(ip, VIP, 5000, 80, mac, VIP_MAC), port)[0].port != used


def test_the_topology_is_shown_over_rest(tmp_path):

    rig, _links = fabric_rig(tmp_path)
    topology = rig.status.topology()
    assert len(topology["links"]) == 6 and sum(link["tree"] for link in topology["links"]) == 4
    assert {s["dpid"]: s["transit"] for s in topology["switches"]} == {
        1: False,
        2: False,
        3: False,
        101: True,
        102: True,
    }
    hosts = {h["mac"]: (h["dpid"], h["port"], h["backends"]) for h in topology["hosts"]}
    assert hosts["02:00:00:00:01:0c"] == (3, 3, ["10.0.1.12"]) and hosts[CLIENT[0]] == (1, 3, [])
