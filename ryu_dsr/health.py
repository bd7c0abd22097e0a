"""In-band health checks: probes leave through the switch (packet-out) and
answers come back to the controller (packet-in), so the controller needs no
address on the data network. Pure: time comes in, frames and transitions go
out.

Kinds: ``arp`` (the backend answers ARP for its address), ``tcp`` (a SYN is
answered by SYN-ACK; RST means refused) and ``http`` (after the handshake a
GET is answered with the expected status). With ``target: vip`` TCP and HTTP
probes go to the VIP's address with the backend's MAC, so a backend that lost
the VIP from its loopback fails.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass, field

from ryu_dsr.flows.family import FAMILIES, Neighbour, family_of, neighbour_of
from ryu_dsr.flows.frames import TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN, Tcp
from ryu_dsr.model import HealthCheck

LOG = logging.getLogger("ryu_dsr.health")
FIRST_PORT, LAST_PORT = 40000, 59999


@dataclass(frozen=True)
class Target:
    """One backend to check, where the switch can reach it."""

    pool: str
    ip: str
    mac: str
    dpid: int
    port: int | None  # switch port; None: flood
    check: HealthCheck
    address: str  # where probes go: the backend's own IP, or a VIP's
    addresses: tuple[str, ...] = ()  # VIP target: every VIP address of the pool, probed in turn
    # A dscp backend (L3DSR): VIP address -> its DSCP value. Probes go as the
    # traffic does: to the backend's own address with the VIP's DSCP, and
    # the answer must come from the VIP (the backend's rewrite works); in
    # turn with one to its own address, plainly (it is reachable at all).
    dscp: dict[str, int] | None = None
    # A gre backend: probes to a VIP address go whole through the switch's GRE
    # tunnel to the backend's address (as its traffic does); to its own address, plainly.
    tunnel: bool = False


@dataclass
class Health:
    """What the checks say of one backend of one pool."""

    healthy: bool = True  # a backend is trusted until it fails `fall` times
    successes: int = 0
    failures: int = 0
    failing: dict = field(default_factory=dict)  # address -> its failures in a row (VIP targets)
    last_result: str = "not checked yet"
    checked_at: float | None = None

    def to_json(self) -> dict:
        return {"healthy": self.healthy, "last_result": self.last_result}


@dataclass
class Probe:
    target: Target
    started: float
    deadline: float
    sport: int = 0
    seq: int = 0
    stage: str = "sent"  # tcp/http: "syn" then "request"
    address: str = ""  # where this probe went
    response: bytes = b""


@dataclass
class Send:
    dpid: int
    port: int | None
    frame: bytes
    tunnel: str | None = None  # through the switch's GRE port to this address (``port`` unused)


@dataclass
class Transition:
    pool: str
    ip: str
    healthy: bool
    reason: str


@dataclass
class HealthChecker:
    probe_mac: str
    probe_ip: str | None
    health: dict[tuple[str, str], Health] = field(default_factory=dict)
    probes: dict[tuple[str, str], Probe] = field(default_factory=dict)
    next_due: dict[tuple[str, str], float] = field(default_factory=dict)
    turns: dict[tuple[str, str], int] = field(default_factory=dict)  # probes started, to rotate VIP addresses
    by_sport: dict[int, tuple[str, str]] = field(default_factory=dict)
    targets: dict[tuple[str, str], Target] = field(default_factory=dict)
    online: set[int] = field(default_factory=set)  # dpids of connected switches: probes go only through them
    _due: list[tuple[float, tuple[str, str]]] = field(default_factory=list)  # heap of (when, key)
    first_port: int = FIRST_PORT  # the source ports its probes take (another checker takes others)
    last_port: int = LAST_PORT
    _next_sport: int = 0

    def set_target(self, key: tuple[str, str], target: Target | None) -> None:
        """Check this backend of this pool as ``target`` says; None stops
        checking it (not found, link down) but keeps what checks said, so a
        backend that was unhealthy does not come back without ``rise``
        passing checks."""
        if target is None:
            self.targets.pop(key, None)
            self._drop(key)
        else:
            if key not in self.targets:
                self._schedule(key, self.next_due.get(key, 0.0))
            self.targets[key] = target

    def switch_online(self, dpid: int) -> None:
        self.online.add(dpid)

    def switch_offline(self, dpid: int) -> None:
        """A switch disconnected: its backends are not checked (a probe that
        cannot be sent is no failure) and probes out through it end with no
        result, until it is back."""
        self.online.discard(dpid)
        for key in [key for key, probe in self.probes.items() if probe.target.dpid == dpid]:
            self._drop(key)

    def drop_probes(self) -> int:
        """End every probe out with no result (the controller did not run
        while their answers were due); how many."""
        count = len(self.probes)
        for key in list(self.probes):
            self._drop(key)
        return count

    def forget(self, key: tuple[str, str]) -> None:
        """The backend left the pool (or its pool stopped checking)."""
        self.set_target(key, None)
        self.health.pop(key, None)
        self.next_due.pop(key, None)
        self.turns.pop(key, None)

    def status(self, pool: str, ip: str) -> Health | None:
        return self.health.get((pool, ip))

    def healthy(self, pool: str, ip: str) -> bool:
        state = self.health.get((pool, ip))
        return state is None or state.healthy

    # ----------------------------------------------------------- scheduling

    def tick(self, now: float) -> tuple[list[Send], list[Transition]]:
        """Time out overdue probes, start the probes that are due."""
        sends: list[Send] = []
        transitions: list[Transition] = []
        wanted = self.targets
        for key in list(self.probes):
            probe = self.probes[key]
            if key not in wanted:
                self._drop(key)
            elif now >= probe.deadline:
                sends += self._abort(probe)
                what = f"no answer from {probe.address}" if probe.target.addresses else "no answer"
                what += f" in {probe.target.check.timeout:g} s"
                if probe.target.tunnel and probe.address != probe.target.ip:
                    what += " through the GRE tunnel (its decapsulation: gre0 up, rp_filter off, the VIP on lo)"
                transitions += self._result(key, probe.target.check, False, what, now, probe.address)
        while self._due and self._due[0][0] <= now:  # only the checks that are due: no pass over all
            when, key = heapq.heappop(self._due)
            target = wanted.get(key)
            if target is None or when != self.next_due.get(key, 0.0):
                continue  # no longer checked, or rescheduled
            if key in self.probes:  # the last probe is still out: look again when it ends
                self._schedule(key, max(self.probes[key].deadline, now + 0.001))
                continue
            self._schedule(key, now + target.check.interval)
            if target.dpid in self.online:
                sends += self._start(key, target, now)
        return sends, transitions

    def _schedule(self, key: tuple[str, str], when: float) -> None:
        self.next_due[key] = when
        heapq.heappush(self._due, (when, key))

    def _start(self, key, target: Target, now: float) -> list[Send]:
        addresses = target.addresses or (target.address,)
        turn = self.turns.get(key, 0)
        self.turns[key] = turn + 1
        probe = Probe(target, now, now + target.check.timeout, address=addresses[turn % len(addresses)])
        self.probes[key] = probe
        if target.check.kind == "arp":
            frame = family_of(target.ip).probe(self.probe_mac, target.ip, target.mac)  # ARP to its MAC
            return [Send(target.dpid, target.port, frame)]
        probe.sport = self._take_sport()
        probe.seq = (int(now * 1e6) * 2654435761) & 0xFFFFFFFF
        probe.stage = "syn"
        self.by_sport[probe.sport] = key
        return [self._send(probe, self._frame(self._segment(probe, TCP_SYN, probe.seq, 0), _tos(probe)))]

    @staticmethod
    def _send(probe: Probe, frame: bytes) -> Send:
        """A probe's frame out: through the GRE tunnel to a gre backend when
        it goes to a VIP address, else out of the backend's port."""
        target = probe.target
        if target.tunnel and probe.address != target.ip:
            return Send(target.dpid, None, frame, tunnel=target.ip)
        return Send(target.dpid, target.port, frame)

    @staticmethod
    def _frame(segment: Tcp, tos: int = 0) -> bytes:
        return family_of(segment.dst).tcp_frame(segment, tos)

    def _source(self, address: str) -> str:
        family = family_of(address)
        return family.probe_source(self.probe_mac, self.probe_ip) or family.unspecified

    def _take_sport(self) -> int:
        while True:
            sport = max(self._next_sport, self.first_port)
            self._next_sport = self.first_port if sport >= self.last_port else sport + 1
            if sport not in self.by_sport:
                return sport

    def _segment(self, probe: Probe, flags: int, seq: int, ack: int, payload: bytes = b"") -> Tcp:
        target = probe.target
        return Tcp(
            self.probe_mac,
            target.mac,
            self._source(probe.address),
            target.ip if target.dscp else probe.address,  # routed: to the backend, its DSCP naming the VIP
            probe.sport,
            target.check.port or 0,
            seq,
            ack,
            flags,
            payload,
        )

    def _abort(self, probe: Probe) -> list[Send]:
        """Reset a half-done TCP probe so the backend frees its side."""
        key = (probe.target.pool, probe.target.ip)
        self._drop(key)
        if probe.target.check.kind == "arp" or probe.stage == "syn":
            return []
        rst = self._segment(
            probe, TCP_RST, probe.seq + 1 + (len(self._request(probe)) if probe.stage == "request" else 0), 0
        )
        return [self._send(probe, self._frame(rst, _tos(probe)))]

    def _drop(self, key) -> None:
        probe = self.probes.pop(key, None)
        if probe is not None and probe.sport:
            self.by_sport.pop(probe.sport, None)

    def _request(self, probe: Probe) -> bytes:
        """What a probe sends once connected."""
        host = f"[{probe.address}]" if ":" in probe.address else probe.address
        return f"GET {probe.target.check.path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: ryu_dsr-health\r\n\r\n".encode()

    def _read(self, probe: Probe, where: str) -> tuple[bool, str] | None:
        """What the answer so far says, (passed, why); None: wait for more."""
        check = probe.target.check
        line = probe.response.split(b"\r\n", 1)[0]
        if b"\r\n" not in probe.response and len(probe.response) < 64:
            return None  # the status line is not complete yet
        parts = line.split()
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        ok = status == check.expect_status
        reason = f"GET {check.path} on {where} answered {status}" if status else f"{where} sent no HTTP status line"
        if not ok and status:
            reason += f", expected {check.expect_status}"
        return ok, reason

    # ------------------------------------------------------------- answers

    def packet_in(self, now: float, data: bytes) -> tuple[list[Send], list[Transition]]:
        found = neighbour_of(data)
        if found is not None:
            return self._neighbour_answer(now, found[1])
        segment = next((s for s in (family.tcp(data) for family in FAMILIES) if s is not None), None)
        if segment is None or segment.eth_dst != self.probe_mac or segment.dport not in self.by_sport:
            return [], []
        key = self.by_sport[segment.dport]
        probe = self.probes.get(key)
        if probe is not None and _tos(probe) and segment.src == probe.target.ip:
            self._drop(key)  # answered from its own address: the DSCP never became the VIP
            reason = (
                f"{probe.target.ip} answered DSCP {probe.target.dscp[probe.address]} from its own address, not from "
                f"VIP {probe.address}: its rewrite of the DSCP to the VIP (nft) is missing"
            )
            return [], self._result(key, probe.target.check, False, reason, now, probe.address)
        if probe is None or segment.src != probe.address:
            return [], []
        return self._tcp_answer(now, key, probe, segment)

    def _neighbour_answer(self, now: float, answer: Neighbour) -> tuple[list[Send], list[Transition]]:
        if answer.request or answer.target_mac != self.probe_mac:
            return [], []
        transitions: list[Transition] = []
        for key, probe in list(self.probes.items()):
            if probe.target.check.kind == "arp" and probe.target.ip == answer.sender_ip:
                self._drop(key)
                ok = answer.sender_mac == probe.target.mac
                asked = family_of(answer.sender_ip).neighbour_name
                reason = f"answered {asked}" if ok else f"{asked} answered by another MAC, {answer.sender_mac}"
                transitions += self._result(key, probe.target.check, ok, reason, now, probe.address)
        return [], transitions

    def _tcp_answer(self, now, key, probe: Probe, segment: Tcp) -> tuple[list[Send], list[Transition]]:
        check = probe.target.check
        where = f"[{probe.address}]:{check.port}" if ":" in probe.address else f"{probe.address}:{check.port}"
        if segment.flags & TCP_RST:
            self._drop(key)
            return [], self._result(key, check, False, f"connection to {where} refused", now, probe.address)
        if probe.stage == "syn" and segment.flags & TCP_SYN and segment.flags & TCP_ACK:
            if segment.ack != (probe.seq + 1) & 0xFFFFFFFF:
                return [], []
            server_seq = (segment.seq + 1) & 0xFFFFFFFF
            if check.kind == "tcp":
                self._drop(key)
                rst = self._frame(self._segment(probe, TCP_RST, probe.seq + 1, 0), _tos(probe))
                return [self._send(probe, rst)], self._result(
                    key, check, True, f"{where} accepted a connection", now, probe.address
                )
            probe.stage = "request"
            request = self._request(probe)
            frame = self._frame(
                self._segment(probe, TCP_ACK | TCP_PSH, probe.seq + 1, server_seq, request), _tos(probe)
            )
            return [self._send(probe, frame)], []
        if probe.stage == "request" and segment.payload:
            probe.response += segment.payload
            read = self._read(probe, where)
            if read is None:
                return [], []
            self._drop(key)
            sent = len(self._request(probe))
            rst = self._frame(self._segment(probe, TCP_RST, probe.seq + 1 + sent, 0), _tos(probe))
            ok, reason = read
            return [self._send(probe, rst)], self._result(key, check, ok, reason, now, probe.address)
        return [], []

    def fail(self, key: tuple[str, str], reason: str, now: float) -> list[Transition]:
        """A failure seen outside the probes (the switch's passive signal):
        the backend fails at once and comes back after ``rise`` passing
        probes, like any failed backend."""
        state = self.health.setdefault(key, Health())
        state.last_result, state.checked_at, state.successes = f"failed: {reason}", now, 0
        if not state.healthy:
            return []
        state.healthy = False
        return [Transition(key[0], key[1], False, reason)]

    # -------------------------------------------------------------- results

    def _result(
        self, key, check: HealthCheck, ok: bool, reason: str, now: float, address: str = ""
    ) -> list[Transition]:
        """Count one probe's result. Failures count per address (a VIP
        target probes every VIP address in turn: one that keeps failing
        takes the backend out even while the others pass); ``rise``
        successes in a row, with no address still failing, bring it back."""
        state = self.health.setdefault(key, Health())
        state.last_result = ("ok: " if ok else "failed: ") + reason
        state.checked_at = now
        if ok:
            state.failing.pop(address, None)
            state.successes = state.successes + 1
            state.failures = max(state.failing.values(), default=0)
            if not state.healthy and state.successes >= check.rise and not state.failing:
                state.healthy = True
                return [Transition(key[0], key[1], True, f"{check.rise} check(s) passed: {reason}")]
        else:
            state.failing[address] = state.failing.get(address, 0) + 1
            state.failures, state.successes = max(state.failing.values()), 0
            if state.healthy and state.failing[address] >= check.fall:
                state.healthy = False
                return [Transition(key[0], key[1], False, f"{check.fall} check(s) failed: {reason}")]
        return []


def _tos(probe: Probe) -> int:
    """The traffic class of a probe's packets: a routed backend's DSCP."""
    return probe.target.dscp.get(probe.address, 0) << 2 if probe.target.dscp else 0
