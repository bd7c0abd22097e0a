"""Runtime data about backends: where each one is, what its checks say,
which may hold connections, drains, a pool failing open, and what the
switch's counters say of its answers.

None of this is configuration: it is what the controller learns while it
runs (Faucet keeps such data in ``dyn_*`` attributes beside its frozen
config). Pure: time comes in; the owners whose rules change go out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from ryu_dsr.agent import AgentChecker, as_check
from ryu_dsr.flows.family import family_of
from ryu_dsr.flows.pipeline import Kind, Owner
from ryu_dsr.health import Health, HealthChecker, Transition
from ryu_dsr.health import Target as HealthTarget
from ryu_dsr.locator import BackendLocator, Location
from ryu_dsr.model import ROUTED, Backend, Config, Pool
from ryu_dsr.routes import parse_routes, route_of
from ryu_dsr.weights import Weights

LOG = logging.getLogger("ryu_dsr")
REFUSAL_LOG_SECONDS = 60.0  # a repeated warning about one host, at most this often
PASSIVE_LOW = 0.5  # a backend that answers less than this share of its new connections is reported
PASSIVE_OK = 0.9  # and is back once it answers this share

Place = tuple[str | None, int | None, int | None]  # a backend's MAC, switch and port (each None until known)


def utc_stamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class Backends:
    """What the controller knows of every backend now."""

    def __init__(
        self,
        settings: Any,
        clock: Callable[[], float],
        wall: Callable[[], float],
        link_up: Callable[[int | None, int | None], bool],
    ) -> None:
        """``link_up(dpid, port)``: whether that switch port is up (True
        for a switch not connected: nothing says it is down)."""
        self.settings = settings
        self.clock = clock
        self.wall = wall
        self.link_up = link_up
        self.locator = BackendLocator(settings.resolve_interval)
        self.health = HealthChecker(settings.probe_mac, settings.probe_ip or None)
        self.agents = AgentChecker(settings.probe_mac, settings.probe_ip or None)  # backends' own reports
        # effective weights: agents' shares, least connections, slow starts
        self.weights_now = Weights(clock, self.agents, lambda backend: self.place(backend)[0], self.usable)
        self.reasons: dict[tuple[str, str], str] = {}  # (pool, ip) -> why it became unhealthy
        self.transitions: dict[tuple[str, str], tuple[str, str, str]] = {}  # (pool, ip) -> state, reason, since
        self.failing_open: set[str] = set()  # pools where no backend passes its checks, all taking connections
        self.gre_switches: set[int] = set()  # switches with a GRE port (where gre backends can be sent to)
        self.open_thresholds: dict[str, int] = {}  # pool -> its panic threshold (percent), for the reasons
        self.holders: dict[str, set[int]] = {}  # pool -> uids of its backends that may hold connections (pins)
        self.draining_since: dict[int, float] = {}  # backend uid -> when its weight became 0
        self.timed_out_drains: set[int] = set()
        # Indexes of where backends are, by address, by MAC and by switch port.
        self.places: dict[str, Place] = {}
        self.ips_by_mac: dict[str, set[str]] = {}
        self.ips_by_port: dict[tuple[int | None, int | None], set[str]] = {}
        self.vip_arp: dict[str, tuple[str, float]] = {}  # backend ip -> VIP address it sent ARP for, when
        self.vip_arp_logged: dict[str, float] = {}  # MAC -> when its ARP for a VIP was last logged
        self.passive_low: set[str] = set()  # backend MACs that answer too few of their connections
        # L3DSR: dscp backends are reached through their route's gateway, found on the segment
        self.routes = parse_routes(settings.routes, "dsr.routes")
        self.behind: dict[str, set[str]] = {}  # gateway -> the dscp backends routed through it

    def restore(self, found: dict[str, dict], failed: dict[int, str], config: Config) -> None:
        """Where backends were found, and which failed their checks, before
        this start (or before this controller became master)."""
        now = self.clock()
        for ip, where in found.items():
            self.locator.found[ip] = Location(where["mac"], where["dpid"], where["port"], now, now)
        for name, pool in config.pools.items():
            for ip, backend in pool.backends.items():
                if backend.uid in failed:
                    self.health.health[(name, ip)] = Health(healthy=False, last_result=failed[backend.uid])
                    self.reasons[(name, ip)] = failed[backend.uid]

    # -- where backends are --

    def gateway(self, backend: Backend) -> str | None:
        """The gateway a dscp backend is reached through; None for l2 backends."""
        return route_of(self.routes, backend.ip) if backend.forwarding in ROUTED else None

    def place(self, backend: Backend) -> Place:
        """MAC, switch and port of a backend: configured values win; a dscp
        backend's are its gateway's."""
        gateway = self.gateway(backend)
        if gateway is not None:
            return self.locator.where(Backend(gateway))
        return self.locator.where(backend)

    def _route(self, ip: str, gateway: str | None) -> None:
        """Keep ``ip`` behind ``gateway`` (None: behind none), and the
        gateways wanted while a backend is behind them."""
        for gw, ips in list(self.behind.items()):
            if gw != gateway and ip in ips:
                ips.discard(ip)
                if not ips:
                    del self.behind[gw]
                    self.locator.want(gw, False, self.clock())
        if gateway is not None:
            self.behind.setdefault(gateway, set()).add(ip)
            self.locator.want(gateway, True, self.clock())

    def locate(self, ip: str, config: Config) -> tuple[bool, set[Owner]]:
        """Work out again where a backend is (configured or found) and index
        it; whether it moved, and the L2 rule owners of its old and new MAC."""
        pools = config.pools_by_backend.get(ip)
        old = self.places.get(ip)
        if not pools:
            new = None
            self.locator.want(ip, False, self.clock())
            self.locator.forget(ip)
            self.vip_arp.pop(ip, None)
            self._route(ip, None)
        else:
            backends = [config.pools[name].backends[ip] for name in sorted(pools)]
            gateway = self.gateway(backends[0])
            self._route(ip, gateway)
            self.locator.want(ip, gateway is None and not any(b.mac for b in backends), self.clock())
            configured = next((b for b in backends if b.mac or b.dpid is not None), backends[0])
            new = self.place(configured)
        if old == new:  # a dscp backend behind a gateway already found: its routed rule (uid) may be new
            routed = new is not None and new[0] and self.gateway(backends[0]) is not None
            return False, {(Kind.HOST, new[0])} if routed else set()
        touched: set[Owner] = set()
        if old is not None:
            del self.places[ip]
            if old[0]:
                self.ips_by_mac[old[0]].discard(ip)
                if not self.ips_by_mac[old[0]]:
                    del self.ips_by_mac[old[0]]
                touched.add((Kind.HOST, old[0]))
            self.ips_by_port[(old[1], old[2])].discard(ip)
            if not self.ips_by_port[(old[1], old[2])]:
                del self.ips_by_port[(old[1], old[2])]
        if new is not None:
            self.places[ip] = new
            if new[0]:
                self.ips_by_mac.setdefault(new[0], set()).add(ip)
                touched.add((Kind.HOST, new[0]))
            self.ips_by_port.setdefault((new[1], new[2]), set()).add(ip)
        return True, touched

    def host_place(self, mac: str) -> tuple[int, int] | None:
        """(switch, port) of a backend's MAC, where it is known."""
        for ip in self.ips_by_mac.get(mac, ()):
            _mac, dpid, port = self.places[ip]
            if dpid is not None and port is not None:
                return dpid, port
        return None

    def ips_on(self, dpid: int) -> set[str]:
        """Backends found or configured on one switch (a pass over the
        places: at a switch's connect only)."""
        return {ip for (on, _port), ips in self.ips_by_port.items() if on == dpid for ip in ips}

    def answered(self, ip: str, mac: str, dpid: int, port: int) -> bool:
        """An ARP answer for a backend; True when it was found (or found at
        a new place). A claim from another place is believed only once the
        current place stopped answering (``locator``)."""
        outcome = self.locator.answered(ip, mac, dpid, port, self.clock())
        if outcome == "claimed":
            LOG.warning(
                "backend %s claimed by %s on switch %016x port %d: asking again before believing it",
                ip,
                mac,
                dpid,
                port,
            )
        elif outcome == "refused":
            LOG.warning(
                "backend %s: claim by %s on switch %016x port %d refused, its current place still answers",
                *(ip, mac, dpid, port),
            )
        if outcome == "moved":
            LOG.info("backend %s found at %s on switch %016x port %d", ip, mac, dpid, port)
        return outcome == "moved"

    def vip_claimed(self, address: str, mac: str, dpid: int, port: int) -> None:
        """A host sent ARP from a VIP address (the switch keeps it from every
        other host): shown in the status of the backends at that MAC (a
        backend without arp_ignore/arp_announce) and logged once a minute."""
        now = self.clock()
        for ip in self.ips_by_mac.get(mac, ()):
            self.vip_arp[ip] = (address, self.wall())
        if now - self.vip_arp_logged.get(mac, -REFUSAL_LOG_SECONDS) >= REFUSAL_LOG_SECONDS:
            self.vip_arp_logged[mac] = now
            backends = ", ".join(sorted(self.ips_by_mac.get(mac, ()))) or "no backend"
            LOG.warning(
                "%s (%s) on switch %016x port %d sends %s for VIP address %s: not heard by other hosts%s",
                *(mac, backends, dpid, port, family_of(address).neighbour_name, address),
                "" if ":" in address else " (a backend needs arp_ignore=1 and arp_announce=2)",
            )

    # -- whether they take connections --

    def reachable(self, backend: Backend) -> bool:
        mac, dpid, port = self.place(backend)
        if backend.forwarding == "gre" and dpid not in self.gre_switches:
            return False  # no tunnel where its gateway is
        return mac is not None and self.link_up(dpid, port)

    def usable(self, pool_name: str, backend: Backend) -> bool:
        """Found, its link up, its agent not saying down, and passing its
        checks (or its pool fails open)."""
        if not self.reachable(backend) or self.agents.says(pool_name, backend.ip) == "down":
            return False
        return pool_name in self.failing_open or self.health.healthy(pool_name, backend.ip)

    def fails_open(self, pool: Pool) -> bool:
        """Whether the pool fails open: its check allows it, and of the
        backends that could take new connections (found, link up, weight
        above 0) there are some and none passes, or (a panic threshold)
        fewer than that share of them. A pass over this pool's backends only."""
        check = pool.health_check
        if not check.fail_open:
            return False
        candidates = [b for b in pool.backends.values() if b.weight > 0 and self.reachable(b)]
        passing = sum(1 for b in candidates if self.health.healthy(pool.name, b.ip))
        return bool(candidates) and (not passing or 100 * passing < check.panic_threshold * len(candidates))

    def weights(self, pool: Pool, serving: bool = True) -> dict[str, int]:
        """Backends that take new connections, with their effective weights:
        found, link up, weight above 0, and passing their checks unless the
        pool fails open; a backend in its slow start at a share of its
        weight. Decided from ``pool`` itself, which may be a change not
        applied yet. ``serving``: the pool has VIPs (a backend that starts
        taking connections beside others then ramps)."""
        open_ = self.fails_open(pool)
        usable = {
            b.ip: b.weight
            for b in pool.backends.values()
            if b.weight > 0
            and self.reachable(b)
            and (open_ or self.health.healthy(pool.name, b.ip))
            and self.agents.says(pool.name, b.ip) == "up"
        }
        return self.weights_now.apply(pool, usable, serving)

    def holder_ips(self, pool: Pool) -> set[str]:
        """Addresses of the pool's backends that may hold connections."""
        holders = self.holders.get(pool.name, ())
        return {b.ip for b in pool.backends.values() if b.uid in holders}

    def state(self, pool_name: str, backend: Backend) -> tuple[str, str]:
        """(state, reason) of a backend of a pool now."""
        mac, dpid, port = self.place(backend)
        gateway = self.gateway(backend)
        if mac is None and gateway is not None:
            return (
                "unresolved",
                f"gateway {gateway} of its route has not answered {family_of(gateway).neighbour_name} yet",
            )
        if mac is None:
            return "unresolved", f"no answer to {family_of(backend.ip).neighbour_name} from the switch yet"
        if not self.link_up(dpid, port):
            return "down", f"switch {dpid:016x} port {port} is down"
        if backend.forwarding == "gre" and dpid not in self.gre_switches:
            name = self.settings.gre_port
            return "down", f"switch {dpid:016x}, where its gateway is, has no GRE port ({name})"
        if not self.health.healthy(pool_name, backend.ip):
            reason = self.reasons.get((pool_name, backend.ip), "health checks failed")
            if pool_name in self.failing_open and backend.weight > 0:
                reason += "; takes new connections: " + self._why_open(pool_name)
            return "unhealthy", reason
        if backend.weight == 0:
            return "draining", "weight 0: no new connections"
        said = self.agents.says(pool_name, backend.ip)
        if said != "up":
            line = self.agents.report(pool_name, backend.ip).line
            return ("draining" if said == "drain" else "unhealthy"), f"its agent said {line!r}"
        how = "configured" if backend.mac else f"found by {family_of(backend.ip).neighbour_name}"
        if gateway is not None:
            how = (
                f"routed ({backend.forwarding}) through gateway {gateway}, found by {family_of(gateway).neighbour_name}"
            )
        where = f" on switch {dpid:016x} port {port}" if dpid is not None else ""
        return "up", f"{how}: {mac}{where}"

    # -- one pool brought up to date --

    def _why_open(self, pool_name: str) -> str:
        threshold = self.open_thresholds.get(pool_name, 0)
        if threshold:
            return f"fewer than {threshold} % of the pool's backends pass, it fails open (panic threshold)"
        return "no backend of the pool passes, it fails open"

    def update_fail_open(self, pool: Pool) -> None:
        """Note (and log) whether the pool fails open now."""
        failing = self.fails_open(pool)
        self.open_thresholds[pool.name] = pool.health_check.panic_threshold
        if failing == (pool.name in self.failing_open):
            return
        if failing:
            self.failing_open.add(pool.name)
            LOG.warning("pool %s: %s: all take new connections", pool.name, self._why_open(pool.name))
        else:
            self.failing_open.discard(pool.name)
            LOG.warning("pool %s: no longer failing open", pool.name)

    def update_holders(self, pool: Pool) -> tuple[set[int], set[int]]:
        """Which of the pool's backends may hold connections now: usable
        ones, draining ones until their drain times out. Returns (before,
        now)."""
        now = self.clock()
        holders: set[int] = set()
        for backend in pool.backends.values():
            if not self.usable(pool.name, backend):
                continue
            if backend.weight == 0 or self.agents.says(pool.name, backend.ip) == "drain":
                self.draining_since.setdefault(backend.uid, now)
                if backend.uid not in self.timed_out_drains:
                    holders.add(backend.uid)
                continue
            self.draining_since.pop(backend.uid, None)
            self.timed_out_drains.discard(backend.uid)
            holders.add(backend.uid)
        before = self.holders.get(pool.name, set())
        self.holders[pool.name] = holders
        for uid in before - holders:
            if uid not in self.timed_out_drains:
                self.draining_since.pop(uid, None)
        return before, holders

    def expire_drains(self) -> list[tuple[int, set[str]]]:
        """Drained backends whose ``drain_timeout`` ended: they hold no
        connections any more. Returns each one's uid and the pools it left."""
        timeout = self.settings.drain_timeout
        if not timeout:
            return []
        now, ended = self.clock(), []
        for uid, since in list(self.draining_since.items()):
            if uid not in self.timed_out_drains and now - since >= timeout:
                self.timed_out_drains.add(uid)
                LOG.info("backend uid %d drained for %ds: its remaining connections move on", uid, timeout)
                pools = {name for name, holders in self.holders.items() if uid in holders}
                for name in pools:
                    self.holders[name].discard(uid)
                ended.append((uid, pools))
        return ended

    def update_health_targets(self, pool: Pool, config: Config) -> None:
        self._update_agent_targets(pool)
        self.weights_now.pool_changed(pool)
        check = pool.health_check
        vips = [config.vips[v] for v in sorted(config.vips_by_pool.get(pool.name, ()))]
        # every VIP address of the pool, probed in turn: a backend that lost one from lo fails
        every = tuple(sorted({vip.ip for vip in vips}))
        dscp = {vip.ip: vip.dscp for vip in vips if vip.dscp is not None}
        for backend in pool.backends.values():
            key = (pool.name, backend.ip)
            # a dscp backend: probed as its traffic goes (to its address, the DSCP naming each VIP address,
            # answered from the VIP), and at its own address (plainly reachable through the router); a gre
            # backend: each VIP address through the tunnel, and its own address plainly
            routed = backend.forwarding == "dscp"
            tunnel = backend.forwarding == "gre"
            addresses = (*every, backend.ip) if routed or tunnel else every if check.target == "vip" else ()
            if check.kind == "none" or not self.can_probe(check.kind, addresses or (backend.ip,)):
                self.health.forget(key)
                continue
            mac, dpid, port = self.place(backend)
            if mac is None or dpid not in self.health.online or not self.link_up(dpid, port) or (routed and not dscp):
                self.health.set_target(key, None)
                continue
            address = addresses[0] if addresses else backend.ip
            target = HealthTarget(
                pool.name, backend.ip, mac, dpid, port, check, address, addresses, dscp if routed else None, tunnel
            )
            self.health.set_target(key, target)

    def _update_agent_targets(self, pool: Pool) -> None:
        """Each backend's agent is asked at its own address, where it is found."""
        agent = pool.agent_check
        if agent is not None:
            self.agents.steps[pool.name] = agent.step
        for backend in pool.backends.values():
            key = (pool.name, backend.ip)
            if agent is None or not self.can_probe("tcp", (backend.ip,)):
                self.agents.forget(key)
                continue
            mac, dpid, port = self.place(backend)
            if mac is None or dpid not in self.agents.online or not self.link_up(dpid, port):
                self.agents.set_target(key, None)
                continue
            self.agents.set_target(
                key, HealthTarget(pool.name, backend.ip, mac, dpid, port, as_check(agent), backend.ip)
            )

    def can_probe(self, kind: str, addresses: Iterable[str]) -> bool:
        """Whether the controller has a source address for ``kind`` checks
        of these addresses (TCP and HTTP over IPv4 need ``probe_ip``)."""
        if kind not in ("tcp", "http"):
            return True
        settings = self.settings
        return all(family_of(ip).probe_source(settings.probe_mac, settings.probe_ip or None) for ip in addresses)

    def note_transitions(self, pool: Pool) -> list[tuple[str, str | None, str, str]]:
        """Log every change of a backend's state, and remember when it was;
        the changes, (ip, old state or None, new state, reason)."""
        changes = []
        for backend in pool.backends.values():
            key = (pool.name, backend.ip)
            state, reason = self.state(pool.name, backend)
            old = self.transitions.get(key)
            if old is None or old[0] != state:
                self.transitions[key] = (state, reason, utc_stamp(self.wall()))
                LOG.info(
                    "pool %s backend %s: %s -> %s (%s)", pool.name, backend.ip, old[0] if old else "new", state, reason
                )
                changes.append((backend.ip, old[0] if old else None, state, reason))
        return changes

    def forget(self, pool_name: str, ip: str) -> None:
        """A backend left a pool."""
        self.weights_now.forget(pool_name, ip)
        self.health.forget((pool_name, ip))
        self.agents.forget((pool_name, ip))
        self.transitions.pop((pool_name, ip), None)

    def pool_gone(self, pool: Pool) -> set[int]:
        """A pool was deleted; the uids of its backends whose pins go."""
        for ip in pool.backends:
            self.forget(pool.name, ip)
        self.failing_open.discard(pool.name)
        return self.holders.pop(pool.name, set())

    def failed_gone(self, pool_name: str, old: Pool, new: Pool | None) -> set[int]:
        """uids of a pool's failed backends that a change removes (or gives a new uid)."""
        return {
            backend.uid
            for ip, backend in old.backends.items()
            if (new is None or ip not in new.backends or new.backends[ip].uid != backend.uid)
            and (pool_name, ip) in self.reasons
        }

    # -- health --

    def checked(self, transitions: list[Transition], config: Config) -> dict[int, str | None]:
        """Health transitions noted and logged; what to save of them
        (backend uid -> why it failed, None: it passes again)."""
        failed: dict[int, str | None] = {}
        for change in transitions:
            if change.healthy:
                self.reasons.pop((change.pool, change.ip), None)
            else:
                self.reasons[(change.pool, change.ip)] = change.reason
            backend = config.pools.get(change.pool) and config.pools[change.pool].backends.get(change.ip)
            if backend:
                failed[backend.uid] = None if change.healthy else change.reason
            LOG.info(
                "pool %s backend %s: health %s (%s)",
                *(change.pool, change.ip, "passed" if change.healthy else "failed", change.reason),
            )
        return failed

    def passive(self, traffic: Any, counted: set[str], config: Config) -> list[Transition]:
        """The switch's passive signal (connections offered, not answered),
        for the backend MACs a poll counted and those already reported:
        logged once each way; a failed check where the pool says
        ``passive: fail``."""
        failed: list[Transition] = []
        for mac in sorted(counted | self.passive_low):
            ips = self.ips_by_mac.get(mac, set())
            passive = traffic.passive(mac)
            share = passive and passive["answered_share"]
            if share is not None and share < PASSIVE_LOW:
                failed += self._passive_failures(ips, share, config)
            if share is not None and share < PASSIVE_LOW and mac not in self.passive_low:
                self.passive_low.add(mac)
                LOG.warning(
                    "backend %s (%s) answered %.0f%% of the %.1f connections a second sent to it (%.1f resets a "
                    "second), seen by the switch",
                    *(", ".join(sorted(ips)), mac, share * 100, passive["offered_per_s"], passive["resets_per_s"]),
                )
            elif mac in self.passive_low and (share is None or share >= PASSIVE_OK):
                self.passive_low.discard(mac)
                LOG.info("backend %s (%s) answers its connections again", ", ".join(sorted(ips)), mac)
        return failed

    def _passive_failures(self, ips: set[str], share: float, config: Config) -> list[Transition]:
        """Health transitions of the backends at one MAC whose pool treats a
        low answered share as a failed check (``passive: fail``)."""
        now, failed = self.clock(), []
        for ip in sorted(ips):
            for name in sorted(config.pools_by_backend.get(ip, ())):
                if config.pools[name].health_check.passive == "fail":
                    reason = f"the switch saw it answer {share:.0%} of its new connections"
                    failed += self.health.fail((name, ip), reason, now)
        return failed
