"""Backend locator: where each backend is (MAC, switch, port), found by ARP
from the switch or configured, and when to ask again."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

REPROBE_SECONDS = 30.0  # a found backend is asked again this often, to notice a new MAC


@dataclass
class Location:
    """Where a backend was found: its MAC and the switch port behind it."""

    mac: str
    dpid: int | None
    port: int | None
    since: float


class BackendLocator:
    """Locations found by ARP, and a schedule of ARP probes for the backends
    that have no configured MAC (each probe costs one heap step)."""

    def __init__(self, resolve_interval: float) -> None:
        self.resolve_interval = resolve_interval
        self.found: dict[str, Location] = {}
        self.wanted: set[str] = set()  # backend ips to find by ARP
        self._due: list[tuple[float, str]] = []
        self._next: dict[str, float] = {}

    def want(self, ip: str, wanted: bool, now: float) -> None:
        if wanted and ip not in self.wanted:
            self.wanted.add(ip)
            self._schedule(ip, now)
        elif not wanted:
            self.wanted.discard(ip)
            self._next.pop(ip, None)

    def forget(self, ip: str) -> None:
        self.found.pop(ip, None)

    def _schedule(self, ip: str, when: float) -> None:
        self._next[ip] = when
        heapq.heappush(self._due, (when, ip))

    def due(self, now: float, force: bool = False) -> list[str]:
        """Backends to probe now (all wanted ones with ``force``)."""
        if force:
            ips = sorted(self.wanted)
        else:
            ips = []
            while self._due and self._due[0][0] <= now:
                when, ip = heapq.heappop(self._due)
                if self._next.get(ip) == when:
                    ips.append(ip)
        for ip in ips:
            self._schedule(ip, now + (REPROBE_SECONDS if ip in self.found else self.resolve_interval))
        if len(self._due) > 4 * len(self._next) + 64:  # drop stale heap entries
            self._due = [(when, ip) for ip, when in self._next.items()]
            heapq.heapify(self._due)
        return ips

    def answered(self, ip: str, mac: str, dpid: int, port: int, now: float) -> bool:
        """An ARP answer from a backend; True if its location changed."""
        if ip not in self.wanted:
            return False
        old = self.found.get(ip)
        if old and (old.mac, old.dpid, old.port) == (mac, dpid, port):
            return False
        self.found[ip] = Location(mac, dpid, port, now)
        return True

    def where(self, backend) -> tuple[str | None, int | None, int | None]:
        """MAC, dpid and port of a backend: configured values win."""
        found = self.found.get(backend.ip)
        mac = backend.mac or (found.mac if found else None)
        if backend.dpid is not None:
            return mac, backend.dpid, backend.port
        if found and found.mac == mac:
            return mac, found.dpid, found.port
        return mac, None, None
