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

# table, priority, cookie, MAC matched, routed backend's uid matched (or None), packets, bytes
Entry = tuple[int, int, int, str | None, int | None, int, int]


@dataclass
class Counts:
    packets: int = 0
    bytes: int = 0
    new_connections: int = 0  # requests: TCP SYN without ACK
    answered: int = 0  # replies: SYN-ACK (a connection answered)
    resets: int = 0  # replies: RST
    finished: int = 0  # replies: FIN (a connection closed by its backend)

    def add(self, packets: int, size: int, flag: str = "") -> None:
        self.packets += packets
        self.bytes += size
        if flag:
            setattr(self, flag, getattr(self, flag) + packets)

    def merge(self, other: Counts) -> None:
        for name in ("packets", "bytes", "new_connections", "answered", "resets", "finished"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self, names=("packets", "bytes", "new_connections")) -> dict:
        return {name: getattr(self, name) for name in names}


REPLY_FIELDS = ("packets", "bytes", "answered", "resets")
TRAFFIC_FIELDS = ("packets", "bytes", "new_connections")
PASSIVE_MIN_RATE = 1.0  # new connections a second below which no answered share is given
# (table, priority) of a counting rule -> what its packets are; other rules count packets and bytes only
FLAGS = {
    (Table.DECIDE, Decide.COUNT_SYN): "new_connections",
    (Table.CHOSEN, Chosen.COUNT_SYN): "new_connections",
    (Table.CHOSEN, Chosen.ROUTED_SYN): "new_connections",
    (Table.REPLIES, Replies.SYN_ACK): "answered",
    (Table.REPLIES, Replies.RESET): "resets",
    (Table.REPLIES, Replies.FIN): "finished",
}


@dataclass
class Traffic:
    vips: dict[int, Counts] = field(default_factory=dict)  # VIP uid -> totals
    backends: dict[str, Counts] = field(default_factory=dict)  # backend MAC -> totals of requests to it
    replies: dict[str, Counts] = field(default_factory=dict)  # backend MAC -> totals of what it sent from a VIP
    routed: dict[int, Counts] = field(default_factory=dict)  # dscp backend uid -> totals of requests routed to it
    # backend MAC -> connections open now: each poll adds what it answered and takes what it closed or reset
    open: dict[str, int] = field(default_factory=dict)
    # dpid -> what its last poll counted ((kind, id) -> growth) and over how many seconds: rates when asked
    rates: dict[int, tuple[dict[tuple[str, object], Counts], float]] = field(default_factory=dict)
    last: dict[int, dict[tuple, tuple[int, int]]] = field(default_factory=dict)  # dpid -> flow key -> counts
    polled: dict[int, float] = field(default_factory=dict)  # dpid -> time of its last poll
    pins: dict[int, dict[int, int]] = field(default_factory=dict)  # dpid -> backend uid -> its pins there
    took: dict[int, tuple[float, int]] = field(default_factory=dict)  # dpid -> last poll: seconds to read, flows read
    polls: int = 0
    # dpid -> a poll's growth so far (what grew, flow keys seen, backend MACs with traffic, what grew of the
    # backends alone), while it comes in
    reading: dict[int, tuple[dict, set, set, dict]] = field(default_factory=dict)
    # dpid -> its last poll's growth of the backends alone (to them, from them, routed): a poll's end, and
    # the charts, walk the backends, not every VIP
    hosts_grown: dict[int, dict[tuple[str, object], Counts]] = field(default_factory=dict)

    def read(self, dpid: int, entries: list[Entry], now: float) -> set:
        """One poll of a switch's DECIDE, CHOSEN and REPLIES tables; the
        backend MACs it counted traffic to or from."""
        self.read_part(dpid, entries)
        return self.read_done(dpid, now)

    def read_part(self, dpid: int, entries: list[Entry]) -> None:
        """One reply of a poll (the switch sends a large table in many): its
        flows are compared with the last poll now, so the work is spread
        over the replies as they come in; totals grow here too."""
        grown, seen, busy, hosts = self.reading.setdefault(dpid, ({}, set(), set(), {}))
        last = self.last.setdefault(dpid, {})
        for table, priority, cookie, mac, routed, packets, size in entries:
            kind = kind_of(cookie)
            if table == Table.DECIDE and kind == Kind.VIP:
                what: tuple[str, object] = ("vip", uid_of(cookie))
            elif table == Table.CHOSEN and kind == Kind.HOST and routed is not None:
                what = ("routed", routed)  # a dscp backend: its own rule, behind its gateway's MAC
            elif table == Table.CHOSEN and kind == Kind.HOST and mac:
                what = ("backend", mac)
            elif table == Table.REPLIES and kind == Kind.HOST and mac:
                what = ("reply", mac)
            else:
                continue
            key = (table, priority, cookie, mac, routed)
            seen.add(key)
            before = last.get(key, (0, 0))
            last[key] = (packets, size)
            if packets >= before[0] and size >= before[1]:
                packets, size = packets - before[0], size - before[1]
            counts = grown.get(what)
            if counts is None:
                counts = grown[what] = Counts()
                if what[0] != "vip":
                    hosts[what] = counts
            totals = self._totals(what[0])
            total = totals.get(what[1])
            if total is None:
                total = totals[what[1]] = Counts()
            if packets or size:
                flag = FLAGS.get((table, priority), "")
                counts.add(packets, size, flag)
                total.add(packets, size, flag)
                if what[0] in ("backend", "reply"):
                    busy.add(what[1])

    def read_done(self, dpid: int, now: float) -> set:
        """Every reply of a poll is in: its growth stands for the switch's
        rates until the next (computed when asked, not here: a poll's end
        is no pass over every object); the backend MACs it counted traffic
        to or from."""
        grown, seen, busy, hosts = self.reading.pop(dpid, ({}, set(), set(), {}))
        last = self.last.get(dpid, {})
        if len(last) > len(seen):  # (every key seen is in ``last``: only then is one of its keys gone)
            for stale in last.keys() - seen:
                del last[stale]  # a flow that is gone: a new one with its key starts from 0
        for (kind, mac), counts in hosts.items():
            if kind == "reply":  # never below none: a FIN or RST sent twice is not taken from later connections
                opened = self.open.get(mac, 0) + counts.answered - counts.finished - counts.resets
                self.open[mac] = max(0, opened)
        interval = now - self.polled.get(dpid, now)
        self.polled[dpid] = now
        self.polls += 1
        self.rates[dpid] = (grown, interval) if interval > 0 else ({}, 0.0)
        self.hosts_grown[dpid] = hosts if interval > 0 else {}
        return busy

    def switch_gone(self, dpid: int) -> None:
        """Its flows' counters are not ours to compare with any more (a
        reconnecting switch may have lost them)."""
        self.last.pop(dpid, None)
        self.rates.pop(dpid, None)
        self.hosts_grown.pop(dpid, None)
        self.reading.pop(dpid, None)
        self.polled.pop(dpid, None)
        self.pins.pop(dpid, None)
        self.took.pop(dpid, None)

    def _totals(self, kind: str) -> dict:
        return {"vip": self.vips, "backend": self.backends, "reply": self.replies, "routed": self.routed}[kind]

    def of(self, kind: str, ident: object) -> dict:
        """Totals and rates (summed over switches) of one VIP uid (``vip``),
        of what went to (``backend``) or came from (``reply``) a backend MAC,
        or of what was routed to a dscp backend (``routed``, by uid)."""
        names = REPLY_FIELDS if kind == "reply" else ("packets", "bytes", "new_connections")
        totals = self._totals(kind).get(ident, Counts())
        rate = dict.fromkeys(names, 0.0)
        for grown, interval in self.rates.values():
            counts = grown.get((kind, ident))
            if counts is not None:
                for name in rate:
                    rate[name] += getattr(counts, name) / interval
        return totals.to_json(names) | {"rates": {name: round(value, 3) for name, value in rate.items()}}

    def active(self, mac: str | None) -> int:
        """A backend's active connections, as the switches counted them:
        answered (SYN-ACK from a VIP address), neither closed (FIN) nor
        reset (RST) since. Counted poll by poll and never below none: a
        connection closed twice over (its FIN sent again, or a FIN then a
        RST) would otherwise be taken from every later count, and over
        thousands of connections the few such add up to more than a fast
        backend holds at a time (it would look faster than it is)."""
        return self.open.get(mac, 0) if mac else 0

    def answered(self, mac: str | None) -> int:
        """The connections a backend answered so far (SYN-ACK from a VIP
        address), as the switches counted them."""
        back = self.replies.get(mac) if mac else None
        return back.answered if back else 0

    def passive(self, mac: object) -> dict | None:
        """What a backend did with the connections sent to it over the last
        poll interval, from the switch's counters: offered (SYNs to it),
        answered (its SYN-ACKs from a VIP) and resets, a second; the share
        answered when at least one a second was offered. None before a poll."""
        offered = answered = resets = 0.0
        found = False
        for grown, interval in self.rates.values():  # a few switches: no dicts made per backend
            sent, back = grown.get(("backend", mac)), grown.get(("reply", mac))
            if sent is not None:
                found, offered = True, offered + sent.new_connections / interval
            if back is not None:
                found = True
                answered, resets = answered + back.answered / interval, resets + back.resets / interval
        if not found:
            return None
        offered, answered, resets = round(offered, 3), round(answered, 3), round(resets, 3)
        share = round(min(1.0, answered / offered), 3) if offered >= PASSIVE_MIN_RATE else None
        return {"offered_per_s": offered, "answered_per_s": answered, "resets_per_s": resets, "answered_share": share}

    def pinned(self, backend_uid: int) -> int:
        """Connections of a backend held by pins, over all switches: those of
        its slots in a handover (new backend) or moved away from it (old)
        that sent a packet in the window; the rest follow the slot table and
        are not counted one by one."""
        return sum(by_uid.get(backend_uid, 0) for by_uid in self.pins.values())

    def forget(self, kind: str, ident: object) -> None:
        self._totals(kind).pop(ident, None)
