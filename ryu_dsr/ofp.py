"""Every Ryu import of the project, and the translation between the plain
rules of ``ryu_dsr.flows`` and OpenFlow 1.3 messages with Nicira extensions."""

from __future__ import annotations

import functools
import json
import logging
import ssl
import struct
import time
import warnings
import weakref
from typing import Any, NamedTuple

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")  # Ryu's hub imports eventlet

import eventlet.wsgi
from ryu import cfg  # noqa: F401  (ryu-manager's own ConfigOpts: cfg.CONF)
from ryu.app.wsgi import ControllerBase, WSGIApplication, route  # noqa: F401  (re-exported for the shell)
from ryu.base.app_manager import RyuApp  # noqa: F401
from ryu.controller import ofp_event  # noqa: F401
from ryu.controller.handler import (  # noqa: F401
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from ryu.lib import hub, type_desc  # noqa: F401
from ryu.ofproto import nicira_ext, ofproto_common, ofproto_parser, oxm_fields
from ryu.ofproto import ofproto_v1_3 as ofp
from ryu.ofproto import ofproto_v1_3_parser as parser

from ryu_dsr.flows.pipeline import REG_BACKEND
from ryu_dsr.flows.rules import (  # noqa: F401  (Barrier, PacketOut re-exported for the shell)
    Barrier,
    Command,
    DecTtl,
    Drop,
    FlowAdd,
    FlowDelete,
    FlowDeleteByCookie,
    Group,
    GroupAdd,
    LearnPin,
    MeterSet,
    Move,
    Multipath,
    NormalFragments,
    Output,
    PacketOut,
    Resubmit,
    Rule,
    SetField,
    Track,
    match_items,
    shared_pair,
)

OF_VERSION = ofp.OFP_VERSION
LOG = logging.getLogger("ryu_dsr")


class _EricssonOxm(oxm_fields._OxmClass):
    """OXM class 0x1000, where Open vSwitch (2.12+, userspace datapath)
    puts the fields an IPv6 Neighbor Advertisement made from a solicitation
    needs: the R/S/O flags word and the option type. Ryu 4.34 knows neither."""

    _class = 0x1000


def teach_nd_fields() -> None:
    """Add ``nd_reserved`` and ``nd_options_type`` to Ryu's OpenFlow 1.3
    fields (matches and set-fields, both ways), once."""
    if "nd_reserved" in {field.name for field in ofp.oxm_types}:
        return
    ofp.oxm_types.extend(
        [_EricssonOxm("nd_reserved", 1, type_desc.Int4), _EricssonOxm("nd_options_type", 2, type_desc.Int1)]
    )
    oxm_fields.generate(ofp.__name__)


teach_nd_fields()


def limit_rest_connections(idle_timeout: float, per_client: int = 0) -> None:
    """Ryu starts eventlet's WSGI server without a socket timeout: a client
    that opens connections and sends nothing holds one of its 1,024 green
    threads each, for ever, and 1,024 of them stop the REST API. With a
    timeout, a connection that says nothing for ``idle_timeout`` seconds
    is closed. ``per_client`` (0: no limit) caps the connections one client
    address holds at once: one more is answered 503 and closed, so one
    client cannot take the server's threads from the others."""

    def serve_forever(server) -> None:
        server.logger = hub.LoggingWrapper()
        listener = ClientCap(server.server, per_client) if per_client else server.server
        eventlet.wsgi.server(listener, server.handle, server.logger, socket_timeout=idle_timeout)

    hub.WSGIServer.serve_forever = serve_forever


TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s"
)


class ClientCap:
    """A listening socket whose ``accept`` hands out at most ``cap``
    connections per client address at once; the count drops when a
    connection is closed (or its socket is collected)."""

    def __init__(self, sock, cap: int) -> None:
        self.sock = sock
        self.cap = cap
        self.open: dict[str, int] = {}
        self.refused = 0
        self.last_log = 0.0

    def __getattr__(self, name: str):
        return getattr(self.sock, name)

    def accept(self):
        while True:
            conn, address = self.sock.accept()
            client = address[0] if isinstance(address, tuple) else str(address)
            if self.open.get(client, 0) < self.cap:
                self.open[client] = self.open.get(client, 0) + 1
                return CountedConnection(conn, self, client), address
            self._refuse(conn, client)

    def release(self, client: str) -> None:
        left = self.open.get(client, 0) - 1
        if left > 0:
            self.open[client] = left
        else:
            self.open.pop(client, None)

    def _refuse(self, conn, client: str) -> None:
        self.refused += 1
        body = json.dumps(
            {
                "error": "too_many_connections",
                "message": f"{client} holds {self.cap} connections to the REST API already (rest_max_per_client)",
            }
        ).encode()
        try:
            conn.settimeout(0)
            conn.send(TOO_MANY % (len(body), body))
        except OSError:
            pass
        finally:
            conn.close()
        now = time.monotonic()
        if now - self.last_log >= 60:
            self.last_log = now
            LOG.warning("REST: %s is at %d connections: refused %d so far", client, self.cap, self.refused)


class CountedConnection:
    """A client connection that gives its place back once, when closed or
    collected (a handler that fails before closing it)."""

    def __init__(self, conn, cap: ClientCap, client: str) -> None:
        self._conn = conn
        self._release = weakref.finalize(self, cap.release, client)

    def __getattr__(self, name: str):
        return getattr(self._conn, name)

    def close(self) -> None:
        self._conn.close()
        self._release()


def fix_openflow_tls() -> None:
    """Ryu 4.34's TLS listener builds its SSL context from arguments it
    consumes on the first connection: every later one (a switch that
    reconnects) is wrapped without a certificate and fails. Here the
    context is built once and used for every connection, TLS 1.2 at least,
    and a failed handshake is one log line."""
    original = hub.StreamServer.__init__
    if getattr(original, "fixed_tls", False):
        return

    def __init__(server, listen_info, handle=None, backlog=None, spawn="default", **ssl_args) -> None:
        original(server, listen_info, handle, backlog, spawn)
        if not ssl_args:
            return
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(ssl_args["certfile"], ssl_args["keyfile"])
        if ssl_args.get("ca_certs"):
            context.load_verify_locations(ssl_args["ca_certs"])
            context.verify_mode = ssl_args.get("cert_reqs", ssl.CERT_REQUIRED)

        def wrap_and_handle(sock, address) -> None:
            try:
                wrapped = context.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError) as error:
                LOG.warning("OpenFlow TLS handshake with %s failed: %s", address[0], error)
                sock.close()
                return
            handle(wrapped, address)

        server.handle = wrap_and_handle

    __init__.fixed_tls = True
    hub.StreamServer.__init__ = __init__


def yield_between_messages() -> None:
    """Ryu 4.34's receive loop parses every message a switch has sent
    before it lets another green thread run (it yields once every 2,048
    messages): a poll of 25,000 flows comes back as some fifty replies,
    parsed back to back, and for that 80-140 ms nothing else runs (REST,
    other switches, barriers; measured by the loop's lateness). Each parse
    now ends with a yield."""
    original = ofproto_parser.msg
    if getattr(original, "yields", False):
        return

    def msg(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        finally:
            hub.sleep(0)

    msg.yields = True
    ofproto_parser.msg = msg


SPECIAL_PORTS = {
    "in_port": ofp.OFPP_IN_PORT,
    "flood": ofp.OFPP_FLOOD,
    "controller": ofp.OFPP_CONTROLLER,
    "normal": ofp.OFPP_NORMAL,
    "all": ofp.OFPP_ALL,
}
# Open vSwitch's nx_hash_fields (Ryu 4.34 names only the first two).
HASH_FIELDS = {"eth_src": 0, "symmetric_l4": 1, "l3l4": 3, "nw_src": 4}
L4_NXM = {6: ("tcp_src_nxm", "tcp_dst_nxm"), 17: ("udp_src_nxm", "udp_dst_nxm")}
FIELD_NAMES = {"dp_hash": "_dp_hash"}  # Ryu's name of Open vSwitch's experimenter OXM
NXAST_LEARN2 = 45  # learn with a limit (Open vSwitch 2.8+; Ryu 4.34 has no class for it)
NX_LEARN_F_WRITE_RESULT = 1 << 2  # learn2 writes whether it learned into a field
AFTER_PREREQUISITES = {"ip_frag"}  # Nicira match fields that need eth_type before them
OFPGC_ADD_OR_MOD = 0x8000  # Open vSwitch: create a group or replace it in place
ADDRESS_BITS = {"ipv4_src": 32, "ipv4_dst": 32, "ipv6_src": 128, "ipv6_dst": 128}  # a learned pin's address fields


def _port(port) -> int:
    return SPECIAL_PORTS[port] if isinstance(port, str) else port


_FIELD_ORDER: dict[tuple[str, ...], list[int]] = {}


def to_match(items) -> parser.OFPMatch:
    """An OFPMatch from canonical (field, value) pairs. Ryu's keyword form
    normalises and re-sorts every field of every message (most of the cost
    of a flow mod); the canonical values already are Ryu's user form, so
    only the OXM order of each set of field names is worked out, once."""
    names = tuple(name for name, _value in items)
    order = _FIELD_ORDER.get(names)
    if order is None:
        sorted_names = [name for name, _value in parser.OFPMatch(**dict(items))._fields2]
        # Ryu sorts Nicira fields (class 0x0001) before OpenFlow's; Open
        # vSwitch wants a field's prerequisites (eth_type) before it.
        sorted_names.sort(key=lambda name: name in AFTER_PREREQUISITES)
        order = _FIELD_ORDER[names] = [names.index(name) for name in sorted_names]
    return parser.OFPMatch(_ordered_fields=[items[i] for i in order])


@functools.lru_cache(maxsize=1 << 10)
def to_action(action):
    """The Ryu action of a (frozen, so cacheable) action: slot rules repeat
    a few actions thousands of times."""
    if isinstance(action, Output):
        max_len = action.max_len if action.port == "controller" else 0
        return parser.OFPActionOutput(_port(action.port), max_len)
    if isinstance(action, SetField):
        return parser.OFPActionSetField(**{action.field: action.value})
    if isinstance(action, Move):
        return parser.NXActionRegMove(
            src_field=FIELD_NAMES.get(action.src, action.src),
            dst_field=FIELD_NAMES.get(action.dst, action.dst),
            n_bits=action.n_bits,
            src_ofs=action.src_ofs,
            dst_ofs=action.dst_ofs,
        )
    if isinstance(action, Group):
        return parser.OFPActionGroup(action.group_id)
    if isinstance(action, DecTtl):
        return parser.OFPActionDecNwTtl()
    if isinstance(action, Resubmit):
        return parser.NXActionResubmitTable(table_id=action.table)  # in_port: OF1.0 IN_PORT, "keep"
    if isinstance(action, Multipath):
        return parser.NXActionMultipath(
            fields=HASH_FIELDS[action.fields],
            basis=action.basis,
            algorithm=nicira_ext.NX_MP_ALG_MODULO_N,
            max_link=action.n_links - 1,
            arg=0,
            ofs_nbits=nicira_ext.ofs_nbits(0, action.n_bits - 1),
            dst=action.dst,
        )
    if isinstance(action, LearnPin):
        return _learn(action)
    if isinstance(action, Track):
        return parser.NXActionCT(
            flags=nicira_ext.NX_CT_F_COMMIT if action.label is not None else 0,
            zone_src="",
            zone_ofs_nbits=action.zone,
            recirc_table=action.table if action.table is not None else nicira_ext.NX_CT_RECIRC_NONE,
            alg=0,
            actions=[] if action.label is None else [parser.OFPActionSetField(ct_label=action.label)],
        )
    raise TypeError(f"no OpenFlow form for {action!r}")


def _learn(pin: LearnPin):
    l4_src, l4_dst = L4_NXM[pin.ip_proto]
    specs = [parser.NXFlowSpecMatch(src=(reg, 0), dst=(reg, 0), n_bits=bits) for reg, bits in pin.regs]
    specs += [
        parser.NXFlowSpecMatch(src=pin.eth_type, dst=("eth_type_nxm", 0), n_bits=16),
        parser.NXFlowSpecMatch(src=pin.ip_proto, dst=("ip_proto_nxm", 0), n_bits=8),
        *(
            parser.NXFlowSpecMatch(src=(f"{a}_nxm", 0), dst=(f"{a}_nxm", 0), n_bits=ADDRESS_BITS[a])
            for a in pin.addresses
        ),
        parser.NXFlowSpecMatch(src=(l4_src, 0), dst=(l4_src, 0), n_bits=16),
        parser.NXFlowSpecMatch(src=(l4_dst, 0), dst=(l4_dst, 0), n_bits=16),
        parser.NXFlowSpecLoad(src=("eth_dst_nxm", 0), dst=("eth_dst_nxm", 0), n_bits=48),
        parser.NXFlowSpecLoad(src=1, dst=(pin.flag_reg, 0), n_bits=1),
        *(parser.NXFlowSpecLoad(src=(reg, 0), dst=(reg, 0), n_bits=32) for reg in pin.keep),
    ]
    learn = parser.NXActionLearn(
        table_id=pin.table,
        specs=specs,
        idle_timeout=pin.idle_timeout,
        hard_timeout=0,
        priority=pin.priority,
        cookie=pin.cookie,
        flags=NX_LEARN_F_WRITE_RESULT if pin.result else 0,
        fin_idle_timeout=pin.fin_idle_timeout,
        fin_hard_timeout=0,
    )
    if not pin.limit and not pin.result:
        return learn
    # nx_action_learn2: nx_action_learn's body, then limit, result_dst_ofs,
    # padding, the result field's header (when the flag asks for it), specs.
    body = learn.serialize_body()
    head = struct.calcsize(learn._fmt_str)
    result = bytearray()
    if pin.result:
        ofp.oxm_serialize_header(ofp.oxm_from_user_header(pin.result), result, 0)
    extra = struct.pack("!IHxx", pin.limit, 0) + bytes(result)
    return parser.NXActionUnknown(NXAST_LEARN2, bytes(body[:head]) + extra + bytes(body[head:]))


def to_instructions(rule: Rule) -> list:
    instructions = []
    if rule.meter is not None:
        instructions.append(parser.OFPInstructionMeter(rule.meter, ofp.OFPIT_METER))
    actions = [to_action(a) for a in rule.actions if not isinstance(a, Drop)]
    if actions:
        instructions.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
    if rule.write_metadata is not None:
        instructions.append(parser.OFPInstructionWriteMetadata(*rule.write_metadata))
    if rule.goto is not None:
        instructions.append(parser.OFPInstructionGotoTable(rule.goto))
    return instructions


def to_message(command: Command, datapath=None):
    """One OpenFlow message for a command; ``datapath`` may be None in tests."""
    if isinstance(command, FlowAdd):
        rule = command.rule
        return parser.OFPFlowMod(
            datapath,
            cookie=rule.cookie,
            table_id=rule.table,
            command=ofp.OFPFC_ADD,
            idle_timeout=rule.idle_timeout,
            priority=rule.priority,
            flags=ofp.OFPFF_RESET_COUNTS if command.reset else 0,
            match=to_match(rule.match),
            instructions=to_instructions(rule),
        )
    if isinstance(command, FlowDelete):
        return parser.OFPFlowMod(
            datapath,
            table_id=command.table,
            command=ofp.OFPFC_DELETE_STRICT,
            priority=command.priority,
            out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY,
            match=to_match(command.match),
        )
    if isinstance(command, FlowDeleteByCookie):
        return parser.OFPFlowMod(
            datapath,
            cookie=command.cookie,
            cookie_mask=command.mask,
            table_id=ofp.OFPTT_ALL,
            command=ofp.OFPFC_DELETE,
            out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY,
            match=parser.OFPMatch(),
        )
    if isinstance(command, GroupAdd):
        bucket = parser.OFPBucket(
            weight=1, watch_port=ofp.OFPP_ANY, watch_group=ofp.OFPG_ANY, actions=[to_action(a) for a in command.actions]
        )
        return parser.OFPGroupMod(datapath, OFPGC_ADD_OR_MOD, ofp.OFPGT_SELECT, command.group_id, [bucket])
    if isinstance(command, MeterSet):
        return meter_mod(command, datapath, ofp.OFPMC_ADD)
    if isinstance(command, NormalFragments):
        return parser.OFPSetConfig(datapath, ofp.OFPC_FRAG_NORMAL, ofp.OFPCML_NO_BUFFER)
    if isinstance(command, PacketOut):
        return parser.OFPPacketOut(
            datapath,
            buffer_id=ofp.OFP_NO_BUFFER,
            in_port=_port(command.in_port),
            actions=([parser.OFPActionSetField(tun_ipv4_dst=command.tunnel)] if command.tunnel else [])
            + [parser.OFPActionOutput(_port(port), 0) for port in _ports(command.port)],
            data=command.data,
        )
    if isinstance(command, Barrier):
        return parser.OFPBarrierRequest(datapath)
    raise TypeError(f"no OpenFlow form for {command!r}")


def meter_mod(command: MeterSet, datapath, how: int):
    band = parser.OFPMeterBandDrop(rate=command.rate, burst_size=command.burst)
    return parser.OFPMeterMod(datapath, how, ofp.OFPMF_PKTPS | ofp.OFPMF_BURST, command.meter_id, [band])


def meter_exists(msg) -> bool:
    """The switch refused a meter add because the meter exists."""
    return msg.type == ofp.OFPET_METER_MOD_FAILED and msg.code == ofp.OFPMMFC_METER_EXISTS


class LazyFlowStats(parser.OFPFlowStats):
    """A flow-stats entry whose instructions are parsed when first read.

    On connect (and on a resync) the controller reads every flow of the
    switch but needs only each flow's table, priority, match and cookie.
    Ryu parses every instruction of every entry, a learn action most of all:
    150,000 slot rules took the controller 50 s to read. Entries of this
    class keep the instruction bytes and parse them only if some code reads
    ``instructions``, so other Ryu apps see the same objects as before."""

    def __init__(self, *args, **kwargs) -> None:
        self._raw: tuple[bytes, int, int] | None = None
        self._raw_match: tuple[bytes, int] | None = None
        self._match = None
        super().__init__(*args, **kwargs)

    @property
    def match(self):
        """Parsed when first read: a traffic poll reads only a MAC from it
        (``counted``), and Ryu's match parser is most of a poll's cost."""
        if self._match is None and self._raw_match is not None:
            self._match = parser.OFPMatch.parser(*self._raw_match)
            self._raw_match = None
        return self._match

    @match.setter
    def match(self, value) -> None:
        self._match = value

    @property
    def instructions(self):
        if self._instructions is None and self._raw is not None:
            buf, offset, length = self._raw
            parsed = []
            while length > 0:
                instruction = parser.OFPInstruction.parser(buf, offset)
                parsed.append(instruction)
                offset += instruction.len
                length -= instruction.len
            self._instructions, self._raw = parsed, None
        return self._instructions

    @instructions.setter
    def instructions(self, value) -> None:
        self._instructions = value

    @classmethod
    def parser(cls, buf, offset):
        stats = cls()
        (
            stats.length,
            stats.table_id,
            stats.duration_sec,
            stats.duration_nsec,
            stats.priority,
            stats.idle_timeout,
            stats.hard_timeout,
            stats.flags,
            stats.cookie,
            stats.packet_count,
            stats.byte_count,
        ) = struct.unpack_from(ofp.OFP_FLOW_STATS_0_PACK_STR, buf, offset)
        offset += ofp.OFP_FLOW_STATS_0_SIZE
        stats._raw_match = (buf, offset)
        (match_length,) = struct.unpack_from("!H", buf, offset + 2)
        match_length = (match_length + 7) // 8 * 8
        length = stats.length - (ofp.OFP_FLOW_STATS_SIZE - ofp.OFP_MATCH_SIZE + match_length)
        stats.instructions = None
        stats._raw = (buf, offset + match_length, length)
        return stats


parser.OFPFlowStatsReply.cls_stats_body_cls = LazyFlowStats


def installed_key(stat) -> tuple[tuple, int]:
    """(rule key, cookie) of one flow-stats entry read from a switch, in the
    canonical form ``flows.rules`` uses."""
    raw = getattr(stat, "_raw_match", None)
    if raw is None:
        return (stat.table_id, stat.priority, match_items(**dict(stat.match._fields2))), stat.cookie
    return (stat.table_id, stat.priority, tuple(sorted(match_fields(*raw)))), stat.cookie  # as match_items makes it


_FIELD_CACHE: dict[bytes, tuple[str, object]] = {}  # one OXM TLV's bytes -> Ryu's (name, value)
FIELD_CACHE_SIZE = 1 << 18


def match_fields(buf, offset: int) -> list[tuple[str, object]]:
    """The (name, value) pairs Ryu's ``OFPMatch.parser`` makes of a match
    (its ``_fields2``), without the match object and the second, legacy
    parse Ryu does of every field: reading a switch's 80,000 flows on
    connect spent most of its 30 s there. The same field with the same
    value (an Ethernet type, a register's slot number) is decoded once."""
    (length,) = struct.unpack_from("!H", buf, offset + 2)
    at, end = offset + 4, offset + length
    pairs = []
    while at < end:
        (header,) = struct.unpack_from("!I", buf, at)
        size = 4 + (header & 0xFF)
        tlv = bytes(buf[at : at + size])
        pair = _FIELD_CACHE.get(tlv)
        if pair is None:
            number, value, mask, size = ofp.oxm_parse(buf, at)
            pair = shared_pair(ofp.oxm_to_user(number, value, mask))
            if len(_FIELD_CACHE) >= FIELD_CACHE_SIZE:
                _FIELD_CACHE.clear()
            _FIELD_CACHE[tlv] = pair
        pairs.append(pair)
        at += size
    return pairs


def flow_stats_request(datapath, table: int = ofp.OFPTT_ALL):
    return parser.OFPFlowStatsRequest(datapath, 0, table, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch())


def pin_count_request(datapath, table: int, cookie: int):
    """How many flows of ``table`` carry exactly ``cookie`` (one backend's
    pins): an aggregate request, so the switch sends a count, not the flows."""
    return parser.OFPAggregateStatsRequest(
        datapath, 0, table, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, 0xFFFFFFFFFFFFFFFF, parser.OFPMatch()
    )


def owned_flows_request(datapath, table: int, cookie: int, mask: int, match: dict | None = None):
    """The flows of ``table`` whose cookie is ``cookie`` under ``mask`` (an
    owner, or a kind of owner) and whose match is ``match`` or narrower."""
    return parser.OFPFlowStatsRequest(
        datapath, 0, table, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, mask, parser.OFPMatch(**(match or {}))
    )


def counter_entry(stat) -> tuple[int, int, int, dict, int]:
    """(table, priority, cookie, match fields, packets) of one flow-stats entry."""
    raw = getattr(stat, "_raw_match", None)
    pairs = match_fields(*raw) if raw is not None else stat.match._fields2
    return stat.table_id, stat.priority, stat.cookie, dict(pairs), stat.packet_count


_OXM_ETH_DST, _OXM_ETH_SRC = (0x8000 << 16) | (3 << 9), (0x8000 << 16) | (4 << 9)
_NXM_REG_BACKEND = (0x0001 << 16) | (int(REG_BACKEND.removeprefix("reg")) << 9)  # NXM_NX_REGn: class 1, field n


def _ports(port: int | str | tuple) -> tuple:
    return port if isinstance(port, tuple) else (port,)


def counted(stat) -> tuple[int, int, int, str | None, int | None, int, int]:
    """(table, priority, cookie, MAC, routed backend, packets, bytes) of one
    flow-stats entry of a traffic poll: the MAC is the match's Ethernet
    destination or source, the routed backend the uid a rule that routes to
    a dscp backend matches (``REG_BACKEND``), read from the OXM bytes
    without parsing the rest."""
    mac = routed = None
    if stat._raw_match is not None:
        buf, offset = stat._raw_match
        (length,) = struct.unpack_from("!H", buf, offset + 2)
        at, end = offset + 4, offset + length
        while at + 4 <= end:
            (header,) = struct.unpack_from("!I", buf, at)
            if header & 0xFFFFFE00 in (_OXM_ETH_DST, _OXM_ETH_SRC) and not header & 0x100:
                mac = ":".join(f"{b:02x}" for b in buf[at + 4 : at + 10])
            elif header & 0xFFFFFE00 == _NXM_REG_BACKEND and not header & 0x100:
                (routed,) = struct.unpack_from("!I", buf, at + 4)
            at += 4 + (header & 0xFF)
    else:
        fields = dict(stat.match._fields2)
        mac = fields.get("eth_dst") or fields.get("eth_src")
        routed = fields.get(REG_BACKEND)
    return stat.table_id, stat.priority, stat.cookie, mac, routed, stat.packet_count, stat.byte_count


def desc_stats_request(datapath):
    return parser.OFPDescStatsRequest(datapath, 0)


def port_desc_request(datapath):
    return parser.OFPPortDescStatsRequest(datapath, 0)


def more_replies(msg) -> bool:
    return bool(msg.flags & ofp.OFPMPF_REPLY_MORE)


def port_is_down(port) -> bool:
    return bool(port.state & ofp.OFPPS_LINK_DOWN) or bool(port.config & ofp.OFPPC_PORT_DOWN)


def is_switch_port(port_no: int) -> bool:
    """A physical or virtual port of the switch (not LOCAL, CONTROLLER...)."""
    return 0 < port_no <= ofp.OFPP_MAX


def port_status_down(msg) -> bool:
    return msg.reason == ofp.OFPPR_DELETE or port_is_down(msg.desc)


def is_ovs(desc) -> bool:
    text = f"{desc.mfr_desc} {desc.hw_desc}".lower()
    return "nicira" in text or "open vswitch" in text


def text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def answers_neighbours(command: Command) -> bool:
    """Whether ``command`` writes a rule that makes an IPv6 advertisement
    in the switch (the fields a kernel datapath refuses to set)."""
    return isinstance(command, FlowAdd) and any(
        isinstance(action, SetField) and action.field in ("nd_reserved", "nd_options_type", "ipv6_nd_tll")
        for action in command.rule.actions
    )


class AddSent(NamedTuple):
    """A flow add as remembered until the switch could refuse it: its key
    (the tuple the switch's index holds already) and cookie."""

    key: tuple
    cookie: int


def sent_form(command: Command) -> Any:
    """What is remembered of a command sent in a bundle (a hundred
    thousand of them: not the rule, nor a text)."""
    return AddSent(command.rule.key, command.rule.cookie) if isinstance(command, FlowAdd) else command


def describe(command: Any) -> str:
    """A short text naming a command, for errors the switch reports."""
    if isinstance(command, AddSent):
        table, priority, match = command.key
        return f"flow add table {table} priority {priority} cookie {command.cookie:#x} match {dict(match)}"
    if isinstance(command, FlowAdd):
        rule = command.rule
        return f"flow add table {rule.table} priority {rule.priority} cookie {rule.cookie:#x} match {dict(rule.match)}"
    if isinstance(command, FlowDelete):
        return f"flow delete table {command.table} priority {command.priority} match {dict(command.match)}"
    if isinstance(command, FlowDeleteByCookie):
        return f"flow delete cookie {command.cookie:#x}"
    if isinstance(command, GroupAdd):
        return f"group {command.group_id} (select, one bucket)"
    if isinstance(command, MeterSet):
        return f"meter {command.meter_id} ({command.rate} packets a second)"
    if isinstance(command, NormalFragments):
        return "switch config (normal fragment handling)"
    return type(command).__name__


@functools.lru_cache(maxsize=1 << 14)
def _instruction_bytes(
    actions: tuple, goto: int | None, write_metadata: tuple | None, meter: int | None = None
) -> bytes:
    """The encoded instructions of a rule body, cached: Ryu's encoding of a
    learn action costs far more than everything else in a flow mod, and
    every slot rule of a backend has the same one."""
    return _body_bytes(actions, goto, write_metadata, meter)


def _body_bytes(actions: tuple, goto: int | None, write_metadata: tuple | None, meter: int | None) -> bytes:
    """A rule body's instructions as Ryu encodes them (``to_instructions``),
    each action's bytes made once (``_action_bytes``)."""
    buf = b""
    if meter is not None:
        buf += struct.pack("!HHI", ofp.OFPIT_METER, 8, meter)
    encoded = b"".join(_action_bytes(action) for action in actions if not isinstance(action, Drop))
    if encoded:
        buf += struct.pack("!HH4x", ofp.OFPIT_APPLY_ACTIONS, 8 + len(encoded)) + encoded
    if write_metadata is not None:
        buf += struct.pack("!HH4xQQ", ofp.OFPIT_WRITE_METADATA, 24, *write_metadata)
    if goto is not None:
        buf += struct.pack("!HHB3x", ofp.OFPIT_GOTO_TABLE, 8, goto)
    return buf


@functools.lru_cache(maxsize=1 << 14)
def _action_bytes(action) -> bytes:
    """One action's encoding (a slot's backend MAC, a resubmit: the same few
    again and again; Ryu's encoding parses a MAC address each time)."""
    buf = bytearray()
    encoded = to_action(action)
    encoded.serialize(buf, 0)
    return bytes(buf).ljust(encoded.len, b"\0")  # (some write less than their length: Ryu pads with the next)


@functools.lru_cache(maxsize=1 << 16)
def _field_bytes(pair: tuple) -> bytes:
    """One (field, value) pair of a match as an OXM TLV."""
    number, value, mask = ofp.oxm_from_user(*pair)
    buf = bytearray()
    ofp.oxm_serialize(number, value, mask, buf, 0)
    return bytes(buf)


def _match_bytes(match: tuple) -> bytes:
    """The encoded (padded) OXM match, from the encoding of each of its
    pairs (shared by many matches: a slot number, a pool's register)."""
    names = tuple(name for name, _value in match)
    order = _FIELD_ORDER.get(names)
    if order is None:
        to_match(match)  # works the order out
        order = _FIELD_ORDER[names]
    fields = b"".join(_field_bytes(match[i]) for i in order)
    length = 4 + len(fields)
    return struct.pack("!HH", ofp.OFPMT_OXM, length) + fields + bytes(-length % 8)


def encode_flow_add(rule: Rule, xid: int, reset: bool = False) -> bytes:
    """An OFPT_FLOW_MOD (add) for ``rule``, byte for byte what Ryu's
    OFPFlowMod would encode (tests compare them), at a fraction of the cost;
    ``reset``: its counters start again (OFPFF_RESET_COUNTS)."""
    buf = bytearray(ofp.OFP_FLOW_MOD_SIZE - ofp.OFP_MATCH_SIZE)
    struct.pack_into(
        ofp.OFP_FLOW_MOD_PACK_STR0,
        buf,
        ofp.OFP_HEADER_SIZE,
        rule.cookie,
        0,
        rule.table,
        ofp.OFPFC_ADD,
        rule.idle_timeout,
        0,
        rule.priority,
        ofp.OFP_NO_BUFFER,
        0,
        0,
        ofp.OFPFF_RESET_COUNTS if reset else 0,
    )
    buf += _match_bytes(rule.match)
    if any(isinstance(action, LearnPin) for action in rule.actions):  # slot rules: shared by many
        buf += _instruction_bytes(rule.actions, rule.goto, rule.write_metadata, rule.meter)
    else:  # one rule's own instructions: not worth a cache entry
        buf += _body_bytes(rule.actions, rule.goto, rule.write_metadata, rule.meter)
    struct.pack_into(ofp.OFP_HEADER_PACK_STR, buf, 0, ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, len(buf), xid)
    return bytes(buf)


# -- bundles: a step of flow changes applied at once --
#
# Open vSwitch applies flow changes sent one by one one at a time (each
# publishes a new version of its tables); sent in a bundle, it applies them
# all at the commit, in one go: 195,000 flows take ``ovs-ofctl add-flows``
# 16-20 s one by one and 2.5 s as one bundle on this machine. OpenFlow 1.3
# has bundles as the ONF extension 230 (OpenFlow 1.4's, which Open vSwitch
# also reads with 1.3).

BUNDLE_FLAGS = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED


def bundled(command: Command) -> bool:
    """Whether a command goes into a step's bundle: flow changes, but those
    the switch may refuse on their own (IPv6 neighbour answers: a refusal
    must not take the rest of the step with it)."""
    return isinstance(command, (FlowAdd, FlowDelete, FlowDeleteByCookie)) and not answers_neighbours(command)


def bundle_control(datapath, bundle_id: int, kind: int):
    """Open (``ONF_BCT_OPEN_REQUEST``) or commit a bundle."""
    return parser.ONFBundleCtrlMsg(datapath, bundle_id, kind, BUNDLE_FLAGS, [])


def encode_bundle_add(command: Command, bundle_id: int, xid: int, datapath=None) -> bytes:
    """An ONF bundle-add message carrying ``command`` (the inner message's
    xid is the outer one's, as the extension asks)."""
    if isinstance(command, FlowAdd):
        inner = encode_flow_add(command.rule, xid, command.reset)
    else:
        message = to_message(command, datapath)
        message.set_xid(xid)
        message.serialize()
        inner = bytes(message.buf)
    length = ofp.OFP_HEADER_SIZE + 16 + len(inner)
    head = struct.pack(
        "!BBHIIIIxxH",
        ofp.OFP_VERSION,
        ofp.OFPT_EXPERIMENTER,
        length,
        xid,
        ofproto_common.ONF_EXPERIMENTER_ID,
        ofp.ONF_ET_BUNDLE_ADD_MESSAGE,
        bundle_id,
        BUNDLE_FLAGS,
    )
    return head + inner


# -- controller roles (several controllers of one switch) --

ROLE_NAMES = {ofp.OFPCR_ROLE_EQUAL: "equal", ofp.OFPCR_ROLE_MASTER: "master", ofp.OFPCR_ROLE_SLAVE: "slave"}


def role_request(datapath, master: bool, generation: int):
    """OFPT_ROLE_REQUEST: master or slave, with the cluster's generation id
    (the switch refuses one older than the newest it has seen)."""
    role = ofp.OFPCR_ROLE_MASTER if master else ofp.OFPCR_ROLE_SLAVE
    return parser.OFPRoleRequest(datapath, role, generation & ((1 << 64) - 1))


def role_query(datapath):
    """OFPT_ROLE_REQUEST that changes nothing: the reply carries the
    switch's generation id."""
    return parser.OFPRoleRequest(datapath, ofp.OFPCR_ROLE_NOCHANGE, 0)


def role_name(role: int) -> str:
    return ROLE_NAMES.get(role, str(role))


def role_refusal(msg) -> str | None:
    """Why a switch's error means it does not take us as master, or None."""
    if msg.type == ofp.OFPET_ROLE_REQUEST_FAILED and msg.code == ofp.OFPRRFC_STALE:
        return "our role request carries a stale generation id (a newer master exists)"
    if msg.type == ofp.OFPET_BAD_REQUEST and msg.code == ofp.OFPBRC_IS_SLAVE:
        return "we are slave there (a newer master took the switch)"
    return None
