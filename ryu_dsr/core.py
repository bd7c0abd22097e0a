"""The balancer: events in, ``Effects`` out. Free of Ryu.

The Ryu shell (``ryu_dsr/shell.py``) turns OpenFlow events into calls here
and carries out the effects that come back; REST changes arrive through
``ryu_dsr/service.py``. Time comes from injected clocks.

The state lives in rooms of its own, each kind apart:

- ``Desired`` (``desired.py``): pools and VIPs, their slot tables, the store;
- ``Backends`` (``backends.py``): where backends are, health, drains, pins;
- ``L2`` (``l2.py``): links, learned hosts, flooding, discovery;
- ``Switches`` (``switches.py``): what each connected switch holds;
- ``RuleSource`` (``rulesource.py``): an owner's rules on a switch, from
  read-only views of the three above;
- ``Traffic`` (``traffic.py``): running totals of the switches' counters.

This module only coordinates: each event asks the rooms what changed and
marks the rule owners it touched on the switches; a switch's writer then
pulls ``step(dpid)``, which computes and diffs those owners only.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ryu_dsr.backends import Backends, utc_stamp
from ryu_dsr.desired import Desired
from ryu_dsr.discovery import DISCOVERY_ETHERTYPE, new_key
from ryu_dsr.effects import Effects
from ryu_dsr.flows.family import family_of, neighbour_of
from ryu_dsr.flows.frames import parse_ethernet
from ryu_dsr.flows.pipeline import BASE_OWNER, Kind, Owner, Table, kind_of, services_mark
from ryu_dsr.flows.rules import PacketOut
from ryu_dsr.handovers import WATCH_SECONDS, Handovers, unpinned_packets
from ryu_dsr.health import Transition
from ryu_dsr.history import History
from ryu_dsr.l2 import L2
from ryu_dsr.model import Backend, Change, Config, Pool
from ryu_dsr.rulesource import RuleSource
from ryu_dsr.slots import HOLD, saved_form
from ryu_dsr.store import MemoryStore, Saved, Store
from ryu_dsr.switches import Switch, Switches, lost_state
from ryu_dsr.traffic import Entry, Traffic

LOG = logging.getLogger("ryu_dsr")

__all__ = ["Balancer", "Effects", "utc_stamp"]


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


class Balancer:
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
        self.clock = clock
        self.wall = wall
        self.effects = Effects()  # what the event being handled wants done so far
        self.depth = 0  # events handled now (one inside another returns nothing of its own)
        store = store if store is not None else MemoryStore()
        self.restore(saved if saved is not None else store.load(), store)

    def restore(self, saved: Saved, store: Store | None = None) -> None:
        """Start from saved state with no switch connected: at start, and
        when a controller of a cluster becomes master (or reads everything
        again), which then connects its switches as a restart does."""
        settings = self.settings
        store = store or self.store
        allowed = {int(dpid, 16) for dpid in settings.switches.split(",")} if settings.switches else None
        self.switches = Switches(allowed, self.clock)
        self.desired = Desired(settings, store, saved, self.wall)
        self.backends = Backends(settings, self.clock, self.wall, self.switches.link_up)
        self.l2 = L2(settings, self.clock, self.wall, self._discovery_key(saved, store))
        self.rules = RuleSource(settings, self.desired, self.backends, self.l2, self.clock, self.wall)
        self.traffic = Traffic()
        self.history = History(bucket=max(1.0, float(settings.stats_interval)))
        self.handovers = Handovers(settings.handover_quiet, self.wall)
        self.watched_at = 0.0  # when the quiet of slots in a handover was last looked at
        self.changes = 0  # changes of desired state accepted
        # Started with no saved state: rules a switch holds for VIPs are
        # somebody's lost state, kept until the operator adopts (remembered
        # across restarts until then).
        fresh = store.fresh and not self.config.pools and settings.on_empty_state == "keep"
        self.keep_foreign = fresh or saved.flags.get("keep_foreign") == "yes"
        if fresh:
            store.write(flags={"keep_foreign": "yes"})
        self.backends.restore(saved.found, saved.health, self.config)
        for pool in self.config.pools.values():
            for ip in pool.backends:
                self._locate(ip)
        for name in self.config.pools:
            self._refresh_pool(name)

    def _discovery_key(self, saved: Saved, store: Store) -> bytes:
        """The key of the discovery frames: the operator's file, or one made
        at the first start and kept with the state (so every controller of
        a cluster holds the same, and a restart keeps it)."""
        if self.settings.discovery_key_file:
            with open(self.settings.discovery_key_file, "rb") as handle:
                return handle.read().strip()
        key = saved.flags.get("discovery_key")
        if not key:
            key = new_key()
            store.write(flags={"discovery_key": key})
            saved.flags["discovery_key"] = key
        return bytes.fromhex(key)

    @property
    def config(self) -> Config:
        return self.desired.config

    @property
    def store(self) -> Store:
        return self.desired.store

    @property
    def counters(self) -> dict[str, int]:
        return {
            "changes": self.changes,
            "write_failures": self.switches.write_failures,
            "openflow_errors": self.switches.openflow_errors,
            "switches_refused": self.switches.refused,
        }

    # ================================================================ changes

    @event
    def commit(self, change: Change, who: str = "", remote: bool = False) -> None:
        """Accept a checked change: save it (with the slot tables it makes),
        then apply it and mark what it touches. If saving fails, nothing
        changes and the error goes to the caller. A ``remote`` change was
        saved by another controller of the cluster: only the runtime data
        it makes is saved here."""
        planned = {name: self._plan_tables(pool) for name, pool in change.pools.items() if pool is not None}
        slots = {name: saved_form(plan) for name, plan in planned.items() if plan is not None}
        gone: set[int] = set()  # failed backends the change removes: their saved failures go with them
        for name, pool in change.pools.items():
            if name in self.config.pools:
                gone |= self.backends.failed_gone(name, self.config.pools[name], pool)
        failed = dict.fromkeys(gone)
        self.store.write(None if remote else change, slots, health=failed)
        touched: set[Owner] = set()
        for name, pool in change.pools.items():  # a pool deleted or made anew: every rule of its old uid goes
            old = self.config.pools.get(name)
            if old is not None and (pool is None or pool.uid != old.uid):
                touched |= self.desired.pool_owners(name, uid=old.uid, plain=self.switches.plain)
        old_pools, old_vips = self.desired.apply(change)
        self.changes += 1
        protocol_pools: set[str] = set()  # pools whose VIPs' protocols may have changed
        for name, old in old_vips.items():
            new = change.vips[name]
            for vip in (old, new):
                if vip is not None:
                    touched |= {(Kind.VIP, vip.uid), (Kind.ADDRESS, vip.ip)}
                    protocol_pools.add(vip.pool)
                    if vip.pool in self.config.pools:  # its pool's mark digests its VIPs (one gone too)
                        touched.add(services_mark(self.config.pools[vip.pool].uid))
            if old is not None and (new is None or new.uid != old.uid):
                self.traffic.forget("vip", old.uid)
        for name, old in old_pools.items():
            new = change.pools[name]
            if new is None:
                touched |= self._pool_gone(old)
                continue
            protocol_pools.add(name)
            touched |= self._pool_changed(name, old, new, planned.get(name))
        for name in protocol_pools:
            if name in self.config.pools:
                if self.desired.update_protocols(name):
                    touched |= self.desired.pool_owners(name, plain=self.switches.plain)
                self.backends.update_health_targets(self.config.pools[name], self.config)  # a VIP check: every VIP
        if who:
            LOG.info("change by %s: %s", who, change.summary(self.config))
        self._mark(touched)
        self._probe(force=False)

    def _pool_changed(self, name: str, old: Pool | None, new: Pool, planned: Any) -> set[Owner]:
        touched: set[Owner] = set()
        if planned is not None:
            touched |= self._install(name, planned)
        moved = set(new.backends) ^ set(old.backends if old else ())
        changed = {  # backends configured at another MAC or place: their slots' rules change
            ip
            for ip, backend in new.backends.items()
            if old and ip in old.backends and _placed(old.backends[ip]) != _placed(backend)
        }
        for ip in moved | changed:
            touched |= self._locate(ip)
        if moved | changed:
            touched |= {(Kind.GUARD, new.uid), (Kind.HANDOVER, new.uid)}  # who may send from its addresses; handovers
        if changed:
            touched |= self.desired.slots_of(name, changed) | self.desired.addresses_of(name)
        if old is not None:
            for ip in set(old.backends) - set(new.backends):
                self.backends.forget(name, ip)
                LOG.info("pool %s backend %s: removed", name, ip)
        return touched | self._refresh_pool(name, save=False, plan=False)

    def _pool_gone(self, old: Pool | None) -> set[Owner]:
        if old is None:
            return set()
        self.handovers.forget(old.name)
        self._delete_pins(self.backends.pool_gone(old))
        touched: set[Owner] = set()
        for ip in old.backends:
            touched |= self._locate(ip)
        return touched

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
            self._wake(switch)
        LOG.warning("state adopted by %s: rules of %d unknown owners are removed", who or "an operator", removed)

    # ============================================================== switches

    def admits(self, dpid: int) -> bool:
        return self.switches.admits(dpid)

    @event
    def switch_connected(
        self,
        dpid: int,
        mode: str,
        installed: dict[tuple, int],
        description: str = "",
        ports_down: Iterable[int] = (),
        ports: Iterable[int] = (),
        port_macs: Mapping[int, str] | None = None,
        port_names: Mapping[int, str] | None = None,
    ) -> None:
        """A switch (re)connected; ``installed`` is what it holds now (key ->
        cookie). Only the differences are sent, so a reconnect is hitless.
        ``port_macs``: the ports' own MAC addresses (frames from these are
        the switch's own, not a host's); ``port_names``: port number -> name
        (the one named by the gre_port setting carries gre backends' traffic,
        and is no port of the L2 fabric)."""
        if self.settings.hash_mode != "auto":
            mode = self.settings.hash_mode
        first_plain = mode == "plain" and not self.switches.plain
        switch = self.switches[dpid] = Switch(dpid, mode, description, set(ports_down))
        switch.rules.marks_of = self.rules.marks_of
        gre = [port for port, name in (port_names or {}).items() if name == self.settings.gre_port]
        switch.gre_port = gre[0] if gre else None
        ports = set(ports) - set(gre)
        if gre:
            self.backends.gre_switches.add(dpid)
        else:
            self.backends.gre_switches.discard(dpid)
        self._tracking(switch)
        self.backends.health.switch_online(dpid)
        self.backends.agents.switch_online(dpid)
        discovery = self.l2.switch_up(switch, set(ports) - set(ports_down), port_macs or {})
        # Hosts this switch already forwards to stay learned: a restarted
        # controller changes nothing that is still right.
        for (table, _priority, match), cookie in installed.items():
            if table == Table.ETH_SRC and kind_of(cookie) == Kind.HOST:
                fields = dict(match)
                if "in_port" in fields and "eth_src" in fields:
                    self.l2.learn(switch, fields["eth_src"], fields["in_port"], self.switches)
        LOG.info(
            "switch %016x connected: %s, hashing in %s mode, %d flows found", dpid, description, mode, len(installed)
        )
        touched: set[Owner] = set()
        names = (
            self.config.pools
            if first_plain
            else {n for ip in self.backends.ips_on(dpid) for n in self.config.pools_by_backend.get(ip, ())}
        )
        for name in names:
            touched |= self._refresh_pool(name)
        desired = self.rules.owners(switch)
        # A switch we programmed before (a controller restart) keeps its
        # flooding as it is until a discovery round has shown its links.
        programmed = any(kind_of(cookie) == Kind.BASE for cookie in installed.values())
        switch.rules.load(installed, desired, keep={BASE_OWNER} if programmed else ())
        switch.kept = self._foreign_owners(switch, installed, desired)
        # The flows a pool's marks on the switch vouch for (what they would
        # be computed to be now) are not computed again.
        switch.rules.leave(switch.kept | self.rules.vouched(switch))
        switch.rules.setup = self.rules.setup(switch)
        self._mark(touched)
        self._wake(switch)
        self._out(dpid, discovery)
        self._probe(force=True)

    def _tracking(self, switch: Switch) -> None:
        """How the switch's handovers keep new TCP connections, until its
        zone is prepared (``tracking_prepared``); ask for that where it may
        make a difference."""
        wanted, remote = self.settings.handover_tracking, self.settings.ovsdb_remote
        if wanted == "learn":
            switch.tracking, switch.tracking_reason = "learn", "handover_tracking = learn"
            return
        if wanted == "conntrack":
            switch.tracking, switch.tracking_reason = "conntrack", "handover_tracking = conntrack"
        elif not remote:
            switch.tracking, switch.tracking_reason = (
                "learn",
                "ovsdb_remote is empty: the zone's timeout policy cannot be set",
            )
            return
        else:
            switch.tracking, switch.tracking_reason = "learn", "its zone's timeout policy is being set over OVSDB"
        if remote and switch.mode == "ovs":
            self.effects.zones.add(switch.dpid)

    @event
    def tracking_prepared(self, dpid: int, done: bool, reason: str) -> None:
        """The switch's OVSDB said whether the handover zone has its timeout
        policy (``reason`` says what was done, or why not): with
        ``handover_tracking = auto`` its handovers use the tracker if so,
        learn if not. Its slots in a handover are written again."""
        switch = self.switches.get(dpid)
        if switch is None:
            return
        forced = self.settings.handover_tracking == "conntrack"
        switch.tracking = "conntrack" if done or forced else "learn"
        switch.tracking_reason = reason if done else f"{reason}" + ("" if forced else ": handovers use learn")
        if done:
            LOG.info("switch %016x: handovers use the connection tracker (%s)", dpid, reason)
        else:
            LOG.warning("switch %016x: %s", dpid, switch.tracking_reason)
        for name, moves in self.desired.planner.moves.items():
            switch.rules.mark(self.desired.slot_owners(name, moves))
        self._wake(switch)

    @event
    def switch_disconnected(self, dpid: int) -> None:
        # (its GRE port, as its links, is taken as it was last seen: a lost connection moves no backend)
        if self.switches.pop(dpid, None) is not None:
            self.rules.forget(dpid)
            if self.l2.switch_down(dpid):
                self._fabric_changed()
            self.backends.health.switch_offline(dpid)
            self.backends.agents.switch_offline(dpid)
            self.traffic.switch_gone(dpid)
            self.history.forget_switch(dpid)
            self.handovers.switch_gone(dpid)
            LOG.info("switch %016x disconnected", dpid)

    @event
    def port_changed(self, dpid: int, port: int, up: bool, mac: str | None = None) -> None:
        switch = self.switches.get(dpid)
        if switch is None:
            return
        if mac:
            self.l2.port_mac(dpid, port, mac)
        if up:
            switch.ports_down.discard(port)
            discovery = self.l2.port_up(switch, port)
        else:
            switch.ports_down.add(port)
            forgotten, links_changed = self.l2.port_down(switch, port)
            self._mark({(Kind.HOST, mac) for mac in forgotten})
            if links_changed:
                self._fabric_changed()
        LOG.info("switch %016x port %d %s", dpid, port, "up" if up else "down")
        switch.rules.mark([BASE_OWNER])  # flooding: a new port waits for discovery, a flapping one is held
        touched: set[Owner] = set()
        for ip in self.backends.ips_by_port.get((dpid, port), ()):
            if not up:
                self.backends.locator.lost(ip)
            switch.rules.mark([(Kind.HOST, self.backends.places[ip][0]), *self.desired.guards_of(ip)])
            for name in self.config.pools_by_backend.get(ip, ()):
                touched |= self._refresh_pool(name)
        self._mark(touched)
        self._wake(switch)
        if up:
            self._out(dpid, discovery)

    @event
    def packet_in(self, dpid: int, in_port: int, data: bytes) -> None:
        switch = self.switches.get(dpid)
        eth = parse_ethernet(data)
        if switch is None or eth is None:
            return
        if eth.ethertype == DISCOVERY_ETHERTYPE:
            switch.packet_ins["discovery"] += 1
            changed, replies = self.l2.frame_in(dpid, in_port, data)
            if changed:
                self._fabric_changed()
            self._out(dpid, replies)
            return
        learned = self.l2.learn(switch, eth.src, in_port, self.switches)
        self._mark({(Kind.HOST, mac) for mac in learned})
        found = neighbour_of(data)
        message = found[1] if found else None
        touched: set[Owner] = set()
        probe_mac = self.settings.probe_mac
        if message is not None and message.sender_ip in self.config.vips_by_ip:
            reason = "vip_arp_claim"
            self.backends.vip_claimed(message.sender_ip, eth.src, dpid, in_port)
        elif message is not None and not message.request and eth.dst == probe_mac:
            reason = "health_probe"
            touched = self._backend_answered(message.sender_ip, message.sender_mac, dpid, in_port)
        elif message is not None and message.request:
            reason = "arp_request"
            self._answer(switch, in_port, found[0], message)
        else:
            reason = "health_probe" if eth.dst == probe_mac else "learning"
        switch.packet_ins[reason] += 1
        touched |= self._health(*self.backends.health.packet_in(self.clock(), data))
        touched |= self._agents(*self.backends.agents.packet_in(self.clock(), data))
        self._mark(touched)

    @event
    def tick(self) -> None:
        """Periodic work: find unresolved backends, check health, end
        overdue drains, discover links, end handover holds and windows."""
        self._probe(force=False)
        self._mark(self._health(*self.backends.health.tick(self.clock())))
        self._mark(self._agents(*self.backends.agents.tick(self.clock())))
        for uid, pools in self.backends.expire_drains():
            self._delete_pins({uid})
            for name in pools:
                self._mark(self._end_moves(name))
        frames, links_changed, released = self.l2.tick(self.switches)
        self.effects.packet_outs += frames
        if links_changed:
            self._fabric_changed()
        for dpid in released:  # the flooding hold ended: the flood rule now floods the new ports
            self.switches[dpid].rules.mark([BASE_OWNER])
            self._wake(self.switches[dpid])
        self._mark(self.desired.expire())
        for name in self.backends.weights_now.adaptive_due(self.config.pools):  # weights that follow the measured load
            if not self.desired.planner.checking(name) and self.backends.weights_now.adapt(
                self.config.pools[name], self.traffic.answered
            ):
                self._mark(self._refresh_pool(name))
        for name in self.backends.weights_now.agents_due(self.config.pools):  # agents' shares, applied in bounded steps
            if not self.desired.planner.checking(name) and self.backends.weights_now.step_agents(
                self.config.pools[name]
            ):
                self._mark(self._refresh_pool(name))
        for name in self.backends.weights_now.ramps_due(self.config.pools):  # slow starts that reached a step
            if not self.desired.planner.checking(name):  # one move at a time: the last one is checked first
                self._mark(self._refresh_pool(name))
        for name in self.handovers.overdue():  # a switch did not say: its slots hand over
            self._mark(self._settle(name, carried_all=True))
        self._end_quiet()

    @event
    def stalled(self, seconds: float) -> None:
        """The controller did not run for ``seconds`` (stopped, or starved):
        the answers to the health probes out were not read in time, so those
        probes end with no result rather than as failures."""
        dropped = self.backends.health.drop_probes()
        self.backends.agents.drop_probes()
        LOG.warning(
            "the controller did not run for %.1f s: %d health probe(s) out end with no result", seconds, dropped
        )

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
        (``took``: seconds from request to counted, and flows read). The
        passive signal is looked at for the backends it counted and those
        already reported, not for every backend."""
        if dpid not in self.switches:
            return
        counted = self.traffic.read(dpid, entries, self.clock())
        switch = self.switches[dpid]
        grown = self.traffic.hosts_grown[dpid]  # (the backends' growth: the charts keep nothing of VIPs)
        self.history.polled(self.clock(), grown, dpid, len(switch.rules.installed), switch.errors)
        self.backends.weights_now.sample_load(self.config.pools, self.traffic.active)
        self.traffic.pins[dpid] = dict(pins or {})
        if took is not None:
            self.traffic.took[dpid] = took
        failed = self.backends.passive(self.traffic, counted, self.config)
        if failed:
            self._mark(self._health([], failed))

    def traffic_part(self, dpid: int, entries: list[Entry]) -> None:
        """One reply of a poll of the switch's counting rules came in (a
        large table comes in many): compared with the last poll now, so
        that no single step of the controller reads the whole table; the
        poll ends with ``traffic_read``."""
        if dpid in self.switches:
            self.traffic.read_part(dpid, entries)

    def pin_holders(self) -> set[int]:
        """Uids of the backends whose pins may exist (those in a handover)."""
        return set().union(*self.backends.holders.values())

    # -- writing to a switch (its writer pulls ``switches.step(dpid, rules.rules_of)``) --

    @event
    def write_failed(self, dpid: int, reason: str) -> None:
        """A write to the switch failed: logged, counted, and the switch is
        read again (a resync) before anything more is written to it."""
        if dpid in self.switches:
            LOG.error("switch %016x: write failed (%s)", dpid, reason)
        if self.switches.failed(dpid, reason):
            self.effects.reads.add(dpid)

    @event
    def neighbour_answers_refused(self, dpid: int, what: str) -> None:
        """The switch cannot make an IPv6 advertisement itself (a kernel
        datapath: Open vSwitch sets nd_reserved and nd_options_type in its
        userspace datapath only): from now on its solicitations for VIPs
        come here and are answered by the controller. Its rules are read
        and written again without those."""
        switch = self.switches.get(dpid)
        if switch is None:
            return
        if switch.neighbour_answers:
            switch.neighbour_answers = False
            LOG.warning(
                "switch %016x cannot answer IPv6 Neighbor Solicitations itself (it refused %s): "
                "the controller answers them",
                *(dpid, what),
            )
        if self.switches.failed(dpid, f"the switch refused {what}", refused=True):
            self.effects.reads.add(dpid)

    @event
    def openflow_error(self, dpid: int, what: str) -> None:
        """The switch refused a message (matched to it by xid): log, count, resync."""
        if dpid in self.switches:
            LOG.error("switch %016x refused %s", dpid, what)
        if self.switches.failed(dpid, f"the switch refused {what}", refused=True):
            self.effects.reads.add(dpid)

    @event
    def flows_read(self, dpid: int, installed: dict[tuple, int]) -> None:
        """The switch's flow table, read for a resync: compare everything."""
        switch = self.switches.get(dpid)
        if switch is None:
            return
        switch.rules.load(installed, self.rules.owners(switch), keep=switch.kept)
        switch.rules.setup = self.rules.setup(switch)
        switch.resyncing = False
        switch.failure = None
        self._wake(switch)

    def _foreign_owners(self, switch: Switch, installed: dict[tuple, int], desired: set[Owner]) -> set[Owner]:
        """While the controller started with no saved state (and nothing
        was made since), the VIP, address and slot rules a switch already
        holds are somebody's lost state: they are kept, and new objects get
        ids above theirs, until the operator adopts the empty state."""
        if not self.keep_foreign:
            return set()
        kept, highest = lost_state(installed, switch.rules.owner_keys, desired)
        if kept:
            self.config.next_uid = max(self.config.next_uid, highest + 1)
            LOG.warning(
                "switch %016x holds rules of %d VIPs, addresses or slots this controller does not know "
                "(it started with no saved state): they are kept until POST /v1/state/adopt",
                *(switch.dpid, len(kept)),
            )
        return kept

    # ============================================================ internals

    def _mark(self, owners: set[Owner]) -> None:
        self.effects.writes |= self.switches.mark(owners)

    def _wake(self, switch: Switch) -> None:
        if switch.rules.pending:
            self.effects.writes.add(switch.dpid)

    def _out(self, dpid: int, commands: list[PacketOut]) -> None:
        self.effects.packet_outs += [(dpid, command) for command in commands]

    def _delete_pins(self, uids: set[int]) -> None:
        self.effects.writes |= self.switches.delete_pins(uids)

    def _locate(self, ip: str) -> set[Owner]:
        moved, touched = self.backends.locate(ip, self.config)
        # not moved: a routed backend behind a gateway already found may still need its routed rule (a new uid)
        return touched | self.desired.guards_of(ip) if moved else touched

    def _fabric_changed(self) -> None:
        """Links came or went: paths and the flooding tree are computed
        again; the writer sends only the rules that differ (the hosts whose
        path moved, flooding where the tree moved). A switch that became, or
        stopped being, transit gains or loses the balancing rules."""
        hosts = {(Kind.HOST, mac) for mac in set(self.l2.host_at) | set(self.backends.ips_by_mac)}
        for switch in self.switches.values():
            switch.rules.mark([BASE_OWNER, *hosts])
            transit = self.l2.fabric.transit(switch.dpid)
            if transit != switch.transit:
                switch.transit = transit
                LOG.info("switch %016x is %s", switch.dpid, "transit: no VIP rules" if transit else "an edge")
                switch.rules.mark(self.desired.balancing_owners(switch.mode))
            self._wake(switch)

    def _install(self, name: str, planned: Any) -> set[Owner]:
        """Install a pool's new slot tables; the slots that move from a
        backend that may hold connections are first checked: their
        counters are read on every switch that balances (``Effects.counts``)."""
        touched = self.desired.install_tables(name, planned, self.switches.plain)
        base = self.desired.planner.smallest[name]  # a slot of a grown table carries its twin's history
        if self.desired.planner.checking(name):
            edges = self._edges()
            if edges:
                self.effects.counts |= self.handovers.check(name, self.config.pools[name].uid, base, edges)
            else:  # no switch to ask: they hand over
                touched |= self._settle(name, carried_all=True)
        return touched

    def _edges(self) -> set[int]:
        """Switches that balance in Open vSwitch mode (where handovers are)."""
        return {dpid for dpid, switch in self.switches.items() if switch.mode == "ovs" and not switch.transit}

    def _settle(self, name: str, carried_all: bool = False) -> set[Owner]:
        """A pool's moved slots checked: those that carried packets hand
        over from now, the others move at once; the slots whose rules change."""
        slots = self.desired.planner.checking(name)
        if carried_all:
            self.handovers.forget(name)
            busy = set(slots)
        else:
            busy = self.handovers.finish(name, slots)
        changed = self.desired.planner.checked(name, busy, self.wall())
        if slots:
            LOG.info(
                "pool %s: %d moved slots carried no packet and move at once; %d hand over their connections",
                *(name, len(slots) - len(busy), len(busy)),
            )
            self.desired.save_tables(name)
        return self.desired.slot_owners(name, changed)

    @event
    def slots_counted(self, dpid: int, pool_uid: int, packets: dict[int, int]) -> None:
        """A switch's slot counters of a pool came back (slot -> packets
        since its rule was written) for the check of its moved slots."""
        name = self.desired.pool_names.get(pool_uid)
        if name is not None and self.handovers.counted(name, dpid, packets):
            self._mark(self._settle(name))

    def watched(self) -> set[int]:
        """The old backends of slots in a handover (their pins are counted,
        with the slots' counters, to tell when the handover can end)."""
        uids = set()
        for name, moves in self.desired.planner.moves.items():
            backends = self.config.pools[name].backends if name in self.config.pools else {}
            uids |= {backends[move.old].uid for move in moves.values() if move.checked and move.old in backends}
        return uids

    @event
    def handover_read(self, dpid: int, entries: list[tuple[int, int, int, dict, int]], pins: dict[int, int]) -> None:
        """A switch's counters of slots in a handover came back: rules of
        tables MOVED and TRACKED (table, priority, cookie, match, packets)
        and each watched backend's pins' packets."""
        switch = self.switches.get(dpid)
        if switch is not None:
            self.handovers.read(dpid, unpinned_packets(entries), pins)

    def _end_quiet(self) -> None:
        """End the TCP windows of moved slots whose older connections went
        quiet (``Handovers``); the UDP window and the hold run their course."""
        now = self.wall()
        if now - self.watched_at < WATCH_SECONDS:
            return
        self.watched_at = now
        edges = self._edges()
        quiet = self.settings.handover_quiet
        least = max(quiet, self.settings.udp_handover_window, HOLD)  # the UDP window and the hold run their course
        for name, ended in self.handovers.quiet_slots(self.desired.planner.moves, self.config.pools, edges, least):
            uid = self.config.pools[name].uid
            self.desired.planner.end(name, ended)
            self.handovers.ended(uid, ended)
            self.desired.save_tables(name)
            LOG.info(
                "pool %s: %d slots end their handover: what they kept went quiet for %d s", name, len(ended), quiet
            )
            self._mark(self.desired.slot_owners(name, ended))
        self.handovers.watching(self.watched())

    def _plan_tables(self, pool: Pool):
        return self.desired.plan_tables(
            pool,
            self.backends.weights(pool, serving=bool(self.config.vips_by_pool.get(pool.name))),
            self.switches.plain,
            self.backends.holder_ips(pool),
        )

    def _refresh_pool(self, name: str, save: bool = True, plan: bool = True) -> set[Owner]:
        """Bring one pool's runtime data up to date (slot tables unless
        ``plan`` is False, drains, pins, health targets, states); the owners
        whose rules change."""
        pool = self.config.pools[name]
        touched: set[Owner] = set()
        self.backends.update_fail_open(pool)
        planned = self._plan_tables(pool) if plan else None
        if planned is not None:
            touched |= self._install(name, planned)
            if save:
                self.desired.save_tables(name)
        before, holders = self.backends.update_holders(pool)
        if before - holders:
            touched |= self._end_moves(name)
        if before != holders:  # the backends ICMP for the pool's VIP addresses goes to
            touched |= self.desired.addresses_of(name)
        self._delete_pins(before - holders)
        self.backends.update_health_targets(pool, self.config)
        now = self.clock()
        for ip, old, new, reason in self.backends.note_transitions(pool):
            self.history.changed(now, name, ip, old, new, reason)
        for ip, was, weight, why in self.backends.weights_now.note(pool):
            self.history.changed(now, name, ip, f"weight {was}", f"weight {weight}", why)
        return touched

    def _end_moves(self, name: str) -> set[Owner]:
        pool = self.config.pools.get(name)
        return self.desired.end_moves(name, self.backends.holder_ips(pool)) if pool else set()

    def _backend_answered(self, ip: str, mac: str, dpid: int, port: int) -> set[Owner]:
        if not self.backends.answered(ip, mac, dpid, port):
            return set()
        self.store.write(found={ip: {"mac": mac, "dpid": dpid, "port": port}})
        touched: set[Owner] = set()
        # the backend itself, or (a gateway) the dscp backends routed through it
        ips = ({ip} & set(self.config.pools_by_backend)) | self.backends.behind.get(ip, set())
        for each in sorted(ips):
            touched |= self._locate(each)
            for name in self.config.pools_by_backend.get(each, ()):  # its new MAC: its slots and addresses
                touched |= (
                    self._refresh_pool(name) | self.desired.slots_of(name, {each}) | self.desired.addresses_of(name)
                )
        return touched

    def _answer(self, switch: Switch, in_port: int, family, request) -> None:
        """Neighbour requests the switch sends here: all of them in plain
        mode, IPv6's duplicate address detection and solicitations without
        a link-layer option in any. A host testing a VIP address for itself
        is told it is taken (and reported)."""
        probe_mac = self.settings.probe_mac
        if request.target_ip == family.probe_source(probe_mac, self.settings.probe_ip or None):
            self._out(switch.dpid, [PacketOut(family.reply(request, probe_mac), in_port)])
            return
        vips = self.config.address_vips(request.target_ip)
        if not vips:
            return
        if request.sender_ip == family.unspecified:
            LOG.warning(
                "switch %016x port %d: %s tested VIP address %s for itself (duplicate address detection): told it is taken",
                *(switch.dpid, in_port, request.sender_mac, request.target_ip),
            )
        self._out(switch.dpid, [PacketOut(family.reply(request, vips[0].mac), in_port)])

    def _probe(self, force: bool) -> None:
        """ARP for backends without a configured MAC: often while not found,
        now and then once found."""
        if not self.switches:
            return
        now = self.clock()
        locator = self.backends.locator
        for ip in locator.due(now, force):
            frame = family_of(ip).probe(self.settings.probe_mac, ip)
            target = None if force else locator.target(ip, now)
            on = self.switches.get(target[0]) if target else None
            if on is not None and on.link_up(target[1]):
                self._out(on.dpid, [PacketOut(frame, target[1])])  # out of its own port only
                continue
            for switch in self.switches.values():
                self._out(switch.dpid, [PacketOut(frame, self.l2.flood_out(switch.dpid))])

    def _health(self, sends, transitions: list[Transition]) -> set[Owner]:
        """Health probes out; transitions noted, saved (where a new master
        reads them) and their pools brought up to date."""
        for send in sends:
            switch = self.switches.get(send.dpid)
            if switch is None:
                continue
            if send.tunnel is not None:  # a gre backend's probe of a VIP: through the switch's GRE port
                if switch.gre_port is not None:
                    self._out(send.dpid, [PacketOut(send.frame, switch.gre_port, tunnel=send.tunnel)])
                continue
            port = send.port if send.port is not None else self.l2.flood_out(send.dpid)
            self._out(send.dpid, [PacketOut(send.frame, port)])
        failed = self.backends.checked(transitions, self.config)
        touched: set[Owner] = set()
        for change in transitions:
            if change.pool in self.config.pools:
                touched |= self._refresh_pool(change.pool)
        if failed:
            self.store.write(health=failed)
        return touched

    def _agents(self, sends, changes: list[Transition]) -> set[Owner]:
        """Agent probes out; what the backends' agents now report changes
        their pools' effective weights (through the handover, as any
        change of weight)."""
        self._health(sends, [])
        touched: set[Owner] = set()
        for change in changes:
            LOG.info("pool %s backend %s: %s", change.pool, change.ip, change.reason)
            if change.pool in self.config.pools:
                touched |= self._refresh_pool(change.pool)
        return touched


def _placed(backend: Backend) -> tuple:
    return backend.mac, backend.dpid, backend.port
