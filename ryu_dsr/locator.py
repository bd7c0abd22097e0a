"""Backend locator: where each backend is (MAC, switch, port), found by ARP
from the switch or configured, and when to ask again.

A found backend's place is not given away to the first ARP reply that
claims its address from elsewhere (any host can forge one): a claim is
confirmed by asking again, and wins only if the current place has stopped
answering meanwhile (a moved or replaced backend). While the current place
answers, claims are refused."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

REPROBE_SECONDS = 30.0  # a found backend is asked again this often, to notice a new MAC
CONFIRM_SECONDS = 1.0  # a claim from another place is asked about again after this long


@dataclass
class Location:
    """Where a backend was found: its MAC and the switch port behind it."""

    mac: str
    dpid: int | None
    port: int | None
    since: float
    seen: float = 0.0  # its last answer


@dataclass
class Claim:
    """An ARP reply for a found backend from another place, not yet believed."""

    where: tuple[str, int, int]
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
        self.claims: dict[str, Claim] = {}
        self.refused: dict[str, Claim] = {}  # ip -> the last claim refused (its current place kept answering)

    def want(self, ip: str, wanted: bool, now: float) -> None:
        if wanted and ip not in self.wanted:
            self.wanted.add(ip)
            self._schedule(ip, now)
        elif not wanted:
            self.wanted.discard(ip)
            self._next.pop(ip, None)

    def forget(self, ip: str) -> None:
        self.found.pop(ip, None)
        self.claims.pop(ip, None)
        self.refused.pop(ip, None)

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
            claim = self.claims.get(ip)
            if claim and now - claim.since > 10 * CONFIRM_SECONDS:
                del self.claims[ip]  # the claimer fell silent
                claim = None
            if claim:
                self._schedule(ip, now + CONFIRM_SECONDS)
            else:
                self._schedule(ip, now + (REPROBE_SECONDS if ip in self.found else self.resolve_interval))
        if len(self._due) > 4 * len(self._next) + 64:  # drop stale heap entries
            self._due = [(when, ip) for ip, when in self._next.items()]
            heapq.heapify(self._due)
        return ips

    def answered(self, ip: str, mac: str, dpid: int, port: int, now: float) -> str:
        """An ARP answer for a backend: 'moved' (found, or found elsewhere),
        'same', 'claimed' (another place claims it: to be confirmed) or
        'refused' (a claim while the current place still answers)."""
        if ip not in self.wanted:
            return "same"
        old = self.found.get(ip)
        where = (mac, dpid, port)
        if old and (old.mac, old.dpid, old.port) == where:
            old.seen = now
            return "same"
        claim = self.claims.get(ip)
        if old and claim and claim.where == where and now - claim.since >= 2 * CONFIRM_SECONDS:
            # the current place had a probe round to answer since the claim
            del self.claims[ip]
            if old.seen >= claim.since:
                self.refused[ip] = claim
                return "refused"
        elif old:
            if claim is None or claim.where != where:
                self.claims[ip] = Claim(where, now)
                self._schedule(ip, now + CONFIRM_SECONDS)  # ask everyone again, every second while claimed
            return "claimed"
        self.found[ip] = Location(mac, dpid, port, now, now)
        self.refused.pop(ip, None)
        return "moved"

    def target(self, ip: str, now: float) -> tuple[int, int] | None:
        """Where to ask a found backend again: its own switch port, while it
        answers there and nobody else claims its address; None: ask every
        edge port (not found yet, silent for two rounds, or claimed, so a
        backend that moved is found at its new place)."""
        found = self.found.get(ip)
        if found is None or ip in self.claims or found.dpid is None or found.port is None:
            return None
        if now - found.seen > 2 * REPROBE_SECONDS:
            return None
        return found.dpid, found.port

    def claim_status(self, ip: str) -> dict | None:
        """Another place that claims a backend's address by ARP: being
        confirmed now, or the last one refused."""
        for state, claim in (("pending", self.claims.get(ip)), ("refused", self.refused.get(ip))):
            if claim is not None:
                mac, dpid, port = claim.where
                return {"state": state, "mac": mac, "dpid": dpid, "port": port}
        return None

    def lost(self, ip: str) -> None:
        """The current place of a backend is gone (its port went down): a
        claim from elsewhere need not wait for it to fall silent."""
        found = self.found.get(ip)
        if found:
            found.seen = float("-inf")

    def where(self, backend) -> tuple[str | None, int | None, int | None]:
        """MAC, dpid and port of a backend: configured values win."""
        found = self.found.get(backend.ip)
        mac = backend.mac or (found.mac if found else None)
        if backend.dpid is not None:
            return mac, backend.dpid, backend.port
        if found and found.mac == mac:
            return mac, found.dpid, found.port
        return mac, None, None
