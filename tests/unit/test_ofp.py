"""Translation of plain rules to OpenFlow 1.3 messages (Ryu), and back."""

from __future__ import annotations

import pytest
from ryu.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_3_parser
from ryu_dsr.flows.rules import Barrier, FlowAdd, FlowDelete, FlowDeleteByCookie, PacketOut

from ryu_dsr import ofp
from tests.conftest import BACKENDS, make_rig
from tests.connection import FakeDatapath

DATAPATH = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)


def all_rules(tmp_path, mode):
    """Every kind of rule: backends found one by one, the first one in use,
    leave slots in handover; a dual-stack pool (IPv6 neighbour answers,
    handovers of both families) and dscp backends behind a gateway."""
    rig = make_rig(
        tmp_path, table_size=32, pin_limit=500, routes="192.168.48.0/20 via 10.0.0.254", probe_ip="10.0.0.250"
    )
    switch = rig.connect(mode=mode, port_names={6: "dsr-gre"})
    rig.setup_web(protocol="tcp")
    rig.service.create_vip({"name": "www6", "ip": "2001:db8::100", "protocol": "tcp", "port": 80, "pool": "web"})
    routed = [{"ip": f"192.168.5{n}.2", "forwarding": "dscp"} for n in (1, 2)]
    rig.service.create_pool({"name": "routed", "backends": routed, "health_check": {"kind": "none"}})
    rig.service.create_vip({"name": "l3", "ip": "10.0.0.102", "protocol": "tcp", "port": 80, "pool": "routed"})
    tunnelled = [{"ip": "192.168.56.2", "forwarding": "gre"}]
    rig.service.create_pool({"name": "tunnelled", "backends": tunnelled, "health_check": {"kind": "none"}})
    rig.service.create_vip({"name": "gre", "ip": "10.0.0.103", "protocol": "tcp", "port": 80, "pool": "tunnelled"})
    rig.answer_arp("10.0.0.254", "02:00:00:00:00:fe", 5)
    rig.service.create_vip({"name": "dns", "ip": "10.0.0.53", "protocol": "udp", "pool": "web", "hash": "source_ip"})
    rig.service.create_vip(
        {"name": "dns5", "ip": "10.0.0.54", "protocol": "udp", "port": 53, "pool": "web", "hash": "5tuple"}
    )
    for name, protocol, port, backend_port in (("tls", "tcp", 443, 8443), ("dns6", "udp", 53, 5353)):
        rig.service.create_vip(
            {"name": name, "ip": "10.0.0.100", "protocol": protocol, "port": port, "backend_port": backend_port}
            | {"pool": "web", "hash": "5tuple"}
        )
    rig.answer_arp("10.0.0.11", *BACKENDS["10.0.0.11"])
    if mode == "ovs":
        rig.in_use()
    rig.resolve_all()
    rig.learn("02:00:00:00:00:01", 1)
    rules = switch.rules()
    if mode == "ovs":  # the kinds this set is meant to hold are in it
        fields = {name for rule in rules for name, _value in rule.match}
        actions = {getattr(a, "field", type(a).__name__) for rule in rules for a in rule.actions}
        assert {"reg7", "ipv6_nd_target", "ipv6_src"} <= fields and {"nd_reserved", "DecTtl", "tun_ipv4_dst"} <= actions
    return rules


@pytest.mark.parametrize("mode", ["ovs", "plain"])
def test_every_rule_serialises_and_its_match_reads_back_as_its_key(tmp_path, mode):
    rules = all_rules(tmp_path, mode)
    assert len(rules) > 50
    for rule in rules:
        message = ofp.to_message(FlowAdd(rule), DATAPATH)
        message.serialize()
        assert message.cookie == rule.cookie
        parsed = ofproto_v1_3_parser.OFPFlowMod.parser(
            DATAPATH, message.version, message.msg_type, message.msg_len, message.xid, bytes(message.buf)
        )
        stat = type(
            "Stat",
            (),
            {"table_id": parsed.table_id, "priority": parsed.priority, "match": parsed.match, "cookie": parsed.cookie},
        )
        assert ofp.installed_key(stat) == (rule.key, rule.cookie)


def test_open_vswitch_accepts_every_kind_of_rule(tmp_path):
    """Open vSwitch's own decoder reads one rule of each table and priority
    (it refuses, say, a Nicira field placed before its prerequisites)."""
    import subprocess

    kinds = {}
    for rule in all_rules(tmp_path, "ovs"):
        kinds.setdefault((rule.table, rule.priority, tuple(name for name, _ in rule.match)), rule)
    assert len(kinds) > 20
    for rule in kinds.values():
        printed = subprocess.run(
            ["ovs-ofctl", "ofp-print", ofp.encode_flow_add(rule, 1).hex()], capture_output=True, text=True
        ).stdout
        assert "ADD" in printed and "error" not in printed, (rule, printed)


def test_other_commands_serialise(tmp_path):
    rule = all_rules(tmp_path, "ovs")[0]
    for command in (
        FlowDelete(*rule.key),
        FlowDeleteByCookie(1 << 58, (1 << 64) - 1),
        PacketOut(b"\x00" * 60, "flood"),
        PacketOut(b"\x00" * 60, 3),
        Barrier(),
    ):
        message = ofp.to_message(command, DATAPATH)
        message.serialize()
        assert len(message.buf) >= 8


def test_a_probe_through_the_gre_tunnel_sets_the_tunnels_destination_before_it_goes_out():
    import subprocess

    message = ofp.to_message(PacketOut(b"\x00" * 60, 6, tunnel="192.168.56.2"), DATAPATH)
    message.serialize()
    printed = subprocess.run(["ovs-ofctl", "ofp-print", bytes(message.buf).hex()], capture_output=True, text=True)
    assert "actions=set_field:192.168.56.2->tun_dst,output:6" in printed.stdout, printed


def test_hash_group_handover_pins_and_multipath_encode_the_open_vswitch_extensions(tmp_path):
    import subprocess

    from ryu_dsr.flows.compute import Handover, SlotTarget, SwitchPlan, hash_group, slot_rules
    from ryu_dsr.flows.family import IPV4
    from ryu_dsr.flows.pipeline import Moved, Table

    rules = all_rules(tmp_path, "ovs")
    vip = next(r for r in rules if r.table == Table.INGRESS and r.match_dict().get("ipv4_dst") == "10.0.0.100")
    assert isinstance(ofp.to_action(vip.actions[1]), ofproto_v1_3_parser.OFPActionGroup)
    decide = next(r for r in rules if r.table == Table.DECIDE and r.actions[0].src == "dp_hash")
    move = ofp.to_action(decide.actions[0])
    assert move.src_field == "_dp_hash" and move.n_bits == 5  # 32 slots
    dns = next(r for r in rules if r.table == Table.DECIDE and type(r.actions[0]).__name__ == "Multipath")
    assert ofp.to_action(dns.actions[0]).fields == ofp.HASH_FIELDS["nw_src"]
    handover = next(r for r in rules if r.table == Table.MOVED and r.priority == Moved.SYN and len(r.actions) == 4)
    learn = ofp.to_action(handover.actions[2])
    assert learn.subtype == ofp.NXAST_LEARN2
    # a moved slot's rule: its new backend, the backends it names for table MOVED
    old, new = (SlotTarget(f"02:00:00:00:00:0{n}", n) for n in (1, 2))
    plan = SwitchPlan(mode="ovs", l2="learning", probe_mac="02:00:00:00:00:ff")
    (moved,) = slot_rules(plan, 7, 3, 32, new, frozenset({6, 17}), Handover(old, True, True), (IPV4,))
    # Open vSwitch's own decoder reads the flow mods and the group as meant
    group = ofp.to_message(hash_group(), DATAPATH)
    group.serialize()
    flow, slot, group_text = (
        subprocess.run(["ovs-ofctl", "ofp-print", message.hex()], capture_output=True, text=True, check=True).stdout
        for message in (ofp.encode_flow_add(handover, 1), ofp.encode_flow_add(moved, 2), bytes(group.buf))
    )
    assert "learn(table=2" in flow and "limit=500" in flow and "NXM_NX_REG3[]" in flow, flow
    assert "result_dst=NXM_NX_REG4[0]" in flow and "resubmit(,6)" in flow, flow
    assert "fin_idle_timeout=20" in flow and "idle_timeout=300" in flow
    assert "set_field:0x2->reg8" in slot and "set_field:0x1->reg9" in slot and "set_field:0x1->reg10" in slot, slot
    assert "set_field:02:00:00:00:00:02->eth_dst" in slot and slot.rstrip().endswith("resubmit(,13)"), slot
    assert "type=select" in group_text and "resubmit(,1)" in group_text, group_text


@pytest.mark.parametrize("mode", ["ovs", "plain"])
def test_the_fast_flow_add_encoding_is_byte_for_byte_ryus(tmp_path, mode):
    for rule in all_rules(tmp_path, mode):
        for reset in (False, True):  # (a write that starts the flow's counters again: OFPFF_RESET_COUNTS)
            message = ofp.to_message(FlowAdd(rule, reset), DATAPATH)
            message.set_xid(77)
            message.serialize()
            assert ofp.encode_flow_add(rule, 77, reset) == bytes(message.buf), rule


def test_a_bundled_flow_change_is_byte_for_byte_ryus_bundle_add(tmp_path):
    """A step's flow changes go to Open vSwitch in an ONF bundle (applied at
    once at the commit): each as Ryu's own bundle-add message would carry it."""
    from ryu_dsr.flows.rules import FlowDelete

    commands = [FlowAdd(rule) for rule in all_rules(tmp_path, "ovs")]
    commands += [FlowDelete(*command.rule.key) for command in commands[:20]]
    for command in commands:
        assert ofp.bundled(command) != ofp.answers_neighbours(command)
        inner = ofp.to_message(command, DATAPATH)
        message = ofp.parser.ONFBundleAddMsg(DATAPATH, 9, ofp.BUNDLE_FLAGS, inner, [])
        message.set_xid(77)
        message.serialize()
        assert ofp.encode_bundle_add(command, 9, 77, DATAPATH) == bytes(message.buf), command


@pytest.mark.parametrize("mode", ["ovs", "plain"])
def test_flow_stats_read_lazily_equal_ryus_own_parse(tmp_path, mode):
    """The switch's flows read on connect: same key, cookie and (when read)
    instructions as Ryu's full parse."""
    import struct

    for rule in all_rules(tmp_path, mode):
        body = ofp.encode_flow_add(rule, 1)[48:]  # match and instructions of the flow mod
        head = struct.pack(
            ofproto_v1_3.OFP_FLOW_STATS_0_PACK_STR,
            ofproto_v1_3.OFP_FLOW_STATS_0_SIZE + len(body),
            rule.table,
            1,
            2,
            rule.priority,
            rule.idle_timeout,
            0,
            0,
            rule.cookie,
            3,
            4,
        )
        # a traffic poll reads the MAC from the raw match (parsed by nobody)
        fields = dict(rule.match)
        mac = fields.get("eth_dst") or fields.get("eth_src")
        mac = mac if isinstance(mac, str) else None
        counted = ofp.counted(ofp.LazyFlowStats.parser(head + body, 0))
        assert counted == (rule.table, rule.priority, rule.cookie, mac, fields.get("reg7"), 3, 4), rule
        lazy = ofp.LazyFlowStats.parser(head + body, 0)
        full = ofproto_v1_3_parser.OFPFlowStats.parser(head + body, 0)
        assert ofp.installed_key(lazy) == ofp.installed_key(full) == (rule.key, rule.cookie)
        assert [i.to_jsondict() for i in lazy.instructions] == [i.to_jsondict() for i in full.instructions]
    assert ofproto_v1_3_parser.OFPFlowStatsReply.cls_stats_body_cls is ofp.LazyFlowStats


def test_one_client_address_holds_at_most_its_share_of_rest_connections():
    """The REST listener hands out at most ``cap`` connections per client
    address; the next is answered 503 and closed; a place comes back when
    a connection is closed, or dropped by a handler that never closed it."""
    import gc
    import socket

    from ryu_dsr.ofp import ClientCap

    class Listener:  # the listening socket's accept, fed by real socket pairs
        def __init__(self):
            self.waiting = []

        def accept(self):
            return self.waiting.pop(0)

    listener, clients = Listener(), []

    def arrive(address):
        server_end, client_end = socket.socketpair()
        clients.append(client_end)
        listener.waiting.append((server_end, (address, 40000 + len(clients))))

    cap = ClientCap(listener, 2)
    for _ in range(2):
        arrive("10.0.0.1")
    held = [cap.accept()[0] for _ in range(2)]
    arrive("10.0.0.1")  # a third from the same address: refused
    arrive("10.0.0.2")  # another address: served
    other, (address, _port) = cap.accept()
    assert address == "10.0.0.2" and cap.refused == 1
    clients[2].settimeout(1)
    assert clients[2].recv(4096).startswith(b"HTTP/1.1 503")
    held.pop().close()  # closed: its place comes back
    arrive("10.0.0.1")
    again = cap.accept()[0]
    del again  # dropped without close (a handler that failed): collected, its place comes back
    gc.collect()
    arrive("10.0.0.1")
    last, (address, _port) = cap.accept()
    assert address == "10.0.0.1" and cap.refused == 1
    assert cap.open == {"10.0.0.1": 2, "10.0.0.2": 1}
    other.close()
    assert cap.open == {"10.0.0.1": 2}
    held.pop().close()
    last.close()
    last.close()  # twice: its place comes back once
    assert cap.open == {}


def test_the_connection_tracker_rules_serialise_read_back_and_open_vswitch_accepts_them(tmp_path):
    """handover_tracking = conntrack: the ct actions (commit with a label;
    lookup into TRACKED) and TRACKED's ct_label match, through Ryu and Open
    vSwitch's own decoder."""
    import subprocess

    from ryu_dsr.flows.pipeline import Table

    rig = make_rig(tmp_path, handover_tracking="conntrack", conntrack_zone=1493)
    switch = rig.connect()
    rig.setup_web(protocol="tcp")
    rig.resolve_all()
    rig.settle()
    rig.in_use()
    rig.service.patch_backend("web", "10.0.0.13", {"weight": 50})
    rig.pass_hold()
    rules = [
        r for r in switch.rules() if r.table == Table.TRACKED or any(type(a).__name__ == "Track" for a in r.actions)
    ]
    assert {r.table for r in rules} == {Table.SLOTS, Table.TRACKED}
    kinds = {}
    for rule in rules:
        kinds.setdefault((rule.table, rule.priority), rule)
        message = ofp.to_message(FlowAdd(rule), DATAPATH)
        message.serialize()
        parsed = ofproto_v1_3_parser.OFPFlowMod.parser(
            DATAPATH, message.version, message.msg_type, message.msg_len, message.xid, bytes(message.buf)
        )
        stat = type("Stat", (), {"table_id": parsed.table_id, "priority": parsed.priority, "match": parsed.match})
        stat.cookie = parsed.cookie
        assert ofp.installed_key(stat) == (rule.key, rule.cookie)
    for rule in kinds.values():
        printed = subprocess.run(
            ["ovs-ofctl", "ofp-print", ofp.encode_flow_add(rule, 1).hex()], capture_output=True, text=True
        ).stdout
        assert "ADD" in printed and "error" not in printed, (rule, printed)
        if rule.table == Table.SLOTS:
            assert "ct(" in printed and "zone=1493" in printed, printed
    assert any(
        "ct_label="
        in subprocess.run(
            ["ovs-ofctl", "ofp-print", ofp.encode_flow_add(r, 1).hex()], capture_output=True, text=True
        ).stdout
        for r in kinds.values()
        if r.table == Table.TRACKED
    )


def test_a_step_goes_as_one_bundle_committed_before_what_is_not_in_it(tmp_path):
    """A step's flow changes go into one bundle, committed before its barrier;
    a rule the switch may refuse alone (an IPv6 neighbour answer) goes on its
    own, the bundle before it committed and a new one opened after, so the
    step keeps its order; each commit is counted on the switch."""
    import types

    from ryu_dsr.session import Session
    from ryu_dsr.switches import Switch
    from ryu_dsr.writer import Writers

    rules = all_rules(tmp_path, "ovs")
    plain = [FlowAdd(rule) for rule in rules if not ofp.answers_neighbours(FlowAdd(rule))][:3]
    answer = next(FlowAdd(rule) for rule in rules if ofp.answers_neighbours(FlowAdd(rule)))
    switch = Switch(1, "ovs")
    writers = Writers(types.SimpleNamespace(switches={1: switch}), {}, lambda: True, None, None)
    datapath = FakeDatapath()
    session = Session(datapath, None)
    for command in [*plain[:2], answer, plain[2], FlowDelete(*plain[0].rule.key), Barrier()]:
        writers.transmit(session, command, bundle=True)
    assert datapath.kinds() == [
        ("open", 1), ("add", 1), ("add", 1), ("commit", 1),
        ("flow", 0),
        ("open", 2), ("add", 2), ("add", 2), ("commit", 2),
        ("barrier", 0),
    ]  # fmt: skip
    assert switch.bundles == 2
    datapath.stream = b""
    for command in [*plain, Barrier()]:  # not on Open vSwitch: one by one
        writers.transmit(session, command, bundle=False)
    assert datapath.kinds() == [("flow", 0)] * 3 + [("barrier", 0)]


def test_a_moves_slot_counters_are_asked_for_after_the_writes_queued_with_them(tmp_path):
    """The check of a move reads the pool's slot counters once the step
    that puts its slots in their hold is committed on the switch (the
    switch handles one connection's messages in order): a connection
    opening after the read is then pinned where it went."""
    import queue
    import types

    from ryu_dsr.effects import Effects
    from ryu_dsr.session import Session
    from ryu_dsr.switches import Switch
    from ryu_dsr.writer import Writers

    rules = all_rules(tmp_path, "ovs")
    step = [FlowAdd(rule) for rule in rules if not ofp.answers_neighbours(FlowAdd(rule))][:2] + [Barrier()]
    switch = Switch(1, "ovs")
    steps = [step]
    switches = types.SimpleNamespace(
        get=lambda dpid: switch,
        pending=lambda dpid: bool(steps),
        step=lambda dpid, rules_of: steps.pop(),
        flow_mods=lambda dpid: 0,
        writable=lambda dpid: False,
        switches={1: switch},
    )
    datapath = FakeDatapath()
    session = Session(datapath, queue.Queue())
    asked = []  # what the switch had been sent when the counters were asked for
    writers = Writers(
        types.SimpleNamespace(switches=switches, rules=types.SimpleNamespace(rules_of=None)),
        {1: session},
        lambda: True,
        lambda session, pool_uid: asked.append((pool_uid, datapath.kinds())),
        None,
    )
    writers.carry_out(Effects(writes={1}, counts={(1, 7)}))
    assert asked == []  # not before the writer wrote
    session.outbox.put(None)
    writers.drain(session)
    assert asked == [(7, [("open", 1), ("add", 1), ("add", 1), ("commit", 1), ("barrier", 0)])]
    assert not session.counts_due
    session.outbox = queue.Queue()
    writers.carry_out(Effects(counts={(1, 8)}))  # nothing to write: asked at the writer's next turn
    session.outbox.put(None)
    writers.drain(session)
    assert [uid for uid, _sent in asked] == [7, 8] and session.outbox.qsize() == 0
