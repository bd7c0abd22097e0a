"""Traffic counters read from the switches' flow statistics.

The pipeline counts as it forwards: in DECIDE each VIP has a rule for the
first packet of a TCP connection (SYN) and one for the rest of its
packets; in CHOSEN each backend (by MAC) has the same pair after SLOTS chose
it. The controller polls those two tables and keeps running totals: a
flow's counters start again at 0 when the flow is replaced, so each poll
adds what grew since the last one (or, after a reset, the new value). Rates
are over the last poll interval. Pure: entries and time come in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ryu_dsr.flows.pipeline import Chosen, Decide, Kind, Replies, Table, kind_of, uid_of

Entry = tuple[int, int, int, str | None, int, int]  # table, priority, cookie, MAC matched, packets, bytes


@dataclass
class Counts:
    packets: int = 0
    bytes: int = 0
    new_connections: int = 0  # requests: TCP SYN without ACK
    answered: int = 0  # replies: SYN-ACK (a connection answered)
    resets: int = 0  # replies: RST

    def add(self, packets: int, size: int, flag: str = "") -> None:
        self.packets += packets
        self.bytes += size
        if flag:
            setattr(self, flag, getattr(self, flag) + packets)

    def merge(self, other: Counts) -> None:
        for name in ("packets", "bytes", "new_connections", "answered", "resets"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self, names=("packets", "bytes", "new_connections")) -> dict:
        return {name: getattr(self, name) for name in names}


REPLY_FIELDS = ("packets", "bytes", "answered", "resets")
PASSIVE_MIN_RATE = 1.0  # new connections a second below which no answered share is given
# (table, priority) of a counting rule -> what its packets are; other rules count packets and bytes only
FLAGS = {
    (Table.DECIDE, Decide.COUNT_SYN): "new_connections",
    (Table.CHOSEN, Chosen.COUNT_SYN): "new_connections",
    (Table.REPLIES, Replies.SYN_ACK): "answered",
    (Table.REPLIES, Replies.RESET): "resets",
}


@dataclass
class Traffic:
    vips: dict[int, Counts] = field(default_factory=dict)  # VIP uid -> totals
    backends: dict[str, Counts] = field(default_factory=dict)  # backend MAC -> totals of requests to it
    replies: dict[str, Counts] = field(default_factory=dict)  # backend MAC -> totals of what it sent from a VIP
    rates: dict[tuple[str, object], dict[int, dict]] = field(default_factory=dict)  # (kind, id) -> dpid -> per second
    last: dict[tuple[int, tuple], tuple[int, int]] = field(default_factory=dict)  # (dpid, flow key) -> counts
    polled: dict[int, float] = field(default_factory=dict)  # dpid -> time of its last poll
    pins: dict[int, dict[int, int]] = field(default_factory=dict)  # dpid -> backend uid -> its pins there
    took: dict[int, tuple[float, int]] = field(default_factory=dict)  # dpid -> last poll: seconds to read, flows read
    polls: int = 0

    def read(self, dpid: int, entries: list[Entry], now: float) -> set:
        """One poll of a switch's DECIDE, CHOSEN and REPLIES tables; the
        backend MACs it counted traffic to or from."""
        grown: dict[tuple[str, object], Counts] = {}
        seen = set()
        for table, priority, cookie, mac, packets, size in entries:
            kind = kind_of(cookie)
            if table == Table.DECIDE and kind == Kind.VIP:
                what: tuple[str, object] = ("vip", uid_of(cookie))
            elif table == Table.CHOSEN and kind == Kind.HOST and mac:
                what = ("backend", mac)
            elif table == Table.REPLIES and kind == Kind.HOST and mac:
                what = ("reply", mac)
            else:
                continue
            key = (table, priority, cookie, mac)
            seen.add(key)
            before = self.last.get((dpid, key), (0, 0))
            self.last[(dpid, key)] = (packets, size)
            if packets >= before[0] and size >= before[1]:
                packets, size = packets - before[0], size - before[1]
            grown.setdefault(what, Counts()).add(packets, size, FLAGS.get((table, priority), ""))
        for stale in [k for k in self.last if k[0] == dpid and k[1] not in seen]:
            del self.last[stale]  # a flow that is gone: a new one with its key starts from 0
        interval = now - self.polled.get(dpid, now)
        self.polled[dpid] = now
        self.polls += 1
        self._drop_rates(dpid)
        for (kind, ident), counts in grown.items():
            self._totals(kind).setdefault(ident, Counts()).merge(counts)
            if interval > 0:
                names = REPLY_FIELDS if kind == "reply" else ("packets", "bytes", "new_connections")
                rates = {name: getattr(counts, name) / interval for name in names}
                self.rates.setdefault((kind, ident), {})[dpid] = rates
        return {ident for kind, ident in grown if kind != "vip"}

    def switch_gone(self, dpid: int) -> None:
        """Its flows' counters are not ours to compare with any more (a
        reconnecting switch may have lost them)."""
        for key in [k for k in self.last if k[0] == dpid]:
            del self.last[key]
        self._drop_rates(dpid)
        self.polled.pop(dpid, None)
        self.pins.pop(dpid, None)
        self.took.pop(dpid, None)

    def _drop_rates(self, dpid: int) -> None:
        for key in list(self.rates):
            self.rates[key].pop(dpid, None)
            if not self.rates[key]:
                del self.rates[key]

    def _totals(self, kind: str) -> dict:
        return {"vip": self.vips, "backend": self.backends, "reply": self.replies}[kind]

    def of(self, kind: str, ident: object) -> dict:
        """Totals and rates (summed over switches) of one VIP uid (``vip``),
        or of what went to (``backend``) or came from (``reply``) a backend MAC."""
        names = REPLY_FIELDS if kind == "reply" else ("packets", "bytes", "new_connections")
        totals = self._totals(kind).get(ident, Counts())
        rate = dict.fromkeys(names, 0.0)
        for value in self.rates.get((kind, ident), {}).values():
            for name in rate:
                rate[name] += value[name]
        return totals.to_json(names) | {"rates": {name: round(value, 3) for name, value in rate.items()}}

    def passive(self, mac: object) -> dict | None:
        """What a backend did with the connections sent to it over the last
        poll interval, from the switch's counters: offered (SYNs to it),
        answered (its SYN-ACKs from a VIP) and resets, a second; the share
        answered when at least one a second was offered. None before a poll."""
        if ("backend", mac) not in self.rates and ("reply", mac) not in self.rates:
            return None
        offered = self.of("backend", mac)["rates"]["new_connections"]
        replies = self.of("reply", mac)["rates"]
        share = round(min(1.0, replies["answered"] / offered), 3) if offered >= PASSIVE_MIN_RATE else None
        return {
            "offered_per_s": offered,
            "answered_per_s": replies["answered"],
            "resets_per_s": replies["resets"],
            "answered_share": share,
        }

    def pinned(self, backend_uid: int) -> int:
        """Connections of a backend held by pins, over all switches: those of
        its slots in a handover (new backend) or moved away from it (old)
        that sent a packet in the window; the rest follow the slot table and
        are not counted one by one."""
        return sum(by_uid.get(backend_uid, 0) for by_uid in self.pins.values())

    def forget(self, kind: str, ident: object) -> None:
        self._totals(kind).pop(ident, None)
