"""A short history of what changes, for the status page's charts.

Bounded rings, fed by what the controller learns anyway:

- each backend's new connections and request packets per time bucket
  (``bucket`` seconds), from each traffic poll's growth: only what grew is
  touched, and a backend with no traffic in a bucket has no sample there;
- each switch's flow count and write errors, one sample per poll;
- backends' state changes (up, draining, unhealthy, ...), as events.

Each ring keeps ``window`` seconds; memory is bounded by the backends and
switches with traffic times the buckets in the window, and by ``EVENTS``.
Pure: time and counts come in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

EVENTS = 2000  # state changes kept, all pools together


@dataclass
class History:
    window: float = 600.0  # seconds kept
    bucket: float = 5.0  # seconds a sample covers
    backends: dict[str, deque] = field(default_factory=dict)  # MAC -> [bucket start, connections, packets]
    switches: dict[int, deque] = field(default_factory=dict)  # dpid -> (time, flows, errors)
    events: deque = field(default_factory=lambda: deque(maxlen=EVENTS))  # (time, pool, ip, from, to, reason)

    @property
    def buckets(self) -> int:
        return max(1, int(self.window / self.bucket))

    def polled(self, now: float, grown: dict, dpid: int, flows: int, errors: int) -> None:
        """A switch's poll: its growth per (kind, id) (``Counts``); only the
        backends' is kept."""
        start = now - now % self.bucket
        for (kind, ident), counts in grown.items():
            if kind != "backend" or not (counts.new_connections or counts.packets):
                continue
            ring = self.backends.get(ident)
            if ring is None:
                ring = self.backends[ident] = deque(maxlen=self.buckets)
            if ring and ring[-1][0] == start:
                ring[-1][1] += counts.new_connections
                ring[-1][2] += counts.packets
            else:
                ring.append([start, counts.new_connections, counts.packets])
        ring = self.switches.get(dpid)
        if ring is None:
            ring = self.switches[dpid] = deque(maxlen=self.buckets)
        ring.append((now, flows, errors))

    def changed(self, now: float, pool: str, ip: str, old: str | None, new: str, reason: str) -> None:
        self.events.append((now, pool, ip, old, new, reason))

    def backend(self, mac: str | None, now: float) -> list[list]:
        """[seconds ago, connections, packets] of a backend's buckets in the window."""
        ring = self.backends.get(mac) if mac else None
        if not ring:
            return []
        while ring and ring[0][0] < now - self.window:
            ring.popleft()
        return [[round(start - now, 1), conns, packets] for start, conns, packets in ring]

    def switch(self, dpid: int, now: float) -> list[list]:
        ring = self.switches.get(dpid, ())
        return [[round(at - now, 1), flows, errors] for at, flows, errors in ring if at >= now - self.window]

    def pool_events(self, pool: str, now: float) -> list[dict]:
        return [
            {"ago": round(at - now, 1), "backend": ip, "from": old, "to": new, "reason": reason}
            for at, name, ip, old, new, reason in self.events
            if name == pool and at >= now - self.window
        ]

    def forget_switch(self, dpid: int) -> None:
        self.switches.pop(dpid, None)
