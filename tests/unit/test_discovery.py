"""A topology that forged frames cannot bend: sealed discovery frames, ports
that keep their role, links believed from both ends, flapping ports held."""

from __future__ import annotations

import pytest

from ryu_dsr.discovery import MAX_AGE, Discovery
from ryu_dsr.fabric import Fabric
from ryu_dsr.flaps import HALF_LIFE, Damping
from ryu_dsr.model import InvalidInput
from ryu_dsr.settings import Settings
from tests.conftest import Clock, make_rig
from tests.unit.test_fabric import CLIENT, OTHER_CLIENT, both_ways, fabric_rig, leaf_spine

KEY = bytes(range(32))
PROBE = "02:d4:00:00:00:01"


def sealer(clock: Clock, key: bytes = KEY) -> Discovery:
    return Discovery(key, PROBE, clock)


# -- the frames --


def test_a_sealed_frame_names_its_switch_and_port_and_a_forged_one_is_refused():
    clock = Clock()
    discovery = sealer(clock)
    frame = discovery.frame(0x1234, 7)
    assert len(frame) >= 60 and discovery.check(frame) == (0x1234, 7)
    forged = bytearray(discovery.frame(0x1234, 7))
    forged[30:34] = (8).to_bytes(4, "big")  # the port, changed by a host
    assert discovery.check(bytes(forged)) == "bad_code"
    assert discovery.check(sealer(clock, key=b"another controller's key!").frame(0x1234, 7)) == "bad_code"
    assert discovery.check(frame[:40]) == "malformed"
    assert discovery.check(bytes(60)) == "malformed"
    assert dict(discovery.refused) == {"bad_code": 2, "malformed": 2}
    with pytest.raises(ValueError, match="16 bytes"):
        Discovery(b"short", PROBE, clock)


def test_a_late_or_repeated_frame_is_refused():
    clock = Clock()
    discovery = sealer(clock)
    kept = discovery.frame(1, 1)
    clock.now += MAX_AGE + 0.5
    assert discovery.check(kept) == "stale"  # a copy kept for later
    fresh = discovery.frame(1, 1)
    assert discovery.check(fresh) == (1, 1)
    assert discovery.check(fresh) == "replayed"  # the same frame again
    earlier = Clock()
    earlier.now = clock.now - 0.5
    older = sealer(earlier).frame(1, 1)  # fresh, but sealed before the last one taken from that port
    clock.now += 0.1
    assert discovery.check(older) == "replayed"
    assert discovery.check(discovery.frame(1, 1)) == (1, 1)  # the next round's frame is taken
    ahead = sealer(Clock()).frame(2, 1)
    clock.now -= MAX_AGE + 5  # a sender's clock far ahead of ours
    assert discovery.check(ahead) == "stale"


def test_a_clock_stepped_back_does_not_stop_discovery():
    clock = Clock()
    discovery = sealer(clock)
    assert discovery.check(discovery.frame(1, 1)) == (1, 1)
    clock.now -= 30  # the wall clock stepped back
    assert discovery.check(discovery.frame(1, 1)) == (1, 1)


def test_frames_of_one_round_grow_even_within_a_microsecond():
    discovery = sealer(Clock())  # the clock stands still
    frames = [discovery.frame(1, port) for port in range(1, 5)] + [discovery.frame(1, 1)]
    assert [discovery.check(frame) for frame in frames] == [(1, 1), (1, 2), (1, 3), (1, 4), (1, 1)]


# -- the graph: both ends, roles --


def test_a_link_is_believed_only_when_both_ends_reported_it():
    fabric = Fabric()
    fabric.switch_up(1, {1, 2}, 0.0)
    fabric.switch_up(2, {1, 2}, 0.0)
    assert fabric.link_seen(1, 1, 2, 1, now=0.0) == "one_way" and fabric.links() == []
    assert fabric.link_seen(2, 1, 1, 1, now=0.1) == "new" and fabric.links() == [(1, 1, 2, 1)]
    assert fabric.link_seen(1, 1, 2, 1, now=1.0) == "known"
    # heard one way only from now on: the link goes when the other way is old
    fabric.link_seen(1, 1, 2, 1, now=4.0)
    assert fabric.expire(now=4.0) == [(1, 1, 2, 1)] and fabric.role(1, 1) == "unknown"
    assert fabric.link_seen(1, 1, 2, 1, now=4.5) == "one_way"


def test_a_port_where_hosts_were_seen_never_becomes_a_link_until_it_goes_down():
    fabric = leaf_spine()
    assert fabric.host_seen(1, 3) and not fabric.host_seen(1, 3)  # a role change once
    assert fabric.role(1, 3) == "host" and fabric.role(1, 1) == "link" and fabric.role(1, 4) == "unknown"
    # frames that would join leaf 1's host port to leaf 3's port 4, both ways
    assert fabric.link_seen(3, 4, 1, 3, now=0.5) == "host_port"
    assert fabric.link_seen(1, 3, 3, 4, now=0.5) == "host_port"
    assert len(fabric.links()) == 6 and fabric.next_port(1, 3) == 1
    # a real link cannot be cut by naming its port from a host port either
    assert fabric.link_seen(1, 1, 3, 3, now=0.6) == "host_port" or fabric.host_seen(3, 3)
    assert both_ways(fabric, 1, 1, 3, 3, now=0.7) == "host_port" and (1, 1, 101, 1) in fabric.links()
    fabric.port_down(1, 3)  # a new cable may be a link
    fabric.port_up(1, 3, now=1.0)
    assert fabric.role(1, 3) == "unknown" and fabric.learns(1, 3)


def test_a_pinned_role_holds_whatever_comes_in():
    fabric = leaf_spine()
    fabric.pinned = {(1, 4): "host", (2, 4): "link"}
    assert fabric.role(1, 4) == "host" and both_ways(fabric, 1, 4, 2, 4, now=0.5) == "host_port"
    assert fabric.role(2, 4) == "link" and not fabric.learns(2, 4) and fabric.learns(2, 3)


# -- through the balancer --


def refused(rig) -> dict:
    return {reason: n for reason, n in rig.status.topology()["discovery"]["refused"].items() if n}


def test_forged_and_relayed_frames_from_a_host_port_change_no_link(tmp_path):
    """The attack of the issue: a client on leaf 1 sends discovery frames
    naming leaf 3's client port; another key's frames are forged, a genuine
    frame of leaf 3's port handed on is refused by the ports' roles."""
    rig, links = fabric_rig(tmp_path)
    before = rig.status.topology()
    client_leaf, client_port = CLIENT[2], CLIENT[3]
    other_leaf, other_port = OTHER_CLIENT[2], OTHER_CLIENT[3]
    forger = Discovery(b"guessed by a tenant, not ours!", rig.balancer.settings.probe_mac, rig.clock)
    for _ in range(10):
        rig.balancer.packet_in(client_leaf, client_port, forger.frame(other_leaf, other_port))
    genuine = rig.balancer.l2.sealed
    rig.balancer.packet_in(client_leaf, client_port, genuine.frame(other_leaf, other_port))  # a relay
    rig.balancer.packet_in(other_leaf, other_port, genuine.frame(client_leaf, client_port))
    after = rig.status.topology()
    assert after["links"] == before["links"]
    assert refused(rig) == {"bad_code": 10, "host_port": 2}
    roles = {s["dpid"]: s["roles"] for s in after["switches"]}
    assert roles[client_leaf][str(client_port)] == "host" and roles[client_leaf]["1"] == "link"
    # the client's flooding still leaves by the tree only, and reaches every other host port once
    from tests.simulator import arp_request
    from tests.unit.test_fabric import LEAVES, walk

    mac, ip, leaf, port = CLIENT
    out = walk(rig, links, leaf, port, arp_request(mac, ip, "10.0.0.77"))
    assert sorted((d, p) for d, p, _ in out) == sorted({(lf, p) for lf in LEAVES for p in (3, 4)} - {(leaf, port)})


def test_one_way_heard_is_answered_by_a_frame_back_so_both_ends_report_at_once(tmp_path):
    rig = make_rig(tmp_path)
    rig.connect(1, ports=(1, 2))
    rig.connect(2, ports=(1, 2))
    sealed = rig.balancer.l2.sealed
    rig.sent.clear()
    rig.balancer.packet_in(2, 1, sealed.frame(1, 1))
    [(dpid, [back])] = [(d, c) for d, c in rig.sent if d == 2 and any(getattr(x, "port", None) == 1 for x in c)]
    assert rig.status.topology()["links"] == []
    rig.balancer.packet_in(1, 1, back.data)  # switch 1 hands the frame back
    assert [(link["a"], link["b"]) for link in rig.status.topology()["links"]] == [
        ({"dpid": 1, "port": 1}, {"dpid": 2, "port": 1})
    ]


def test_the_key_is_kept_with_the_state_and_a_key_file_wins(tmp_path):
    rig = make_rig(tmp_path)
    frame = rig.balancer.l2.sealed.frame(1, 1)
    again = make_rig(tmp_path, clock=rig.clock)  # a restart on the same state file
    again.connect(1, ports=(1,))
    again.connect(2, ports=(1,))
    assert again.balancer.l2.sealed.check(frame) == (1, 1)
    key_file = tmp_path / "key"
    key_file.write_bytes(b"k" * 40 + b"\n")
    other = make_rig(tmp_path, clock=rig.clock, discovery_key_file=str(key_file))
    assert other.balancer.l2.sealed.key == b"k" * 40
    assert other.balancer.l2.sealed.check(rig.balancer.l2.sealed.frame(1, 1)) == "bad_code"


def test_settings_for_roles_and_keys_name_the_field_and_the_rule(tmp_path):
    settings = Settings.from_mapping({"port_roles": "0x1:3=host, 0000000000000002:1=link"})
    assert settings.port_roles == "0000000000000001:3=host,0000000000000002:1=link"
    with pytest.raises(InvalidInput, match="dsr.port_roles.*DPID:PORT=host"):
        Settings.from_mapping({"port_roles": "1:3=router"})
    with pytest.raises(InvalidInput, match="dsr.port_roles"):
        Settings.from_mapping({"port_roles": "1:0=host"})
    short = tmp_path / "short"
    short.write_bytes(b"0123456789")
    with pytest.raises(InvalidInput, match="dsr.discovery_key_file.*at least 16 bytes"):
        Settings.from_mapping({"discovery_key_file": str(short)})
    with pytest.raises(InvalidInput, match="dsr.discovery_key_file.*cannot read"):
        Settings.from_mapping({"discovery_key_file": str(tmp_path / "missing")})


def test_a_pinned_link_port_learns_no_host(tmp_path):
    rig = make_rig(tmp_path, port_roles="1:2=link")
    rig.connect(1, ports=(1, 2, 3))
    rig.learn("02:00:00:00:00:31", 2)
    rig.learn("02:00:00:00:00:32", 3)
    assert {h["mac"]: h["port"] for h in rig.status.topology()["hosts"]} == {"02:00:00:00:00:32": 3}
    assert rig.status.topology()["switches"][0]["pinned"] == {"2": "link"}
    assert rig.status.topology()["discovery"]["host_frames_on_links"] == 1  # noticed (and logged)


# -- flaps --


def test_damping_holds_a_port_after_its_third_quick_flap_and_releases_it_when_quiet():
    damping = Damping()
    assert not damping.flap((1, 1), now=0.0)  # a cable pulled once is never held
    assert not damping.flap((1, 1), now=1.0)
    assert damping.flap((1, 1), now=2.0) and damping.is_held((1, 1))
    assert damping.release(now=3.0) == []
    until = damping.until((1, 1), now=3.0)
    assert 3.0 + HALF_LIFE < until < 3.0 + 2 * HALF_LIFE
    assert damping.release(now=until + 0.1) == [((1, 1), False)] and not damping.is_held((1, 1))
    single = Damping()
    for step in range(10):  # once every two half-lives: never held
        assert not single.flap((1, 2), now=step * 2 * HALF_LIFE)


def hand_back(rig, links) -> None:
    """The switches hand back each other's discovery frames."""
    for (a, pa), (b, pb) in links.items():
        rig.balancer.packet_in(b, pb, rig.core.l2.sealed.frame(a, pa))


def test_a_flapping_port_is_held_down_and_costs_the_fabric_nothing_until_quiet(tmp_path):
    rig, links = fabric_rig(tmp_path)
    core = rig.core
    # leaf 1's link to spine 101 bounces every half second
    for _ in range(3):
        rig.balancer.port_changed(1, 1, up=False)
        rig.clock.now += 0.5
        rig.balancer.port_changed(1, 1, up=True)
        for (a, pa), (b, pb) in (((1, 1), (101, 1)), ((101, 1), (1, 1))):
            rig.balancer.packet_in(b, pb, core.l2.sealed.frame(a, pa))
    leaf1 = next(s for s in rig.status.topology()["switches"] if s["dpid"] == 1)
    assert "1" in leaf1["held_down"] and 1 not in leaf1["ports"]
    version = core.l2.fabric.version
    for _ in range(5):  # it goes on bouncing: nothing is computed again
        rig.balancer.port_changed(1, 1, up=False)
        rig.balancer.port_changed(1, 1, up=True)
        rig.balancer.packet_in(101, 1, core.l2.sealed.frame(1, 1))
    assert core.l2.fabric.version == version
    assert refused(rig)["held_down"] >= 5
    assert core.l2.fabric.next_port(1, 3) == 2  # the fabric goes by spine 102 meanwhile
    for _ in range(40):  # quiet: the port comes back, its link is heard again
        rig.clock.now += 1
        rig.balancer.tick()
        hand_back(rig, links)
    assert (1, 1, 101, 1) in core.l2.fabric.links() and core.l2.fabric.next_port(1, 3) == 1
    counts = rig.status.topology()["discovery"]
    assert counts["held_down"] == 1 and counts["flaps"] >= 3


def test_a_switch_ports_own_frames_do_not_make_a_host_port(tmp_path):
    """A port that is a network interface sends the kernel's IPv6 chatter
    when it comes up (router solicitation, MLD): the switch at the other end
    of the cable sees it before discovery does. It is not a host."""
    rig = make_rig(tmp_path)
    rig.connect(1, ports=(1, 2))
    rig.balancer.switch_connected(
        2, "ovs", {}, ports=(1, 2), port_macs={1: "aa:00:00:00:02:01", 2: "aa:00:00:00:02:02"}
    )
    rig.learn("aa:00:00:00:02:01", 1, dpid=1)  # switch 2's port 1 speaks, at switch 1's port 1
    rig.balancer.port_changed(1, 2, up=True, mac="aa:00:00:00:01:02")
    rig.learn("aa:00:00:00:01:02", 2, dpid=2)
    sealed = rig.core.l2.sealed
    for (a, pa), (b, pb) in (((2, 1), (1, 1)), ((1, 1), (2, 1)), ((1, 2), (2, 2)), ((2, 2), (1, 2))):
        rig.balancer.packet_in(b, pb, sealed.frame(a, pa))
    topology = rig.status.topology()
    assert len(topology["links"]) == 2 and topology["hosts"] == []
    rig.learn("02:00:00:00:00:99", 1, dpid=1)  # a real host behind a link port is not learned there
    assert rig.status.topology()["hosts"] == []
