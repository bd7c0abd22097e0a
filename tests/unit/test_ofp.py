"""Translation of plain rules to OpenFlow 1.3 messages (Ryu), and back."""

from __future__ import annotations

import pytest
from ryu.ofproto import ofproto_protocol, ofproto_v1_3, ofproto_v1_3_parser
from ryu_dsr.flows.rules import Barrier, FlowAdd, FlowDelete, FlowDeleteByCookie, PacketOut

from ryu_dsr import ofp
from tests.conftest import make_rig

DATAPATH = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)


def all_rules(tmp_path, mode):
    rig = make_rig(tmp_path, table_size=31)
    switch = rig.connect(mode=mode)
    rig.setup_web(protocol="tcp")
    rig.balancer.create_vip({"name": "dns", "ip": "10.0.0.53", "protocol": "udp", "pool": "web", "hash": "source_ip"})
    rig.resolve_all()
    rig.learn("02:00:00:00:00:01", 1)
    return switch.rules()


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


def test_learned_pin_and_multipath_encode_the_open_vswitch_extensions(tmp_path):
    rules = all_rules(tmp_path, "ovs")
    slot = next(r for r in rules if r.table == 3)
    learn = ofp.to_action(slot.actions[1])
    assert isinstance(learn, ofproto_v1_3_parser.NXActionLearn)
    assert learn.table_id == 1 and learn.cookie >> 56 == 0x04 and learn.fin_idle_timeout == 5
    decide = next(r for r in rules if r.table == 2 and r.priority == 100)
    multipath = ofp.to_action(decide.actions[0])
    assert multipath.max_link == 30 and multipath.fields == ofp.HASH_FIELDS["l3l4"]


@pytest.mark.parametrize("mode", ["ovs", "plain"])
def test_the_fast_flow_add_encoding_is_byte_for_byte_ryus(tmp_path, mode):
    for rule in all_rules(tmp_path, mode):
        message = ofp.to_message(FlowAdd(rule), DATAPATH)
        message.set_xid(77)
        message.serialize()
        assert ofp.encode_flow_add(rule, 77) == bytes(message.buf), rule


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
        lazy = ofp.LazyFlowStats.parser(head + body, 0)
        full = ofproto_v1_3_parser.OFPFlowStats.parser(head + body, 0)
        assert ofp.installed_key(lazy) == ofp.installed_key(full) == (rule.key, rule.cookie)
        assert [i.to_jsondict() for i in lazy.instructions] == [i.to_jsondict() for i in full.instructions]
    assert ofproto_v1_3_parser.OFPFlowStatsReply.cls_stats_body_cls is ofp.LazyFlowStats
