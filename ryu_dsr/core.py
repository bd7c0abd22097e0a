"""The balancer's logic, free of Ryu: events in, commands for switches out.

The Ryu shell (``ryu_dsr/__init__.py``) turns OpenFlow events into calls on
``Balancer`` and hands it a ``send(dpid, commands)`` function; the REST API
(``ryu_dsr.rest``) calls the service methods. Time comes from an injected
clock.

Every change costs what it touches: a REST change is planned against the
desired state's indexes (``model.Config``), saved as the rows it changes
(``store``), and marks the rule owners it touches dirty on each switch
(``sync``); a learned host marks its own L2 rules, a health transition or a
backend found by ARP its pool's slot rules. The jobs live in their own
modules: ``slots`` (slot tables), ``locator`` (where backends are),
``health`` (checks), ``switches`` and ``sync`` (what each switch holds).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from ryu_dsr.effects import Effects
from ryu_dsr.fabric import DISCOVERY_ETHERTYPE, Fabric, discovery_frame, load_links, parse_discovery
from ryu_dsr.flows.compute import (
    AddressPlan,
    Handover,
    SlotTarget,
    SwitchPlan,
    VipPlan,
    backend_count_rules,
    base_rules,
    checked,
    fragment_vip,
    guard_rules,
    hash_group,
    host_rules,
    learn_meter,
    slot_rules,
    vip_address_rules,
    vip_rules,
)
from ryu_dsr.flows.packets import arp_probe, arp_reply, parse_arp, parse_ethernet
from ryu_dsr.flows.pipeline import (
    BASE_OWNER,
    MAX_SLOTS_OVS,
    Kind,
    Owner,
    Table,
    kind_of,
    owner_of,
    slot_owner,
    uid_of,
)
from ryu_dsr.flows.rules import Command, FlowAdd, FlowDelete, FlowDeleteByCookie, NormalFragments, PacketOut, Rule
from ryu_dsr.health import Health, HealthChecker
from ryu_dsr.health import Target as HealthTarget
from ryu_dsr.locator import BackendLocator, Location
from ryu_dsr.model import (
    Backend,
    Change,
    Config,
    Conflict,
    InvalidInput,
    NotFound,
    Pool,
    Vip,
)
from ryu_dsr.slots import HOLD, Planned, SlotPlanner, saved_form
from ryu_dsr.store import MemoryStore, Saved, Store
from ryu_dsr.switches import Switch
from ryu_dsr.traffic import Entry, Traffic

LOG = logging.getLogger("ryu_dsr")
REFUSAL_LOG_SECONDS = 60.0
PASSIVE_LOW = 0.5  # a backend that answers less than this share of its new connections is reported
DISCOVERY_SECONDS = 1.0  # discovery frames out of every port of every switch, this often
PASSIVE_OK = 0.9  # and is back once it answers this share


def event(method: Callable[..., Any]) -> Callable[..., Effects]:
    """An event of the balancer: it returns what it wants done. An event
    handled inside another adds to the outer one's effects."""

    @functools.wraps(method)
    def handle(self, *args: Any, **kwargs: Any) -> Effects:
        self.depth += 1
        try:
            method(self, *args, **kwargs)
        finally:
            self.depth -= 1
        if self.depth:
            return Effects()
        effects, self.effects = self.effects, Effects()
        return effects

    return handle


def utc_stamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class Balancer:
    """Desired state, runtime data, what each switch holds, and how to get
    from one to the other."""

    def __init__(
        self,
        settings: Any,
        store: Store | None = None,
        clock: Callable[[], float] = time.monotonic,
        saved: Saved | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """Events (a switch connected, a packet-in, a tick, a change of
        desired state) return ``Effects``: what the caller must carry out
        (packet-outs, switches with rule work for their writer, flow tables
        to read). A writer pulls ``step(dpid)`` while ``pending(dpid)``."""
        self.settings = settings
        self.store = store if store is not None else MemoryStore()
        self.clock = clock
        self.wall = wall
        self.effects = Effects()  # what the event being handled wants done so far
        self.depth = 0  # events handled now (one inside another returns nothing of its own)
        self.restore(saved if saved is not None else self.store.load())

    def restore(self, saved: Saved) -> None:
        """Start from saved state with no switch connected: at start, and
        when a controller of a cluster becomes master (or reads everything
        again), which then connects its switches as a restart does."""
        settings = self.settings
        self.config: Config = saved.config
        self.switches: dict[int, Switch] = {}
        self.fabric = Fabric()  # switches and the links between them (networkx)
        if settings.topology_file:
            self.fabric.declare(load_links(settings.topology_file))
        self.host_at: dict[str, tuple[int, int]] = {}  # MAC -> (switch, edge port) where it was learned
        self.discovered_at = -DISCOVERY_SECONDS  # when discovery frames last went out
        self.flood_holds: dict[int, float] = {}  # dpid -> when its newest ports may flood
        self.plans: dict[int, tuple[tuple, SwitchPlan]] = {}  # dpid -> (what it was made from, the plan)
        self.planner = SlotPlanner(
            settings.table_size,
            1 << settings.plain_slot_bits,
            settings.handover_window,
            settings.udp_handover_window,
        )
        self.locator = BackendLocator(settings.resolve_interval)
        self.health = HealthChecker(settings.probe_mac, settings.probe_ip or None)
        self.health_reasons: dict[tuple[str, str], str] = {}  # why a backend became unhealthy
        self.failing_open: set[str] = set()  # pools where no backend passes its checks, all taking connections
        self.transitions: dict[tuple[str, str], tuple[str, str, str]] = {}  # (pool, ip) -> state, reason, since
        self.pinnable: dict[str, set[int]] = {}  # pool -> backend uids whose pins may exist
        self.protocols: dict[str, frozenset[int]] = {}  # pool -> protocols of its VIPs
        self.draining_since: dict[int, float] = {}  # backend uid -> when its weight became 0
        self.timed_out_drains: set[int] = set()
        self.pool_names: dict[int, str] = {}  # uid -> name
        self.vip_names: dict[int, str] = {}
        self.at: dict[str, tuple[str | None, int | None, int | None]] = {}  # backend ip -> mac, dpid, port
        self.ips_by_mac: dict[str, set[str]] = {}
        self.ips_at: dict[tuple[int | None, int | None], set[str]] = {}
        # Started with no saved state: rules a switch holds for VIPs are
        # somebody's lost state, kept until the operator adopts (remembered
        # across restarts until then).
        fresh = self.store.fresh and not self.config.pools and settings.on_empty_state == "keep"
        self.keep_foreign = fresh or saved.flags.get("keep_foreign") == "yes"
        if fresh:
            self.store.write(flags={"keep_foreign": "yes"})
        self.counters = {
            "changes": 0,
            "rules_computed": 0,
            "write_failures": 0,
            "openflow_errors": 0,
            "switches_refused": 0,
        }
        self.traffic = Traffic()
        self.passive_low: set[str] = set()  # backend MACs that answer too few of their connections
        self.vip_arp: dict[str, tuple[str, float]] = {}  # backend ip -> VIP address it sent ARP for, when
        self.vip_arp_logged: dict[str, float] = {}  # MAC -> when its ARP for a VIP was last logged
        self.allowed = {int(dpid, 16) for dpid in settings.switches.split(",")} if settings.switches else None
        self.refused_at: dict[int, float] = {}  # dpid -> when its refusal was last logged
        now = self.clock()
        for ip, where in saved.found.items():
            self.locator.found[ip] = Location(where["mac"], where["dpid"], where["port"], now, now)
        for name, body in saved.slots.items():
            try:
                self.planner.restore(name, body, self.wall())
            except InvalidInput as error:
                LOG.warning("slot tables of pool %s not used (%s): rebuilt", name, error)
        for name, pool in self.config.pools.items():
            self.pool_names[pool.uid] = name
            for ip in pool.backends:
                self._locate(ip)
        for name, vip in self.config.vips.items():
            self.vip_names[vip.uid] = name
        for name, pool in self.config.pools.items():  # what the checks said before this start (or master)
            for ip, backend in pool.backends.items():
                if backend.uid in saved.health:
                    self.health.health[(name, ip)] = Health(healthy=False, last_result=saved.health[backend.uid])
                    self.health_reasons[(name, ip)] = saved.health[backend.uid]
        for name in self.config.pools:
            self._update_protocols(name)
            self._refresh_pool(name)

    # ================================================================ changes

    @event
    def commit(self, change: Change, who: str = "", remote: bool = False) -> None:
        """Accept a checked change: save it (with the slot tables it makes),
        then apply it and mark what it touches. If saving fails, nothing
        changes and the error goes to the caller. A ``remote`` change was
        saved by another controller of the cluster: only the runtime data
        it makes is saved here."""
        if not remote:
            self.check_settings(change)
        planned = {}
        for name, pool in change.pools.items():
            if pool is not None:
                planned[name] = self._plan_tables(pool)
        slots = {name: saved_form(plan) for name, plan in planned.items() if plan is not None}
        failed = dict.fromkeys(self._failed_backends_gone(change))  # their saved failures go with them
        if remote:
            self.store.write(slots=slots, health=failed)
        else:
            self.store.write(change, slots, health=failed)
        old_pools = {name: self.config.pools.get(name) for name in change.pools}
        old_vips = {name: self.config.vips.get(name) for name in change.vips}
        self.config.apply(change)
        self.counters["changes"] += 1
        touched: set[Owner] = set()
        protocol_pools: set[str] = set()  # pools whose VIPs' protocols may have changed
        for name, old in old_vips.items():
            new = change.vips[name]
            for vip in (old, new):
                if vip is not None:
                    touched |= {(Kind.VIP, vip.uid), (Kind.ADDRESS, vip.ip)}
                    protocol_pools.add(vip.pool)
            if old is not None and (new is None or new.uid != old.uid):
                self.vip_names.pop(old.uid, None)
                self.traffic.forget("vip", old.uid)
            if new is not None:
                self.vip_names[new.uid] = name
        for name, old in old_pools.items():
            new = change.pools[name]
            if old is not None:
                self.pool_names.pop(old.uid, None)
                if new is None or new.uid != old.uid:
                    touched |= self._pool_owners(name, uid=old.uid)
            if new is None:
                self.planner.forget(name)
                self.protocols.pop(name, None)
                touched |= self._pool_gone(name, old)
                continue
            self.pool_names[new.uid] = name
            protocol_pools.add(name)
            if planned.get(name) is not None:
                touched |= self._install_tables(name, planned[name])
            moved = set(new.backends) ^ set(old.backends if old else ())
            changed = {  # backends configured at another MAC or place: their slots' rules change
                ip
                for ip, backend in new.backends.items()
                if old and ip in old.backends and _placed(old.backends[ip]) != _placed(backend)
            }
            for ip in moved | changed:
                touched |= self._locate(ip)
            if moved | changed:
                touched.add((Kind.GUARD, new.uid))  # who may send from its addresses
            touched |= self._slots_of(name, changed) | (self._addresses_of(name) if changed else set())
            if old is not None:
                for ip in set(old.backends) - set(new.backends):
                    self.health.forget((name, ip))
                    self.transitions.pop((name, ip), None)
                    LOG.info("pool %s backend %s: removed", name, ip)
            touched |= self._refresh_pool(name, save=False, plan=False)
        for name in protocol_pools:
            if name in self.config.pools:
                if self._update_protocols(name):
                    touched |= self._pool_owners(name)
                self._update_health_targets(self.config.pools[name])  # a VIP check probes every VIP address
        if who:
            LOG.info("change by %s: %s", who, change.summary(self.config))
        self._mark(touched)
        self._probe(force=False)

    def _failed_backends_gone(self, change: Change) -> set[int]:
        """uids of the failed backends a change removes (or gives a new uid)."""
        gone = set()
        for name, pool in change.pools.items():
            old = self.config.pools.get(name)
            if old is None:
                continue
            for ip, backend in old.backends.items():
                replaced = pool is None or ip not in pool.backends or pool.backends[ip].uid != backend.uid
                if replaced and (name, ip) in self.health_reasons:
                    gone.add(backend.uid)
        return gone

    def check_settings(self, change: Change) -> None:
        """Refuse what the controller's settings cannot serve."""
        for name, pool in change.pools.items():
            if pool is not None and pool.health_check.kind in ("tcp", "http") and not self.settings.probe_ip:
                raise InvalidInput(
                    "health_check.kind",
                    f"pool {name}: {pool.health_check.kind} checks need the dsr.probe_ip setting "
                    "(an unused address in the backends' subnet)",
                )

    def _pool_gone(self, name: str, old: Pool | None) -> set[Owner]:
        touched: set[Owner] = set()
        if old is None:
            return touched
        for ip in old.backends:
            self.health.forget((name, ip))
            self.transitions.pop((name, ip), None)
            touched |= self._locate(ip)
        self._delete_pins(self.pinnable.pop(name, set()))
        self.failing_open.discard(name)
        return touched

    # --------------------------------------------------------------- status

    def backend_state(self, pool_name: str, backend: Backend) -> tuple[str, str]:
        """(state, reason) of a backend of a pool now."""
        mac, dpid, port = self.locator.where(backend)
        if mac is None:
            return "unresolved", "no answer to ARP from the switch yet"
        if not self._link_up(dpid, port):
            return "down", f"switch {dpid:016x} port {port} is down"
        if not self.health.healthy(pool_name, backend.ip):
            reason = self.health_reasons.get((pool_name, backend.ip), "health checks failed")
            if pool_name in self.failing_open and backend.weight > 0:
                reason += "; takes new connections: no backend of the pool passes, it fails open"
            return "unhealthy", reason
        if backend.weight == 0:
            return "draining", "weight 0: no new connections"
        how = "configured" if backend.mac else "found by ARP"
        where = f" on switch {dpid:016x} port {port}" if dpid is not None else ""
        return "up", f"{how}: {mac}{where}"

    # -- traffic, from the switches' counters --

    def pin_holders(self) -> set[int]:
        """Uids of the backends whose pins may exist (those in a handover)."""
        return set().union(*self.pinnable.values())

    @event
    def traffic_read(
        self,
        dpid: int,
        entries: list[Entry],
        pins: dict[int, int] | None = None,
        took: tuple[float, int] | None = None,
    ) -> None:
        """A poll of one switch's counting rules (DECIDE, CHOSEN and REPLIES)
        and of the pins of ``pin_holders`` (backend uid -> pins) came back
        (``took``: seconds from request to counted, and flows read).
        The passive signal (connections offered, not answered) is looked at
        for the backends it counted and those already reported, not for
        every backend."""
        if dpid not in self.switches:
            return
        counted = self.traffic.read(dpid, entries, self.clock())
        self.traffic.pins[dpid] = dict(pins or {})
        if took is not None:
            self.traffic.took[dpid] = took
        failed = []
        for mac in sorted(counted | self.passive_low):
            ips = self.ips_by_mac.get(mac, set())
            passive = self.traffic.passive(mac)
            share = passive and passive["answered_share"]
            if share is not None and share < PASSIVE_LOW:
                failed += self._passive_failures(ips, share)
            if share is not None and share < PASSIVE_LOW and mac not in self.passive_low:
                self.passive_low.add(mac)
                LOG.warning(
                    "backend %s (%s) answered %.0f%% of the %.1f connections a second sent to it (%.1f resets a "
                    "second), seen by the switch",
                    ", ".join(sorted(ips)),
                    mac,
                    share * 100,
                    passive["offered_per_s"],
                    passive["resets_per_s"],
                )
            elif mac in self.passive_low and (share is None or share >= PASSIVE_OK):
                self.passive_low.discard(mac)
                LOG.info("backend %s (%s) answers its connections again", ", ".join(sorted(ips)), mac)
        if failed:
            self._mark(self._apply_health([], failed))

    def _passive_failures(self, ips: set[str], share: float) -> list:
        """Health transitions of the backends at one MAC whose pool treats a
        low answered share as a failed check (``passive: fail``)."""
        now, failed = self.clock(), []
        for ip in sorted(ips):
            for name in sorted(self.config.pools_by_backend.get(ip, ())):
                if self.config.pools[name].health_check.passive == "fail":
                    reason = f"the switch saw it answer {share:.0%} of its new connections"
                    failed += self.health.fail((name, ip), reason, now)
        return failed

    def unconfirmed(self) -> dict[int, str]:
        """Switches whose rules are not yet in line with the desired state,
        and why (for a REST change that could not be confirmed)."""
        out = {}
        for dpid, switch in self.switches.items():
            if switch.failure:
                out[dpid] = f"its last write failed ({switch.failure}); resyncing"
            elif switch.rules.pending or switch.resyncing:
                out[dpid] = "still writing"
        return out

    # ============================================================== switches

    def admits(self, dpid: int) -> bool:
        """Whether a switch that connects is taken (``switches``); a refusal
        is counted, and logged once a minute per switch (a refused switch
        keeps reconnecting)."""
        if self.allowed is None or dpid in self.allowed:
            return True
        self.counters["switches_refused"] += 1
        now = self.clock()
        if now - self.refused_at.get(dpid, -REFUSAL_LOG_SECONDS) >= REFUSAL_LOG_SECONDS:
            self.refused_at[dpid] = now
            LOG.warning("switch %016x refused: not in dsr.switches; its connection is closed", dpid)
        return False

    @event
    def switch_connected(
        self,
        dpid: int,
        mode: str,
        installed: dict[tuple, int],
        description: str = "",
        ports_down: Iterable[int] = (),
        ports: Iterable[int] = (),
    ) -> None:
        """A switch (re)connected; ``installed`` is what it holds now (key ->
        cookie). Only the differences are sent, so a reconnect is hitless."""
        if self.settings.hash_mode != "auto":
            mode = self.settings.hash_mode
        first_plain = mode == "plain" and not self._plain_switches()
        switch = Switch(dpid, mode, description, set(ports_down))
        self.switches[dpid] = switch
        self.health.switch_online(dpid)
        self.fabric.switch_up(dpid, set(ports) - set(ports_down), self.clock())
        self._hold_flooding(switch)
        # Hosts this switch already forwards to stay learned: a restarted
        # controller changes nothing that is still right.
        for (table, _priority, match), cookie in installed.items():
            if table == Table.ETH_SRC and kind_of(cookie) == Kind.HOST:
                fields = dict(match)
                if "in_port" in fields and "eth_src" in fields:
                    self._learn(switch, fields["eth_src"], fields["in_port"])
        LOG.info(
            "switch %016x connected: %s, hashing in %s mode, %d flows found", dpid, description, mode, len(installed)
        )
        touched: set[Owner] = set()
        if first_plain:
            for name in self.config.pools:
                touched |= self._refresh_pool(name)
        else:
            for name in {n for ip in self._ips_on(dpid) for n in self.config.pools_by_backend.get(ip, ())}:
                touched |= self._refresh_pool(name)
        desired = self._all_owners(switch)
        switch.kept = self._foreign_owners(switch, installed, desired)
        # A switch we programmed before (a controller restart) keeps its
        # flooding as it is until a discovery round has shown its links.
        programmed = any(kind_of(cookie) == Kind.BASE for cookie in installed.values())
        switch.rules.load(installed, desired, keep=switch.kept | ({BASE_OWNER} if programmed else set()))
        switch.rules.setup = self._setup(switch)
        self._mark(touched)
        self._request_flush(switch)
        self._discover(switch)
        self._probe(force=True)

    @event
    def switch_disconnected(self, dpid: int) -> None:
        if self.switches.pop(dpid, None) is not None:
            for mac in [mac for mac, (at, _port) in self.host_at.items() if at == dpid]:
                del self.host_at[mac]
            self.flood_holds.pop(dpid, None)
            self.plans.pop(dpid, None)
            if self.fabric.switch_down(dpid):
                self._fabric_changed()
            self.health.switch_offline(dpid)
            self.traffic.switch_gone(dpid)
            LOG.info("switch %016x disconnected", dpid)

    @event
    def stalled(self, seconds: float) -> None:
        """The controller did not run for ``seconds`` (stopped, or starved):
        the answers to the health probes out were not read in time, so those
        probes end with no result rather than as failures."""
        dropped = self.health.drop_probes()
        LOG.warning(
            "the controller did not run for %.1f s: %d health probe(s) out end with no result", seconds, dropped
        )

    @event
    def port_changed(self, dpid: int, port: int, up: bool) -> None:
        switch = self.switches.get(dpid)
        if switch is None:
            return
        touched: set[Owner] = set()
        if up:
            switch.ports_down.discard(port)
            self.fabric.port_up(dpid, port, self.clock())
            self._hold_flooding(switch)
            self._discover(switch)
        else:
            switch.ports_down.add(port)
            for mac in [mac for mac, p in switch.hosts.items() if p == port]:
                self._forget_host(switch, mac)
                self._mark({(Kind.HOST, mac)})
            if self.fabric.port_down(dpid, port):
                self._fabric_changed()
        LOG.info("switch %016x port %d %s", dpid, port, "up" if up else "down")
        for ip in self.ips_at.get((dpid, port), ()):
            if not up:
                self.locator.lost(ip)
            mac = self.at[ip][0]
            switch.rules.mark([(Kind.HOST, mac), *self._guards_of(ip)])
            for name in self.config.pools_by_backend.get(ip, ()):
                touched |= self._refresh_pool(name)
        self._mark(touched)
        self._request_flush(switch)

    @event
    def packet_in(self, dpid: int, in_port: int, data: bytes) -> None:
        switch = self.switches.get(dpid)
        eth = parse_ethernet(data)
        if switch is None or eth is None:
            return
        sender = parse_discovery(data) if eth.ethertype == DISCOVERY_ETHERTYPE else None
        if sender is not None:
            switch.packet_ins["discovery"] += 1
            if self.fabric.link_seen(*sender, dpid, in_port, self.clock()):
                LOG.info("link: switch %016x port %d - switch %016x port %d", *sender, dpid, in_port)
                self._fabric_changed()
            return
        learned = [] if in_port in self.fabric.link_ports(dpid) else self._learn(switch, eth.src, in_port)
        if learned:
            self._mark({(Kind.HOST, mac) for mac in learned})
        arp = parse_arp(data)
        touched: set[Owner] = set()
        if arp is not None and arp.spa in self.config.vips_by_ip:
            reason = "vip_arp_claim"
            self._vip_claimed(arp.spa, eth.src, dpid, in_port)
        elif arp is not None and arp.op == 2 and eth.dst == self.settings.probe_mac:
            reason = "health_probe"
            touched = self._backend_answered(arp.spa, arp.sha, dpid, in_port)
        elif arp is not None and arp.op == 1:
            reason = "arp_request"
            self._answer_vip_arp(switch, in_port, arp)
        else:
            reason = "health_probe" if eth.dst == self.settings.probe_mac else "learning"
        switch.packet_ins[reason] += 1
        touched |= self._apply_health(*self.health.packet_in(self.clock(), data))
        self._mark(touched)
        if learned:
            self._request_flush(switch)

    @event
    def tick(self) -> None:
        """Periodic work: find unresolved backends, check health, end
        overdue drains."""
        self._probe(force=False)
        self._mark(self._apply_health(*self.health.tick(self.clock())))
        self._expire_drains()
        self._fabric_tick()
        ended = set()
        for name, slot in self.planner.expire(self.wall()):
            if name in self.config.pools:
                ended.add((Kind.POOL, slot_owner(self.config.pools[name].uid, slot)))
        self._mark(ended)

    # -- writing to a switch --

    def step(self, dpid: int) -> list[Command]:
        """The next step of commands that bring one switch in line: only the
        owners marked dirty are computed. A switch's writer calls it while
        ``pending(dpid)``."""
        switch = self.switches.get(dpid)
        if switch is None:
            return []
        commands = switch.rules.step(lambda who: self._rules_of(switch, who))
        switch.flow_mods += sum(1 for c in commands if isinstance(c, (FlowAdd, FlowDelete, FlowDeleteByCookie)))
        return commands

    def pending(self, dpid: int) -> bool:
        switch = self.switches.get(dpid)
        return switch is not None and switch.rules.pending and not switch.resyncing

    def writable(self, dpid: int) -> bool:
        """Taken, not being read again, its last write not failed: what is
        written to it now holds."""
        switch = self.switches.get(dpid)
        return switch is not None and not switch.resyncing and not switch.failure

    def failed(self, dpid: int) -> bool:
        switch = self.switches.get(dpid)
        return switch is not None and bool(switch.failure)

    def flow_mods(self, dpid: int) -> int:
        switch = self.switches.get(dpid)
        return switch.flow_mods if switch else 0

    def counts_traffic(self, dpid: int) -> bool:
        """Whether the switch holds counting rules (Open vSwitch mode)."""
        switch = self.switches.get(dpid)
        return switch is not None and switch.mode == "ovs"

    def progress(self) -> tuple:
        """Changes as writers make progress (a REST change waits while it does)."""
        return tuple((sw.flow_mods, sw.rules.rules_computed) for sw in self.switches.values())

    @event
    def write_failed(self, dpid: int, reason: str) -> None:
        """A write to the switch failed: logged, counted, and the switch is
        read again (a resync) before anything more is written to it."""
        switch = self.switches.get(dpid)
        if switch is None:
            return
        LOG.error("switch %016x: write failed (%s)", dpid, reason)
        switch.errors += 1
        switch.failure = reason
        self.counters["write_failures"] += 1
        self._resync(switch)

    @event
    def openflow_error(self, dpid: int, what: str) -> None:
        """The switch refused a message (matched to it by xid): log, count,
        resync."""
        switch = self.switches.get(dpid)
        if switch is None:
            return
        LOG.error("switch %016x refused %s", dpid, what)
        switch.errors += 1
        switch.failure = f"the switch refused {what}"
        self.counters["openflow_errors"] += 1
        self._resync(switch)

    def _resync(self, switch: Switch) -> None:
        if switch.resyncing:
            return
        switch.resyncing = True
        switch.resyncs += 1
        LOG.warning("switch %016x: resync from its flow table", switch.dpid)
        self.effects.reads.add(switch.dpid)

    @event
    def flows_read(self, dpid: int, installed: dict[tuple, int]) -> None:
        """The switch's flow table, read for a resync: compare everything."""
        switch = self.switches.get(dpid)
        if switch is None:
            return
        switch.rules.load(installed, self._all_owners(switch), keep=switch.kept)
        switch.rules.setup = self._setup(switch)
        switch.resyncing = False
        switch.failure = None
        self._request_flush(switch)

    def _foreign_owners(self, switch: Switch, installed: dict[tuple, int], desired: set[Owner]) -> set[Owner]:
        """While the controller started with no saved state (and nothing
        was made since), the VIP, address and slot rules a switch already
        holds are somebody's lost state: they are kept, and new objects get
        ids above theirs, until the operator adopts the empty state."""
        if not self.keep_foreign:
            return set()
        kept: set[Owner] = set()
        highest = 0
        for key, cookie in installed.items():
            kind = kind_of(cookie)
            if kind in (Kind.VIP, Kind.POOL, Kind.ADDRESS, Kind.PIN, Kind.GUARD):
                highest = max(highest, uid_of(cookie))
                who = owner_of(key, cookie)
                if who is not None and who not in desired:
                    kept.add(who)
        if kept:
            self.config.next_uid = max(self.config.next_uid, highest + 1)
            LOG.warning(
                "switch %016x holds rules of %d VIPs, addresses or slots this controller does not know "
                "(it started with no saved state): they are kept until POST /v1/state/adopt",
                switch.dpid,
                len(kept),
            )
        return kept

    def kept_owners(self) -> int:
        """Rule owners kept on the switches from a lost state, until adopted."""
        return sum(len(switch.kept) for switch in self.switches.values())

    @event
    def adopt(self, who: str = "") -> None:
        """The operator accepts the controller's state as it is: rules kept
        from a lost state are removed."""
        self.store.write(flags={"keep_foreign": "no"})
        self.keep_foreign = False
        removed = 0
        for switch in self.switches.values():
            removed += len(switch.kept)
            switch.rules.mark(switch.kept)
            switch.kept = set()
            self._request_flush(switch)
        LOG.warning("state adopted by %s: rules of %d unknown owners are removed", who or "an operator", removed)

    # ============================================================ internals

    def _setup(self, switch: Switch) -> list[Command]:
        """What a switch needs before its rules: normal fragment handling and
        the hash group (replaced in place if it exists, so its flows stay),
        and the MAC-learning meter."""
        meter = learn_meter(self._switch_plan(switch))
        ovs = [NormalFragments(), hash_group()] if switch.mode == "ovs" else []
        return ovs + ([meter] if meter else [])

    def _all_owners(self, switch: Switch) -> set[Owner]:
        owners: set[Owner] = {BASE_OWNER} | self._balancing_owners(switch)
        owners |= {(Kind.HOST, mac) for mac in self.host_at}
        owners |= {(Kind.HOST, mac) for mac in switch.hosts}
        owners |= {(Kind.HOST, mac) for mac in self.ips_by_mac}
        return owners

    def _balancing_owners(self, switch: Switch) -> set[Owner]:
        """Every VIP, address and slot owner (a switch that is not transit
        has their rules)."""
        owners: set[Owner] = set()
        for name, pool in self.config.pools.items():
            owners |= {(Kind.POOL, slot_owner(pool.uid, slot)) for slot in range(self._slot_size(name, switch.mode))}
        owners |= {(Kind.GUARD, pool.uid) for pool in self.config.pools.values()}
        owners |= {(Kind.VIP, v.uid) for v in self.config.vips.values()}
        owners |= {(Kind.ADDRESS, ip) for ip in self.config.vips_by_ip}
        return owners

    def _mark(self, owners: set[Owner]) -> None:
        if not owners:
            return
        for switch in self.switches.values():
            switch.rules.mark(owners)
            self._request_flush(switch)

    def _request_flush(self, switch: Switch) -> None:
        if switch.rules.pending:
            self.effects.writes.add(switch.dpid)

    def _out(self, dpid: int, commands: list[PacketOut]) -> None:
        self.effects.packet_outs += [(dpid, command) for command in commands]

    def _switch_plan(self, switch: Switch) -> SwitchPlan:
        """What a switch's rules depend on besides the objects: made again
        only when the fabric or the switch's flooding hold changed, not for
        every owner a write computes."""
        key = (switch.mode, self.fabric.version, switch.dpid in self.flood_holds)
        cached = self.plans.get(switch.dpid)
        if cached is not None and cached[0] == key:
            return cached[1]
        plan = SwitchPlan(
            mode=switch.mode,
            l2=self.settings.l2_mode,
            probe_mac=self.settings.probe_mac,
            probe_ip=self.settings.probe_ip or None,
            pin_idle_timeout=self.settings.pin_idle_timeout,
            pin_fin_timeout=self.settings.pin_fin_timeout,
            pin_limit=self.settings.pin_limit,
            packet_in_limit=self.settings.packet_in_limit,
            handover_tracking=self.settings.handover_tracking,
            conntrack_zone=self.settings.conntrack_zone,
            links=tuple(sorted(self.fabric.link_ports(switch.dpid))) if self.settings.l2_mode == "learning" else (),
            flood=self.fabric.flood_ports(switch.dpid, self.clock()) if self._holds_flooding(switch) else None,
        )
        self.plans[switch.dpid] = (key, plan)
        return plan

    def _holds_flooding(self, switch: Switch) -> bool:
        """Flooding is by explicit ports once the switch is in a fabric, or
        while a port of it is new (it may be a link not yet seen)."""
        return self.fabric.in_fabric(switch.dpid) or switch.dpid in self.flood_holds

    def _rules_of(self, switch: Switch, who: Owner) -> list[Rule]:
        """Every rule one owner should have on one switch."""
        kind, ident = who
        plan = self._switch_plan(switch)
        if switch.transit and kind in (Kind.POOL, Kind.VIP, Kind.ADDRESS, Kind.GUARD):
            return []  # nothing enters the fabric here: no balancing
        if kind == Kind.POOL:
            uid, slot = divmod(ident, MAX_SLOTS_OVS)
            name = self.pool_names.get(uid)
            if name is None:
                return []
            size = self._slot_size(name, switch.mode)
            table = self.planner.table(name, size)
            target = self._slot_target(name, table[slot]) if slot < len(table) else None
            handover = self.handover_of(name, slot) if switch.mode == "ovs" else None
            return checked(slot_rules(plan, uid, slot, size, target, self.protocols.get(name, frozenset()), handover))
        if kind == Kind.VIP:
            name = self.vip_names.get(ident)
            return checked(vip_rules(plan, self._vip_plan(name, switch.mode))) if name else []
        if kind == Kind.ADDRESS:
            return checked(vip_address_rules(plan, self._address_plan(switch, ident)))
        if kind == Kind.HOST:
            place = self._host_place(ident)
            here = place is not None and place[0] == switch.dpid
            counted = backend_count_rules(plan, ident) if ident in self.ips_by_mac and not switch.transit else []
            return checked(host_rules(plan, ident, self._host_port(switch, ident), learned=here) + counted)
        if kind == Kind.GUARD:
            name = self.pool_names.get(ident)
            return checked(guard_rules(plan, ident, self._senders_here(switch, name))) if name else []
        if who == BASE_OWNER:
            return checked(base_rules(plan))
        return []

    def _address_plan(self, switch: Switch, ip: str) -> AddressPlan:
        vips = self.config.address_vips(ip)
        if not vips:
            return AddressPlan(ip, None)
        # Backends on this switch are allowed from their ports; those on
        # other switches reach this one over links, which skip the guard.
        senders: dict[str, int | None] = {}
        placed, found = True, False
        for name in {vip.pool for vip in vips}:
            for backend in self.config.pools[name].backends.values():
                mac = self.locator.where(backend)[0]
                if not mac:
                    continue
                found = True
                place = self._host_place(mac)
                if place is None:
                    placed, senders[mac] = False, None  # not known where: let it send from anywhere
                elif place[0] == switch.dpid:
                    senders[mac] = place[1]
        return AddressPlan(
            ip,
            vips[0].mac,
            self._macs_behind(vips),
            fragment_vip([self._vip_plan(vip.name, switch.mode) for vip in vips]),
            tuple(sorted(senders.items())),
            placed and found,  # every backend known where: the rest may not send from the address
            self.config.pools[vips[0].pool].uid if len({vip.pool for vip in vips}) == 1 else None,
            tuple(sorted((v.ip_proto, v.backend_port, v.port) for v in vips if v.backend_port is not None)),
        )

    def _addresses_of(self, name: str) -> set[Owner]:
        """The VIP address owners of a pool's VIPs."""
        return {(Kind.ADDRESS, self.config.vips[v].ip) for v in self.config.vips_by_pool.get(name, ())}

    def _macs_behind(self, vips: list[Vip]) -> tuple[str, ...]:
        """The MACs of the backends that may hold connections of these VIPs."""
        macs = set()
        for name in {vip.pool for vip in vips}:
            holders = self.pinnable.get(name, set())
            for backend in self.config.pools[name].backends.values():
                mac = self.locator.where(backend)[0]
                if backend.uid in holders and mac:
                    macs.add(mac)
        return tuple(sorted(macs))

    def _slot_size(self, pool: str, mode: str) -> int:
        return self.planner.plain_size if mode == "plain" else self.planner.size(pool)

    def _slot_target(self, name: str, ip: str | None) -> SlotTarget | None:
        """Where a slot holding backend ``ip`` sends: None if it takes no new
        connections."""
        backend = self.config.pools[name].backends.get(ip) if ip else None
        if backend is None or backend.weight == 0 or not self._usable(name, backend):
            return None
        return SlotTarget(self.locator.where(backend)[0], backend.uid)

    def handover_of(self, name: str, slot: int) -> Handover | None:
        """A slot's handover now: None unless it moved within a window from
        a backend that still holds connections."""
        move = self.planner.move(name, slot)
        if move is None:
            return None
        backend = self.config.pools[name].backends.get(move.old)
        if backend is None or backend.uid not in self.pinnable.get(name, ()):
            return None
        age = self.wall() - move.since
        tcp, udp = age < self.settings.handover_window, age < self.settings.udp_handover_window
        if not (tcp or udp):
            return None
        first = None
        if age < HOLD:  # the hold: new connections stay where they went, if that backend still takes them
            leader = self.config.pools[name].backends.get(move.leader)
            if leader is not None and leader.uid in self.pinnable.get(name, ()):
                first = self._target_of(leader)
        return Handover(self._target_of(backend), tcp, udp, first)

    def _target_of(self, backend: Backend) -> SlotTarget:
        return SlotTarget(self.locator.where(backend)[0], backend.uid)

    def _vip_plan(self, name: str, mode: str) -> VipPlan:
        vip = self.config.vips[name]
        pool = self.config.pools[vip.pool]
        n_slots = self._slot_size(vip.pool, mode)
        return VipPlan(vip.uid, vip.ip, vip.mac, vip.ip_proto, vip.port, vip.hash, pool.uid, n_slots, vip.backend_port)

    def _host_port(self, switch: Switch, mac: str) -> int | None:
        """Where a MAC is forwarded on this switch: its own port when the
        host is here (a backend's own location wins over learning), else the
        port towards the switch it is on (the fabric's shortest path)."""
        where = self._host_place(mac)
        if where is None:
            return None
        dpid, port = where
        if dpid == switch.dpid:
            return port if switch.link_up(port) else None
        return self.fabric.next_port(switch.dpid, dpid)

    def _senders_here(self, switch: Switch, name: str) -> tuple[tuple[str, int], ...]:
        """(MAC, port) of a pool's backends on this switch, their link up."""
        senders = set()
        for ip in self.config.pools[name].backends:
            mac, dpid, port = self.at.get(ip, (None, None, None))
            if mac and dpid == switch.dpid and port is not None and switch.link_up(port):
                senders.add((mac, port))
        return tuple(sorted(senders))

    def _guards_of(self, ip: str) -> set[Owner]:
        """The guard owners of a backend's pools."""
        return {(Kind.GUARD, self.config.pools[n].uid) for n in self.config.pools_by_backend.get(ip, ())}

    def _host_place(self, mac: str) -> tuple[int, int] | None:
        """(switch, edge port) of a host: a backend's location, else where
        it was learned."""
        for ip in self.ips_by_mac.get(mac, ()):
            _mac, dpid, port = self.at[ip]
            if dpid is not None and port is not None:
                return dpid, port
        return self.host_at.get(mac)

    # -- the fabric: links between switches, found by discovery frames --

    def _discover(self, switch: Switch) -> None:
        """Send a discovery frame out of every port of the switch: the
        switch at the other end of a link hands it back (packet-in)."""
        commands = [
            PacketOut(discovery_frame(self.settings.probe_mac, switch.dpid, port), port)
            for port in sorted(self.fabric.ports.get(switch.dpid, {}))
        ]
        if commands:
            self._out(switch.dpid, commands)

    def _hold_flooding(self, switch: Switch) -> None:
        """New ports flood only after a discovery round could show them to
        be links: the switch's flood rule is rewritten when the hold ends."""
        until = self.fabric.held_until(switch.dpid)
        if until is not None and until > self.clock():
            self.flood_holds[switch.dpid] = max(until, self.flood_holds.get(switch.dpid, 0.0))

    def _fabric_tick(self) -> None:
        now = self.clock()
        if now - self.discovered_at >= DISCOVERY_SECONDS:
            self.discovered_at = now
            for switch in self.switches.values():
                self._discover(switch)
            if self.fabric.expire(now):
                LOG.info("links not seen for %.1f s are gone", self.fabric.link_timeout)
                self._fabric_changed()
        for dpid, until in list(self.flood_holds.items()):
            if until <= now and dpid in self.switches:
                del self.flood_holds[dpid]
                self.switches[dpid].rules.mark([BASE_OWNER])
                self._request_flush(self.switches[dpid])

    def _fabric_changed(self) -> None:
        """Links came or went: paths and the flooding tree are computed
        again; the writer sends only the rules that differ (the hosts whose
        path moved, flooding where the tree moved). A switch that became, or
        stopped being, transit gains or loses the balancing rules."""
        hosts = {(Kind.HOST, mac) for mac in set(self.host_at) | set(self.ips_by_mac)}
        for switch in self.switches.values():
            switch.rules.mark([BASE_OWNER, *hosts])
            transit = self.fabric.transit(switch.dpid)
            if transit != switch.transit:
                switch.transit = transit
                LOG.info("switch %016x is %s", switch.dpid, "transit: no VIP rules" if transit else "an edge")
                switch.rules.mark(self._balancing_owners(switch))
            self._request_flush(switch)

    def _flood_out(self, switch: Switch) -> int | str | tuple[int, ...]:
        """Where a frame the controller sends to every host goes: every port
        of a switch alone, the edge ports of a switch in a fabric (the other
        switches send their own copy)."""
        if not self.fabric.in_fabric(switch.dpid):
            return "flood"
        ports = set(self.fabric.flood_ports(switch.dpid, self.clock()))
        return tuple(sorted(ports & self.fabric.edge_ports(switch.dpid)))

    # -- backends: where they are and whether they take traffic --

    def _locate(self, ip: str) -> set[Owner]:
        """Recompute where a backend is (configured or found); index it; the
        host owners whose forwarding changes."""
        pools = self.config.pools_by_backend.get(ip)
        old = self.at.get(ip)
        if not pools:
            new = None
            self.locator.want(ip, False, self.clock())
            self.locator.forget(ip)
            self.vip_arp.pop(ip, None)
        else:
            backends = [self.config.pools[name].backends[ip] for name in sorted(pools)]
            self.locator.want(ip, not any(b.mac for b in backends), self.clock())
            configured = next((b for b in backends if b.mac or b.dpid is not None), backends[0])
            new = self.locator.where(configured)
        if old == new:
            return set()
        touched: set[Owner] = set()
        if old is not None:
            self.at.pop(ip)
            if old[0]:
                self.ips_by_mac[old[0]].discard(ip)
                if not self.ips_by_mac[old[0]]:
                    del self.ips_by_mac[old[0]]
                touched.add((Kind.HOST, old[0]))
            self.ips_at[(old[1], old[2])].discard(ip)
            if not self.ips_at[(old[1], old[2])]:
                del self.ips_at[(old[1], old[2])]
        if new is not None:
            self.at[ip] = new
            if new[0]:
                self.ips_by_mac.setdefault(new[0], set()).add(ip)
                touched.add((Kind.HOST, new[0]))
            self.ips_at.setdefault((new[1], new[2]), set()).add(ip)
        return touched | self._guards_of(ip)  # where it may send from its VIP addresses

    def _ips_on(self, dpid: int) -> set[str]:
        return {ip for (at_dpid, _port), ips in self.ips_at.items() if at_dpid == dpid for ip in ips}

    def _link_up(self, dpid: int | None, port: int | None) -> bool:
        switch = self.switches.get(dpid) if dpid is not None else None
        return switch is None or switch.link_up(port)

    def _reachable(self, backend: Backend) -> bool:
        mac, dpid, port = self.locator.where(backend)
        return mac is not None and self._link_up(dpid, port)

    def _usable(self, pool_name: str, backend: Backend) -> bool:
        """Found, its link up, and passing its checks (or its pool fails open)."""
        if not self._reachable(backend):
            return False
        return pool_name in self.failing_open or self.health.healthy(pool_name, backend.ip)

    def _fails_open(self, pool: Pool) -> bool:
        """Whether the pool fails open: its check allows it, and of the
        backends that could take new connections (found, link up, weight
        above 0) there are some and none passes. A pass over this pool's
        backends only."""
        if not pool.health_check.fail_open:
            return False
        candidates = [b for b in pool.backends.values() if b.weight > 0 and self._reachable(b)]
        return bool(candidates) and not any(self.health.healthy(pool.name, b.ip) for b in candidates)

    def _update_fail_open(self, pool: Pool) -> None:
        """Note (and log) whether the pool fails open now."""
        failing = self._fails_open(pool)
        if failing == (pool.name in self.failing_open):
            return
        if failing:
            self.failing_open.add(pool.name)
            LOG.warning("pool %s: no backend passes its checks: failing open, all take new connections", pool.name)
        else:
            self.failing_open.discard(pool.name)
            LOG.warning("pool %s: no longer failing open", pool.name)

    def _weights(self, pool: Pool) -> dict[str, int]:
        """Backends that take new connections: found, link up, weight above 0,
        and passing their checks unless the pool fails open. Decided from
        ``pool`` itself, which may be a change not applied yet."""
        open_ = self._fails_open(pool)
        return {
            b.ip: b.weight
            for b in pool.backends.values()
            if b.weight > 0 and self._reachable(b) and (open_ or self.health.healthy(pool.name, b.ip))
        }

    def _plain_switches(self) -> bool:
        return any(sw.mode == "plain" for sw in self.switches.values())

    def _install_tables(self, name: str, planned: Planned) -> set[Owner]:
        """Install a pool's new tables; the owners of the slots that change
        (every slot, and the pool's VIPs, when the table grows)."""
        old_size = self.planner.sizes.get(name)
        old_tables = self.planner.tables.get(name, {})
        self.planner.install(name, planned)
        size, tables = planned.size, planned.tables
        if old_size != size:
            vips = self.config.vips_by_pool.get(name, ())
            return self._pool_owners(name) | {(Kind.VIP, self.config.vips[v].uid) for v in vips}
        uid = self.config.pools[name].uid
        touched: set[Owner] = set()
        for each, table in tables.items():
            old = old_tables.get(each)
            if old is None or len(old) != len(table):
                touched |= {(Kind.POOL, slot_owner(uid, slot)) for slot in range(len(table))}
            else:
                touched |= {(Kind.POOL, slot_owner(uid, slot)) for slot, (a, b) in enumerate(zip(old, table)) if a != b}
        return touched

    def _pool_owners(self, name: str, uid: int | None = None) -> set[Owner]:
        """Every slot owner of a pool (of its current uid, or ``uid``), and its guard."""
        uid = self.config.pools[name].uid if uid is None else uid
        size = max(self.planner.sizes.get(name, 0), self.planner.plain_size if self._plain_switches() else 0)
        return {(Kind.POOL, slot_owner(uid, slot)) for slot in range(size)} | {(Kind.GUARD, uid)}

    def _slots_of(self, name: str, ips: set[str]) -> set[Owner]:
        """The slot owners that send to these backends (their MAC changed)."""
        if not ips:
            return set()
        uid = self.config.pools[name].uid
        touched: set[Owner] = set()
        for table in self.planner.tables.get(name, {}).values():
            touched |= {(Kind.POOL, slot_owner(uid, slot)) for slot, ip in enumerate(table) if ip in ips}
        return touched

    def _update_protocols(self, name: str) -> bool:
        """The protocols of the VIPs using a pool (a slot has a rule for
        each); True if they changed."""
        protocols = frozenset(self.config.vips[v].ip_proto for v in self.config.vips_by_pool.get(name, ()))
        changed = self.protocols.get(name) != protocols
        self.protocols[name] = protocols
        return changed

    def _plan_tables(self, pool: Pool):
        # Backends that may hold connections; none while no VIP uses the pool
        # (backends found one after another in a new pool hand nothing over).
        holders = set()
        if self.config.vips_by_pool.get(pool.name):
            holders = {b.ip for b in pool.backends.values() if b.uid in self.pinnable.get(pool.name, ())}
        return self.planner.plan(
            pool.name, len(pool.backends), self._weights(pool), self._plain_switches(), self.wall(), holders
        )

    def _refresh_pool(self, name: str, save: bool = True, plan: bool = True) -> set[Owner]:
        """Bring one pool's runtime data up to date (slot tables unless
        ``plan`` is False, drains, pins, health targets, states); the owners
        whose rules change."""
        pool = self.config.pools[name]
        touched: set[Owner] = set()
        self._update_fail_open(pool)
        planned = self._plan_tables(pool) if plan else None
        if planned is not None:
            touched |= self._install_tables(name, planned)
            if save:
                self.store.write(slots={name: self.planner.saved(name)})
        now = self.clock()
        pinnable: set[int] = set()
        for backend in pool.backends.values():
            if not self._usable(name, backend):
                continue
            if backend.weight == 0:
                self.draining_since.setdefault(backend.uid, now)
                if backend.uid not in self.timed_out_drains:
                    pinnable.add(backend.uid)
                continue
            self.draining_since.pop(backend.uid, None)
            self.timed_out_drains.discard(backend.uid)
            pinnable.add(backend.uid)
        before = self.pinnable.get(name, set())
        self.pinnable[name] = pinnable
        for uid in before - pinnable:
            if uid not in self.timed_out_drains:
                self.draining_since.pop(uid, None)
        if before - pinnable:
            touched |= self._end_handovers(name)
        if before != pinnable:  # the backends ICMP for the pool's VIP addresses goes to
            touched |= self._addresses_of(name)
        self._delete_pins(before - pinnable)
        self._update_health_targets(pool)
        self._note_transitions(pool)
        return touched

    def _end_handovers(self, name: str) -> set[Owner]:
        """Slots handing over from backends that hold no connections any more
        (dead, removed, drain timed out) stop doing so; the slots' owners."""
        if name not in self.config.pools:
            return set()
        pool = self.config.pools[name]
        holders = {b.ip for b in pool.backends.values() if b.uid in self.pinnable.get(name, ())}
        ended = self.planner.drop_moves(name, holders)
        if ended:
            self.store.write(slots={name: self.planner.saved(name)})
        return {(Kind.POOL, slot_owner(pool.uid, slot)) for slot in ended}

    def _delete_pins(self, uids: set[int]) -> None:
        """Queue the deletion of these backends' pins on every switch (sent
        after the slot rules that stop making new ones)."""
        if not uids:
            return
        for switch in self.switches.values():
            switch.rules.pins_to_delete |= uids
            self._request_flush(switch)

    def _update_health_targets(self, pool: Pool) -> None:
        check = pool.health_check
        enabled = check.kind != "none" and (check.kind not in ("tcp", "http") or self.settings.probe_ip)
        addresses: tuple[str, ...] = ()
        if check.target == "vip" and self.config.vips_by_pool.get(pool.name):
            # every VIP address of the pool, probed in turn: a backend that lost one from lo fails
            addresses = tuple(sorted({self.config.vips[v].ip for v in self.config.vips_by_pool[pool.name]}))
        for backend in pool.backends.values():
            key = (pool.name, backend.ip)
            if not enabled:
                self.health.forget(key)
                continue
            mac, dpid, port = self.locator.where(backend)
            if mac is None or dpid not in self.switches or not self._link_up(dpid, port):
                self.health.set_target(key, None)
                continue
            address = addresses[0] if addresses else backend.ip
            target = HealthTarget(pool.name, backend.ip, mac, dpid, port, check, address, addresses)
            self.health.set_target(key, target)

    def _note_transitions(self, pool: Pool) -> None:
        """Log every change of a backend's state, and remember when it was."""
        for backend in pool.backends.values():
            key = (pool.name, backend.ip)
            state, reason = self.backend_state(pool.name, backend)
            old = self.transitions.get(key)
            if old is None or old[0] != state:
                self.transitions[key] = (state, reason, utc_stamp(self.wall()))
                LOG.info(
                    "pool %s backend %s: %s -> %s (%s)", pool.name, backend.ip, old[0] if old else "new", state, reason
                )

    def _learn(self, switch: Switch, mac: str, port: int) -> list[str]:
        if int(mac[:2], 16) & 1 or mac == self.settings.probe_mac:
            return []
        changed = switch.learn(mac, port, self.settings.max_hosts)
        for each in changed:
            if each in switch.hosts:
                before = self.host_at.get(each)
                self.host_at[each] = (switch.dpid, switch.hosts[each])
                moved_from = self.switches.get(before[0]) if before and before[0] != switch.dpid else None
                if moved_from is not None:  # the host moved to another switch
                    moved_from.hosts.pop(each, None)
            elif self.host_at.get(each, (None,))[0] == switch.dpid:
                del self.host_at[each]
        return changed

    def _forget_host(self, switch: Switch, mac: str) -> None:
        switch.hosts.pop(mac, None)
        if self.host_at.get(mac, (None,))[0] == switch.dpid:
            del self.host_at[mac]

    def _backend_answered(self, ip: str, mac: str, dpid: int, port: int) -> set[Owner]:
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
                ip,
                mac,
                dpid,
                port,
            )
        if outcome != "moved":
            return set()
        LOG.info("backend %s found at %s on switch %016x port %d", ip, mac, dpid, port)
        self.store.write(found={ip: {"mac": mac, "dpid": dpid, "port": port}})
        touched = self._locate(ip)
        for name in self.config.pools_by_backend.get(ip, ()):
            touched |= self._refresh_pool(name) | self._slots_of(name, {ip}) | self._addresses_of(name)  # new MAC
        return touched

    def _vip_claimed(self, address: str, mac: str, dpid: int, port: int) -> None:
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
                "%s (%s) on switch %016x port %d sends ARP for VIP address %s: not heard by other hosts "
                "(a backend needs arp_ignore=1 and arp_announce=2)",
                mac,
                backends,
                dpid,
                port,
                address,
            )

    def _answer_vip_arp(self, switch: Switch, in_port: int, arp) -> None:
        """Plain mode: the switch sends ARP for a VIP (or the probe address)
        here; answer it."""
        if self.settings.probe_ip and arp.tpa == self.settings.probe_ip:
            self._out(switch.dpid, [PacketOut(arp_reply(arp, self.settings.probe_mac), in_port)])
            return
        vips = self.config.address_vips(arp.tpa)
        if vips:
            self._out(switch.dpid, [PacketOut(arp_reply(arp, vips[0].mac), in_port)])

    def _probe(self, force: bool) -> None:
        """ARP for backends without a configured MAC: often while not found,
        now and then once found."""
        if not self.switches:
            return
        now = self.clock()
        for ip in self.locator.due(now, force):
            frame = arp_probe(self.settings.probe_mac, ip)
            target = None if force else self.locator.target(ip, now)
            at = self.switches.get(target[0]) if target else None
            if at is not None and at.link_up(target[1]):
                self._out(at.dpid, [PacketOut(frame, target[1])])  # out of its own port only
                continue
            for switch in self.switches.values():
                self._out(switch.dpid, [PacketOut(frame, self._flood_out(switch))])

    def _apply_health(self, sends, transitions) -> set[Owner]:
        for send in sends:
            switch = self.switches.get(send.dpid)
            if switch is not None:
                port = send.port if send.port is not None else self._flood_out(switch)
                self._out(send.dpid, [PacketOut(send.frame, port)])
        touched: set[Owner] = set()
        failed: dict[int, str | None] = {}  # saved where a new master reads them (etcd)
        for change in transitions:
            if change.healthy:
                self.health_reasons.pop((change.pool, change.ip), None)
            else:
                self.health_reasons[(change.pool, change.ip)] = change.reason
            backend = self.config.pools.get(change.pool) and self.config.pools[change.pool].backends.get(change.ip)
            if backend:
                failed[backend.uid] = None if change.healthy else change.reason
            LOG.info(
                "pool %s backend %s: health %s (%s)",
                change.pool,
                change.ip,
                "passed" if change.healthy else "failed",
                change.reason,
            )
            if change.pool in self.config.pools:
                touched |= self._refresh_pool(change.pool)
        if failed:
            self.store.write(health=failed)
        return touched

    def _expire_drains(self) -> None:
        timeout = self.settings.drain_timeout
        if not timeout:
            return
        now = self.clock()
        for uid, since in list(self.draining_since.items()):
            if uid not in self.timed_out_drains and now - since >= timeout:
                self.timed_out_drains.add(uid)
                LOG.info("backend uid %d drained for %ds: its remaining connections move on", uid, timeout)
                self._delete_pins({uid})
                for name, pinnable in self.pinnable.items():
                    if uid in pinnable:
                        pinnable.discard(uid)
                        self._mark(self._end_handovers(name))


def _placed(backend: Backend) -> tuple:
    return backend.mac, backend.dpid, backend.port


__all__ = ["Balancer", "Conflict", "InvalidInput", "NotFound"]
