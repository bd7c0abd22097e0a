"""A switch's OpenFlow connection that is not a socket: it keeps what the
controller sends (Ryu messages, and every byte in order)."""

from __future__ import annotations

import struct

from ryu.ofproto import ofproto_v1_3, ofproto_v1_3_parser


class FakeDatapath:
    """Takes what the shell and its writers send and keeps it, as a
    switch's socket would."""

    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser

    def __init__(self, dpid: int = 1) -> None:
        self.id = dpid
        self.xid = 0
        self.messages: list = []  # Ryu messages (requests, barriers, bundle controls)
        self.flow_adds = 0  # pieces sent as encoded bytes (flow adds, bundles' messages)
        self.stream = b""  # everything sent, in order

    def set_xid(self, msg) -> None:
        self.xid += 1
        msg.set_xid(self.xid)

    def send_msg(self, msg) -> bool:
        if msg.xid is None:
            self.set_xid(msg)
        msg.serialize()
        self.messages.append(msg)
        self.stream += bytes(msg.buf)
        return True

    def send(self, data: bytes) -> bool:
        self.flow_adds += 1
        self.stream += bytes(data)
        return True

    def sent(self, kind) -> list:
        return [m for m in self.messages if isinstance(m, kind)]

    def kinds(self) -> list[tuple[str, int]]:
        """(what, bundle id or 0) of each message sent, in order."""
        out, at = [], 0
        while at < len(self.stream):
            _version, kind, length, _xid = struct.unpack_from("!BBHI", self.stream, at)
            if kind == ofproto_v1_3.OFPT_EXPERIMENTER:
                _exp, exp_type, bundle, control = struct.unpack_from("!IIIH", self.stream, at + 8)
                if exp_type == ofproto_v1_3.ONF_ET_BUNDLE_CONTROL:
                    out.append(({0: "open", 4: "commit", 6: "discard"}[control], bundle))
                else:
                    out.append(("add", bundle))
            else:
                names = {ofproto_v1_3.OFPT_FLOW_MOD: "flow", ofproto_v1_3.OFPT_BARRIER_REQUEST: "barrier"}
                out.append((names.get(kind, str(kind)), 0))
            at += length
        return out
