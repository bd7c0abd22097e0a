"""The balancer's logic, free of Ryu: events in, commands for switches out.

The Ryu shell (``ryu_dsr/__init__.py``) turns OpenFlow events into calls on
``Balancer`` and hands it a ``send(dpid, commands)`` function; the REST API
calls the service methods. Time comes from an injected clock.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx

from ryu_dsr.flows.compute import PoolPlan, SlotTarget, SwitchPlan, VipPlan, switch_rules
from ryu_dsr.flows.diff import diff
from ryu_dsr.flows.maglev import rebalance
from ryu_dsr.flows.packets import arp_probe, arp_reply, parse_arp, parse_ethernet
from ryu_dsr.flows.pipeline import Kind, Table, kind_of, pin_cookie
from ryu_dsr.flows.rules import Barrier, Command, FlowAdd, FlowDelete, FlowDeleteByCookie, PacketOut
from ryu_dsr.health import HealthChecker
from ryu_dsr.health import Target as HealthTarget
from ryu_dsr.model import Conflict, InvalidInput, NotFound, State, parse_backend, parse_pool, parse_vip
from ryu_dsr.store import Store

LOG = logging.getLogger("ryu_dsr")
ALL_ONES = (1 << 64) - 1
REPROBE_SECONDS = 30.0  # a found backend is asked again this often, to notice a new MAC

Send = Callable[[int, list], None]


@dataclass
class Location:
    """Where a backend was found: its MAC and the switch port behind it."""

    mac: str
    dpid: int | None
    port: int | None
    since: float


@dataclass
class Switch:
    dpid: int
    mode: str  # 'ovs' or 'plain'
    description: str = ""
    ports_down: set[int] = field(default_factory=set)
    hosts: OrderedDict[str, int] = field(default_factory=OrderedDict)  # mac -> port, oldest first
    installed: dict[tuple, int] = field(default_factory=dict)  # rule key -> cookie
    pins_to_delete: set[int] = field(default_factory=set)  # backend uids


class Balancer:
    """Desired state, what each switch holds, and how to get from one to the other."""

    def __init__(
        self,
        settings: Any,
        store: Store,
        send: Send,
        clock: Callable[[], float] = time.monotonic,
        state: State | None = None,
        wake: Callable[[int], None] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``send(dpid, commands)`` delivers commands in order. ``wake(dpid)``,
        if given, asks the caller to call ``flush(dpid)`` when that switch's
        sender is free; without it every change is flushed at once."""
        self.settings = settings
        self.store = store
        self.send = send
        self.clock = clock
        self.state = state if state is not None else store.load()
        self.switches: dict[int, Switch] = {}
        self.topology = networkx.Graph()  # switches and the hosts seen on their ports
        # backend ip -> where ARP found it; starts from the saved state
        self.found: dict[str, Location] = {
            ip: Location(where["mac"], where["dpid"], where["port"], self.clock())
            for ip, where in self.state.found.items()
        }
        self.last_probe: dict[str, float] = {}
        self.draining_since: dict[int, float] = {}  # backend uid -> when its weight became 0
        self.timed_out_drains: set[int] = set()
        self.pinned_backends: set[int] = set()  # uids whose pins may exist on switches
        self.wake = wake
        self.wall = wall
        self.health = HealthChecker(settings.probe_mac, settings.probe_ip or None)
        self.health_reasons: dict[tuple[str, str], str] = {}  # why a backend became unhealthy
        self.transitions: dict[tuple[str, str], tuple[str, str, str]] = {}  # (pool, ip) -> state, reason, since
        self.dirty: set[int] = set()  # switches waiting for a flush
        self.plan: tuple[list[VipPlan], dict[int, list[PoolPlan]]] | None = None

    # ------------------------------------------------------------------ state

    def replace_state(self, new: State) -> None:
        """Accept a checked state: save it first, then program the switches.
        If saving fails, nothing changes and the error goes to the caller."""
        for pool in new.pools.values():
            if pool.health_check.kind in ("tcp", "http") and not self.settings.probe_ip:
                raise InvalidInput(
                    "health_check.kind",
                    f"{pool.health_check.kind} checks need the dsr.probe_ip setting "
                    "(an unused address in the backends' subnet)",
                )
        new.found = self._found_json()
        self._refresh_tables(new)  # saved with the change: one write
        self.store.save(new)
        self.state = new
        self.sync_all()
        self.probe_backends()

    # ----------------------------------------------------------- REST service

    def list_pools(self) -> list[dict]:
        return [self.pool_json(name) for name in self.state.pools]

    def pool_json(self, name: str) -> dict:
        pool = self.state.pool(name)
        out = pool.to_json()
        out["backends"] = [self.backend_json(name, ip) for ip in pool.backends]
        return out

    def backend_json(self, pool_name: str, ip: str) -> dict:
        backend = self.state.backend(pool_name, ip)
        out = backend.to_json()
        out["status"] = self.backend_status(pool_name, ip)
        return out

    def backend_state(self, pool_name: str, backend) -> tuple[str, str]:
        """(state, reason) of a backend of a pool now."""
        mac, dpid, port = self._where(backend)
        if mac is None:
            return "unresolved", "no answer to ARP from the switch yet"
        if not self._link_up(dpid, port):
            return "down", f"switch {dpid:016x} port {port} is down"
        if not self.health.healthy(pool_name, backend.ip):
            return "unhealthy", self.health_reasons.get((pool_name, backend.ip), "health checks failed")
        if backend.weight == 0:
            return "draining", "weight 0: no new connections"
        how = "configured" if backend.mac else "found by ARP"
        where = f" on switch {dpid:016x} port {port}" if dpid is not None else ""
        return "up", f"{how}: {mac}{where}"

    def backend_status(self, pool_name: str, ip: str) -> dict:
        backend = self.state.backend(pool_name, ip)
        mac, dpid, port = self._where(backend)
        table = self.state.pools[pool_name].slot_tables.get(self.settings.table_size) or []
        state, reason = self.backend_state(pool_name, backend)
        change = self.transitions.get((pool_name, ip))
        health = self.health.status(pool_name, ip)
        return {
            "state": state,
            "reason": reason,
            "since": change[2] if change and change[0] == state else None,
            "health": {
                "check": self.state.pools[pool_name].health_check.kind,
                "healthy": health.healthy if health else True,
                "last_result": health.last_result if health else "not checked yet",
            },
            "resolved": mac is not None,
            "mac": mac,
            "location": None if dpid is None else {"dpid": dpid, "port": port},
            "slots": sum(1 for owner in table if owner == ip),
        }

    def _note_transitions(self) -> None:
        """Log every change of a backend's state, and remember when it was."""
        seen = set()
        for pool in self.state.pools.values():
            for backend in pool.backends.values():
                key = (pool.name, backend.ip)
                seen.add(key)
                state, reason = self.backend_state(pool.name, backend)
                old = self.transitions.get(key)
                if old is None or old[0] != state:
                    now = self.wall()
                    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
                    self.transitions[key] = (state, reason, stamp)
                    LOG.info(
                        "pool %s backend %s: %s -> %s (%s)",
                        pool.name,
                        backend.ip,
                        old[0] if old else "new",
                        state,
                        reason,
                    )
        for key in set(self.transitions) - seen:
            LOG.info("pool %s backend %s: removed", *key)
            del self.transitions[key]

    def create_pool(self, body: Any) -> dict:
        pool = parse_pool(body)
        self.replace_state(self.state.with_pool(pool))
        return self.pool_json(pool.name)

    def patch_pool(self, name: str, body: Any) -> dict:
        self.replace_state(self.state.with_pool_patch(name, body))
        return self.pool_json(name)

    def delete_pool(self, name: str) -> None:
        self.replace_state(self.state.without_pool(name))

    def list_backends(self, pool_name: str) -> list[dict]:
        return [self.backend_json(pool_name, ip) for ip in self.state.pool(pool_name).backends]

    def add_backend(self, pool_name: str, body: Any) -> dict:
        self.state.pool(pool_name)
        backend = parse_backend(body)
        self.replace_state(self.state.with_backend(pool_name, backend))
        return self.backend_json(pool_name, backend.ip)

    def patch_backend(self, pool_name: str, ip: str, body: Any) -> dict:
        self.replace_state(self.state.with_backend_patch(pool_name, ip, body))
        return self.backend_json(pool_name, ip)

    def delete_backend(self, pool_name: str, ip: str) -> None:
        self.replace_state(self.state.without_backend(pool_name, ip))

    def list_vips(self) -> list[dict]:
        return [self.vip_json(name) for name in self.state.vips]

    def vip_json(self, name: str) -> dict:
        vip = self.state.vip(name)
        out = vip.to_json()
        pool = self.state.pools[vip.pool]
        up = [ip for ip in pool.backends if self.backend_status(vip.pool, ip)["state"] == "up"]
        out["status"] = {"backends_up": len(up), "backends": len(pool.backends)}
        return out

    def create_vip(self, body: Any) -> dict:
        vip = parse_vip(body)
        self.replace_state(self.state.with_vip(vip))
        return self.vip_json(vip.name)

    def patch_vip(self, name: str, body: Any) -> dict:
        self.replace_state(self.state.with_vip_patch(name, body))
        return self.vip_json(name)

    def delete_vip(self, name: str) -> None:
        self.replace_state(self.state.without_vip(name))

    def list_switches(self) -> list[dict]:
        return [
            {
                "dpid": sw.dpid,
                "mode": sw.mode,
                "description": sw.description,
                "flows": len(sw.installed),
                "hosts": len(sw.hosts),
                "ports_down": sorted(sw.ports_down),
            }
            for sw in self.switches.values()
        ]

    # --------------------------------------------------------------- switches

    def switch_connected(
        self, dpid: int, mode: str, installed: dict[tuple, int], description: str = "", ports_down: Iterable[int] = ()
    ) -> None:
        """A switch (re)connected; ``installed`` is what it holds now (key ->
        cookie). Only the differences are sent, so a reconnect is hitless."""
        if self.settings.hash_mode != "auto":
            mode = self.settings.hash_mode
        switch = Switch(dpid, mode, description, set(ports_down), installed=dict(installed))
        self.switches[dpid] = switch
        self.topology.add_node(("switch", dpid))
        # Hosts this switch already forwards to stay learned: a restarted
        # controller changes nothing that is still right.
        for (table, _priority, match), cookie in installed.items():
            fields = dict(match)
            if kind_of(cookie) == Kind.HOST and table == Table.ETH_SRC and "eth_src" in fields and "in_port" in fields:
                self._learn_host(switch, fields["eth_src"], fields["in_port"])
        LOG.info(
            "switch %016x connected: %s, hashing in %s mode, %d flows found", dpid, description, mode, len(installed)
        )
        self.sync_all()
        self.probe_backends(force=True)

    def switch_disconnected(self, dpid: int) -> None:
        self.dirty.discard(dpid)
        if self.switches.pop(dpid, None) is not None:
            self.topology.remove_node(("switch", dpid))
            LOG.info("switch %016x disconnected", dpid)

    def port_changed(self, dpid: int, port: int, up: bool) -> None:
        switch = self.switches.get(dpid)
        if switch is None:
            return
        if up:
            switch.ports_down.discard(port)
        else:
            switch.ports_down.add(port)
            for mac in [mac for mac, p in switch.hosts.items() if p == port]:
                self._forget_host(switch, mac)
        LOG.info("switch %016x port %d %s", dpid, port, "up" if up else "down")
        self.sync_all()

    def packet_in(self, dpid: int, in_port: int, data: bytes) -> None:
        switch = self.switches.get(dpid)
        eth = parse_ethernet(data)
        if switch is None or eth is None:
            return
        learned = self._learn_host(switch, eth.src, in_port)
        arp = parse_arp(data)
        changed = False
        if arp is not None and arp.op == 2 and eth.dst == self.settings.probe_mac:
            changed = self._backend_answered(arp.spa, arp.sha, dpid, in_port)
        elif arp is not None and arp.op == 1:
            self._answer_vip_arp(switch, in_port, arp)
        self._apply_health(*self.health.packet_in(self.clock(), data))
        if changed:
            self.sync_all()
        elif learned:
            self.sync_switch(switch)

    def tick(self) -> None:
        """Periodic work: find unresolved backends, check health, end
        overdue drains."""
        self.probe_backends()
        self._apply_health(*self.health.tick(self.clock(), self._health_targets()))
        self._expire_drains()

    def _health_targets(self) -> list[HealthTarget]:
        """Every backend whose pool has a check, located and with its link up
        (a backend not found or behind a down port is out anyway)."""
        targets = []
        for pool in self.state.pools.values():
            check = pool.health_check
            if check.kind == "none" or (check.kind in ("tcp", "http") and not self.settings.probe_ip):
                continue
            vips = sorted((v for v in self.state.vips.values() if v.pool == pool.name), key=lambda v: v.name)
            for backend in pool.backends.values():
                mac, dpid, port = self._where(backend)
                if mac is None or dpid not in self.switches or not self._link_up(dpid, port):
                    continue
                address = vips[0].ip if check.target == "vip" and vips else backend.ip
                targets.append(HealthTarget(pool.name, backend.ip, mac, dpid, port, check, address))
        return targets

    def _apply_health(self, sends, transitions) -> None:
        for send in sends:
            self.send(send.dpid, [PacketOut(send.frame, send.port if send.port is not None else "flood")])
        for change in transitions:
            if change.healthy:
                self.health_reasons.pop((change.pool, change.ip), None)
            else:
                self.health_reasons[(change.pool, change.ip)] = change.reason
            LOG.info(
                "pool %s backend %s: health %s (%s)",
                change.pool,
                change.ip,
                "passed" if change.healthy else "failed",
                change.reason,
            )
        if transitions:
            self.sync_all()

    # ------------------------------------------------------------ internals

    def _learn_host(self, switch: Switch, mac: str, port: int) -> bool:
        if int(mac[:2], 16) & 1 or mac == self.settings.probe_mac:
            return False
        if switch.hosts.get(mac) == port:
            switch.hosts.move_to_end(mac)
            return False
        switch.hosts[mac] = port
        switch.hosts.move_to_end(mac)
        self.topology.add_edge(("switch", switch.dpid), ("host", mac), port=port)
        while len(switch.hosts) > self.settings.max_hosts:
            self._forget_host(switch, next(iter(switch.hosts)))
        return True

    def _forget_host(self, switch: Switch, mac: str) -> None:
        switch.hosts.pop(mac, None)
        if self.topology.has_edge(("switch", switch.dpid), ("host", mac)):
            self.topology.remove_edge(("switch", switch.dpid), ("host", mac))

    def _backend_ips(self) -> set[str]:
        return {ip for pool in self.state.pools.values() for ip in pool.backends}

    def _backend_answered(self, ip: str, mac: str, dpid: int, port: int) -> bool:
        if ip not in self._backend_ips():
            return False
        old = self.found.get(ip)
        if old and (old.mac, old.dpid, old.port) == (mac, dpid, port):
            return False
        self.found[ip] = Location(mac, dpid, port, self.clock())
        LOG.info("backend %s found at %s on switch %016x port %d", ip, mac, dpid, port)
        self.state.found = self._found_json()
        self.store.save(self.state)
        return True

    def _found_json(self) -> dict[str, dict]:
        backends = self._backend_ips()
        return {
            ip: {"mac": at.mac, "dpid": at.dpid, "port": at.port}
            for ip, at in sorted(self.found.items())
            if ip in backends
        }

    def _answer_vip_arp(self, switch: Switch, in_port: int, arp) -> None:
        """Plain mode: the switch sends ARP for a VIP (or the probe address)
        here; answer it."""
        if self.settings.probe_ip and arp.tpa == self.settings.probe_ip:
            self.send(switch.dpid, [PacketOut(arp_reply(arp, self.settings.probe_mac), in_port)])
            return
        for vip in self.state.vips.values():
            if vip.ip == arp.tpa:
                self.send(switch.dpid, [PacketOut(arp_reply(arp, vip.mac), in_port)])
                return

    def probe_backends(self, force: bool = False) -> None:
        """ARP for backends without a configured MAC: often while not found,
        now and then once found."""
        if not self.switches:
            return
        now = self.clock()
        for ip in sorted(self._backend_ips()):
            if self._configured_mac(ip):
                continue
            interval = REPROBE_SECONDS if ip in self.found else self.settings.resolve_interval
            if not force and now - self.last_probe.get(ip, -1e9) < interval:
                continue
            self.last_probe[ip] = now
            frame = arp_probe(self.settings.probe_mac, ip)
            for dpid in self.switches:
                self.send(dpid, [PacketOut(frame, "flood")])

    def _configured_mac(self, ip: str) -> str | None:
        for pool in self.state.pools.values():
            backend = pool.backends.get(ip)
            if backend is not None and backend.mac:
                return backend.mac
        return None

    def _where(self, backend) -> tuple[str | None, int | None, int | None]:
        """MAC, dpid and port of a backend: configured values win."""
        found = self.found.get(backend.ip)
        mac = backend.mac or (found.mac if found else None)
        if backend.dpid is not None:
            return mac, backend.dpid, backend.port
        if found and found.mac == mac:
            return mac, found.dpid, found.port
        return mac, None, None

    def _link_up(self, dpid: int | None, port: int | None) -> bool:
        switch = self.switches.get(dpid) if dpid is not None else None
        return switch is None or port not in switch.ports_down

    def _usable(self, pool_name: str, backend) -> bool:
        mac, dpid, port = self._where(backend)
        return mac is not None and self._link_up(dpid, port) and self.health.healthy(pool_name, backend.ip)

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
                self.pinned_backends.discard(uid)

    def _delete_pins(self, uids: set[int]) -> None:
        """Queue the deletion of these backends' pins on every switch."""
        for switch in self.switches.values():
            switch.pins_to_delete |= uids
            self._request_flush(switch)

    def _slot_sizes(self) -> set[int]:
        sizes = {self.settings.table_size}
        if any(sw.mode == "plain" for sw in self.switches.values()):
            sizes.add(1 << self.settings.plain_slot_bits)
        return sizes

    def _weights(self, pool) -> dict[str, int]:
        """Backends that take new connections: usable, weight above 0."""
        return {b.ip: b.weight for b in pool.backends.values() if b.weight > 0 and self._usable(pool.name, b)}

    def _refresh_tables(self, state: State) -> bool:
        """Bring every pool's slot tables in ``state`` up to date; True if any
        slot moved."""
        changed = False
        for pool in state.pools.values():
            weights = self._weights(pool)
            for size in self._slot_sizes():
                old = pool.slot_tables.get(size)
                table = rebalance(old, weights, size)
                if table != old:
                    moved = sum(1 for a, b in zip(old or [None] * size, table) if a != b)
                    LOG.info(
                        "pool %s: %d of %d slots move (backends %s)",
                        pool.name,
                        moved,
                        size,
                        ", ".join(f"{ip}={w}" for ip, w in sorted(weights.items())) or "none",
                    )
                    pool.slot_tables[size] = table
                    changed = True
        return changed

    def _plan(self) -> tuple[list[VipPlan], dict[int, list[PoolPlan]]]:
        """VIP plans, and pool plans by slot count; updates slot tables and
        drain bookkeeping, and deletes pins of backends that are gone."""
        now = self.clock()
        state = self.state
        if self._refresh_tables(state):
            self.store.save(state)  # runtime change (a backend found, a port down)
        pools_by_size: dict[int, list[PoolPlan]] = {}
        pinnable: set[int] = set()
        used_protocols: dict[str, set[int]] = {}
        for vip in state.vips.values():
            used_protocols.setdefault(vip.pool, set()).add(vip.ip_proto)
        for pool in state.pools.values():
            targets = {}
            for backend in pool.backends.values():
                if not self._usable(pool.name, backend):
                    continue
                if backend.weight == 0:
                    self.draining_since.setdefault(backend.uid, now)
                    if backend.uid not in self.timed_out_drains:
                        pinnable.add(backend.uid)
                    continue
                self.draining_since.pop(backend.uid, None)
                self.timed_out_drains.discard(backend.uid)
                pinnable.add(backend.uid)
                targets[backend.ip] = SlotTarget(self._where(backend)[0], backend.uid)
            for size in self._slot_sizes():
                table = pool.slot_tables[size]
                slots = tuple(targets[ip] if ip is not None else None for ip in table)
                pools_by_size.setdefault(size, []).append(
                    PoolPlan(pool.uid, slots, frozenset(used_protocols.get(pool.name, ())))
                )
        gone = self.pinned_backends - pinnable
        for switch in self.switches.values():
            switch.pins_to_delete |= gone  # sent by the next flush, after the new slot rules
        self.pinned_backends = pinnable
        for uid in list(self.draining_since):
            if uid not in pinnable and uid not in self.timed_out_drains:
                self.draining_since.pop(uid)
        vips = [
            VipPlan(v.uid, v.ip, v.mac, v.ip_proto, v.port, v.hash, state.pools[v.pool].uid)
            for v in state.vips.values()
        ]
        return vips, pools_by_size

    def _switch_plan(self, switch: Switch) -> SwitchPlan:
        hosts = dict(switch.hosts)
        for pool in self.state.pools.values():
            for backend in pool.backends.values():
                mac, dpid, port = self._where(backend)
                if mac and dpid == switch.dpid and port is not None and port not in switch.ports_down:
                    hosts[mac] = port
        return SwitchPlan(
            mode=switch.mode,
            l2=self.settings.l2_mode,
            hosts=tuple(sorted(hosts.items())),
            probe_mac=self.settings.probe_mac,
            probe_ip=self.settings.probe_ip or None,
            pin_idle_timeout=self.settings.pin_idle_timeout,
            pin_fin_timeout=self.settings.pin_fin_timeout,
        )

    def sync_all(self) -> None:
        """Recompute the plan (slot tables, pins to delete) and ask for every
        switch to be brought in line with it."""
        self.plan = self._plan()
        self._note_transitions()
        for switch in self.switches.values():
            self._request_flush(switch)

    def sync_switch(self, switch: Switch) -> None:
        """Bring one switch in line with the current plan (its hosts changed)."""
        self._request_flush(switch)

    def _request_flush(self, switch: Switch) -> None:
        if self.wake is None:
            commands = self.flush(switch.dpid)
            if commands:
                self.send(switch.dpid, commands)
            return
        if switch.dpid not in self.dirty:
            self.dirty.add(switch.dpid)
            self.wake(switch.dpid)

    def flush(self, dpid: int) -> list[Command]:
        """The commands that bring one switch from what it holds to the plan,
        computed now. Called by the sender of that switch when it is free, so
        a burst of changes costs one diff, and batches never interleave."""
        self.dirty.discard(dpid)
        switch = self.switches.get(dpid)
        if switch is None:
            return []
        if self.plan is None:
            self.plan = self._plan()
        vips, pools_by_size = self.plan
        size = (1 << self.settings.plain_slot_bits) if switch.mode == "plain" else self.settings.table_size
        desired = switch_rules(self._switch_plan(switch), vips, pools_by_size.get(size, []), size)
        commands: list[Command] = diff(desired, switch.installed)
        for command in commands:
            if isinstance(command, FlowAdd):
                switch.installed[command.rule.key] = command.rule.cookie
            elif isinstance(command, FlowDelete):
                switch.installed.pop((command.table, command.priority, command.match), None)
        if commands:
            n_add = sum(isinstance(c, FlowAdd) for c in commands)
            LOG.info("switch %016x: %d flows added or changed, %d deleted", dpid, n_add, len(commands) - n_add)
        # Pins go after the slot rules that stop making new ones.
        pins = switch.pins_to_delete
        switch.pins_to_delete = set()
        commands += [FlowDeleteByCookie(pin_cookie(uid), ALL_ONES) for uid in sorted(pins)]
        return commands + [Barrier()] if commands else []


__all__ = ["Balancer", "Conflict", "InvalidInput", "NotFound"]
