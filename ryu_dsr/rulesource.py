"""Every rule one owner should have on one switch, from read-only views of
the desired state, the backends' runtime data and the L2 fabric.

The owners are those of ``flows.pipeline`` (a pool's slot, a VIP, a VIP
address, a pool's guard, a host's MAC, the base rules); the rules
themselves come from the pure functions of ``flows.compute``, fed plain
plans built here. Nothing here changes state but the cache of each
switch's plan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from ryu_dsr.backends import Backends
from ryu_dsr.desired import Desired
from ryu_dsr.flows.compute import (
    AddressPlan,
    Handover,
    SlotTarget,
    SwitchPlan,
    backend_count_rules,
    base_rules,
    checked,
    fragment_vip,
    guard_rules,
    hash_group,
    host_rules,
    learn_meter,
    moved_rules,
    pool_mark,
    routed_rules,
    slot_rules,
    vip_address_rules,
    vip_rules,
)
from ryu_dsr.flows.family import IPV4
from ryu_dsr.flows.pipeline import (
    BASE_OWNER,
    MAX_SLOTS_OVS,
    SERVICES_MARK,
    Kind,
    Marks,
    Owner,
    services_mark,
    slot_owner,
    slots_mark,
)
from ryu_dsr.flows.rules import Command, NormalFragments, Rule
from ryu_dsr.l2 import L2
from ryu_dsr.model import ROUTED, Backend, Vip
from ryu_dsr.settings import parse_router_ports
from ryu_dsr.slots import HOLD
from ryu_dsr.switches import Switch

# The fields of a switch's plan the rules a pool's marks vouch for read
# (a unit test reads ``flows.compute`` to hold these to what it reads).
SLOT_PLAN = ("mode", "handover_tracking", "conntrack_zone", "pin_idle_timeout", "pin_fin_timeout", "pin_limit")
SERVICES_PLAN = ("mode", "l2", "neighbour_answers", "packet_in_limit")
# A pool with more VIPs has no services mark: a VIP's change digests all
# of its pool's VIPs (a pool of 10,000: 174 ms a change), so their rules
# are computed at a restart, as a connect did before the marks.
SERVICES_MARK_VIPS = 256


class RuleSource:
    def __init__(
        self,
        settings: Any,
        desired: Desired,
        backends: Backends,
        l2: L2,
        clock: Callable[[], float],
        wall: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.desired = desired
        self.backends = backends
        self.l2 = l2
        self.clock = clock
        self.wall = wall
        self.switch_plans: dict[int, tuple[tuple, SwitchPlan]] = {}  # dpid -> (what it was made from, the plan)
        self.router_ports = parse_router_ports(settings.router_ports, "dsr.router_ports")

    # -- what a switch holds --

    def owners(self, switch: Switch) -> set[Owner]:
        """Every owner whose rules the switch should hold."""
        owners: set[Owner] = {BASE_OWNER} | self.desired.balancing_owners(switch.mode)
        owners |= {(Kind.HOST, mac) for mac in self.l2.host_at}
        owners |= {(Kind.HOST, mac) for mac in switch.hosts}
        owners |= {(Kind.HOST, mac) for mac in self.backends.ips_by_mac}
        return owners

    def setup(self, switch: Switch) -> list[Command]:
        """What a switch needs before its rules: normal fragment handling and
        the hash group (replaced in place if it exists, so its flows stay),
        and the MAC-learning meter."""
        meter = learn_meter(self.switch_plan(switch))
        ovs = [NormalFragments(), hash_group()] if switch.mode == "ovs" else []
        return ovs + ([meter] if meter else [])

    def forget(self, dpid: int) -> None:
        self.switch_plans.pop(dpid, None)

    def switch_plan(self, switch: Switch) -> SwitchPlan:
        """What a switch's rules depend on besides the objects: made again
        only when the fabric or the switch's flooding hold changed, not for
        every owner a write computes."""
        fabric = self.l2.fabric
        key = (
            switch.mode,
            fabric.version,
            switch.dpid in self.l2.flood_holds,
            switch.tracking,
            switch.neighbour_answers,
            switch.gre_port,
        )
        cached = self.switch_plans.get(switch.dpid)
        if cached is not None and cached[0] == key:
            return cached[1]
        settings = self.settings
        plan = SwitchPlan(
            mode=switch.mode,
            l2=settings.l2_mode,
            probe_mac=settings.probe_mac,
            probe_ip=settings.probe_ip or None,
            pin_idle_timeout=settings.pin_idle_timeout,
            pin_fin_timeout=settings.pin_fin_timeout,
            pin_limit=settings.pin_limit,
            packet_in_limit=settings.packet_in_limit,
            handover_tracking=switch.tracking,
            conntrack_zone=settings.conntrack_zone,
            links=tuple(sorted(fabric.link_ports(switch.dpid))) if settings.l2_mode == "learning" else (),
            flood=fabric.flood_ports(switch.dpid, self.clock()) if self.l2.holds_flooding(switch.dpid) else None,
            router_ports=tuple(sorted(port for dpid, port in self.router_ports if dpid == switch.dpid)),
            neighbour_answers=switch.neighbour_answers,
            gre_port=switch.gre_port,
        )
        self.switch_plans[switch.dpid] = (key, plan)
        return plan

    def rules_of(self, switch: Switch, who: Owner) -> list[Rule]:
        """Every rule one owner should have on one switch."""
        kind, ident = who
        plan = self.switch_plan(switch)
        desired = self.desired
        if switch.transit and kind in (Kind.POOL, Kind.VIP, Kind.ADDRESS, Kind.GUARD, Kind.MARK, Kind.HANDOVER):
            return []  # nothing enters the fabric here: no balancing
        if kind == Kind.POOL:
            uid, slot = divmod(ident, MAX_SLOTS_OVS)
            name = desired.pool_names.get(uid)
            if name is None:
                return []
            size = desired.slot_size(name, switch.mode)
            table = desired.planner.table(name, size)
            target = self.slot_target(name, table[slot]) if slot < len(table) else None
            handover = self.handover_of(name, slot, switch) if switch.mode == "ovs" else None
            protocols = desired.protocols.get(name, frozenset())
            families = desired.families.get(name, (IPV4,))
            return checked(slot_rules(plan, uid, slot, size, target, protocols, handover, families))
        if kind == Kind.HANDOVER:
            name = desired.pool_names.get(ident)
            if name is None or switch.mode != "ovs":
                return []
            targets = tuple(target for _ip, target in self.handover_targets(name))
            protocols = desired.protocols.get(name, frozenset())
            families = desired.families.get(name, (IPV4,))
            return checked(moved_rules(plan, ident, desired.slot_size(name, "ovs"), targets, protocols, families))
        if kind == Kind.MARK:
            uid = ident & ~SERVICES_MARK
            name = desired.pool_names.get(uid)
            if name is None:
                return []
            if ident & SERVICES_MARK:
                if len(desired.config.vips_by_pool.get(name, ())) > SERVICES_MARK_VIPS:
                    return []  # its digest would cost every change of one VIP the pool's VIPs
                return checked(pool_mark(plan, uid, Marks.SERVICES, self.services_digest(switch, name)))
            return checked(pool_mark(plan, uid, Marks.SLOTS, self.slots_digest(switch, name)))
        if kind == Kind.VIP:
            name = desired.vip_names.get(ident)
            return checked(vip_rules(plan, desired.vip_plan(name, switch.mode))) if name else []
        if kind == Kind.ADDRESS:
            return checked(vip_address_rules(plan, self.address_plan(switch, ident)))
        if kind == Kind.HOST:
            place = self.host_place(ident)
            here = place is not None and place[0] == switch.dpid
            backend = ident in self.backends.ips_by_mac
            counted = backend_count_rules(plan, ident) if backend and not switch.transit else []
            if backend and not switch.transit:
                counted += routed_rules(plan, ident, self.routed_behind(ident))
            return checked(host_rules(plan, ident, self.host_port(switch, ident), learned=here) + counted)
        if kind == Kind.GUARD:
            name = desired.pool_names.get(ident)
            return checked(guard_rules(plan, ident, self.senders_here(switch, name))) if name else []
        if who == BASE_OWNER:
            return checked(base_rules(plan))
        return []

    # -- pool marks: what a restart need not compute again --

    def slots_digest(self, switch: Switch, name: str) -> int:
        """A digest of everything one pool's slot flows and handover flows
        on this switch are computed from (``slot_rules``' arguments for every
        slot: the switch's plan, the table, each backend's target, protocols,
        families, the handovers of moved slots; ``moved_rules``': every
        backend's target) and of the cookies of those flows the switch holds.
        Costs the pool's table, not its rules."""
        desired = self.desired
        size = desired.slot_size(name, switch.mode)
        table = tuple(desired.planner.table(name, size))
        targets = sorted((ip or "", self.slot_target(name, ip)) for ip in set(table)) + self.handover_targets(name)
        moved = sorted(desired.planner.moves.get(name, {})) if switch.mode == "ovs" else []
        handovers = [(slot, self.handover_of(name, slot, switch)) for slot in moved if slot < size]
        protocols = sorted(desired.protocols.get(name, frozenset()))
        families = [family.eth_type for family in desired.families.get(name, (IPV4,))]
        made_from = (size, table, targets, protocols, families, handovers)
        return self._digest(switch, SLOT_PLAN, made_from, switch.rules.slot_sum(desired.config.pools[name].uid))

    def services_digest(self, switch: Switch, name: str) -> int:
        """The same for the flows of a pool's VIPs, of the addresses only its
        VIPs use, and of its guard: each VIP's plan, the VIPs of each such
        address, and where each backend of the pool is (its MAC, switch,
        port, the link's state here, whether it holds connections)."""
        desired, config = self.desired, self.desired.config
        pool = config.pools[name]
        vips = [desired.vip_plan(vip_name, switch.mode) for vip_name in sorted(config.vips_by_pool.get(name, ()))]
        addresses = [(ip, [vip.name for vip in config.address_vips(ip)]) for ip in self.own_addresses(name)]
        holders = self.backends.holders.get(name, set())
        backends = []
        for ip, backend in sorted(pool.backends.items()):
            mac = self.backends.place(backend)[0]  # (configured or found)
            found, dpid, port = self.backends.places.get(ip, (None, None, None))
            where = self.host_place(mac) if mac else None
            up = switch.link_up(port) if dpid == switch.dpid and port is not None else None
            backends.append((ip, mac, found, dpid, port, where, up, backend.uid in holders))
        made_from = (vips, addresses, backends, switch.dpid)
        return self._digest(switch, SERVICES_PLAN, made_from, switch.rules.cookie_sum(self.service_owners(name)))

    def _digest(self, switch: Switch, plan_fields: tuple[str, ...], made_from: tuple, cookies: int) -> int:
        plan = self.switch_plan(switch)
        used = tuple(getattr(plan, name) for name in plan_fields)  # (not the fabric's links: the L2 rules' own)
        text = f"{used!r}|{made_from!r}|{cookies}"
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")

    def slot_owners(self, switch: Switch, name: str) -> list[Owner]:
        base = slot_owner(self.desired.config.pools[name].uid, 0)
        return [(Kind.POOL, base + slot) for slot in range(self.desired.slot_size(name, switch.mode))]

    def own_addresses(self, name: str) -> list[str]:
        """The addresses of a pool's VIPs that no other pool's VIP uses."""
        config = self.desired.config
        ips = {config.vips[vip].ip for vip in config.vips_by_pool.get(name, ())}
        return sorted(ip for ip in ips if all(vip.pool == name for vip in config.vips_by_ip.get(ip, {}).values()))

    def service_owners(self, name: str) -> list[Owner]:
        config = self.desired.config
        owners: list[Owner] = [(Kind.GUARD, config.pools[name].uid)]
        owners += [(Kind.VIP, config.vips[vip].uid) for vip in sorted(config.vips_by_pool.get(name, ()))]
        return owners + [(Kind.ADDRESS, ip) for ip in self.own_addresses(name)]

    def marks_of(self, who: Owner) -> list[Owner]:
        """The pool marks whose digests an owner's flows are part of: a
        slot's pool's, a guard's, a VIP's pool's, and every pool with a VIP
        at an address (whether the address is a pool's own changes its
        digest too)."""
        kind, ident = who
        config = self.desired.config
        if kind == Kind.POOL:
            return [slots_mark(ident // MAX_SLOTS_OVS)]
        if kind == Kind.HANDOVER:
            return [slots_mark(ident)]
        if kind == Kind.GUARD:
            return [services_mark(ident)]
        if kind == Kind.VIP:
            name = self.desired.vip_names.get(ident)
            pool = config.pools.get(config.vips[name].pool) if name else None
            return [services_mark(pool.uid)] if pool else []
        if kind == Kind.ADDRESS:
            pools = {vip.pool for vip in config.vips_by_ip.get(ident, {}).values()}
            return [services_mark(config.pools[name].uid) for name in pools if name in config.pools]
        return []

    def vouched(self, switch: Switch) -> set[Owner]:
        """The owners whose flows a pool's mark on the switch vouches for: it
        digests what they would be computed from now and what the switch
        holds of them. A switch that connects need not have them computed."""
        if switch.mode != "ovs" or switch.transit:
            return set()
        trusted: set[Owner] = set()
        for name, pool in self.desired.config.pools.items():
            if self._held(switch, slots_mark(pool.uid)):
                trusted |= {slots_mark(pool.uid), (Kind.HANDOVER, pool.uid)}
                trusted.update(self.slot_owners(switch, name))
            if self._held(switch, services_mark(pool.uid)):
                trusted.add(services_mark(pool.uid))
                trusted.update(self.service_owners(name))
        return trusted

    def _held(self, switch: Switch, mark: Owner) -> bool:
        """Whether the switch holds a mark as it is computed now."""
        installed, rules = switch.rules.installed, self.rules_of(switch, mark)
        return bool(rules) and all(installed.get(rule.key) == rule.cookie for rule in rules)

    # -- the plans the rules are computed from --

    def address_plan(self, switch: Switch, ip: str) -> AddressPlan:
        config = self.desired.config
        vips = config.address_vips(ip)
        if not vips:
            return AddressPlan(ip, None)
        # Backends on this switch are allowed from their ports; those on
        # other switches reach this one over links, which skip the guard.
        senders: dict[str, int | None] = {}
        placed, found = True, False
        for name in {vip.pool for vip in vips}:
            for backend in config.pools[name].backends.values():
                mac = self.backends.place(backend)[0]
                if not mac:
                    continue
                found = True
                place = self.host_place(mac)
                if place is None:
                    placed, senders[mac] = False, None  # not known where: let it send from anywhere
                elif place[0] == switch.dpid:
                    senders[mac] = place[1]
        return AddressPlan(
            ip,
            vips[0].mac,
            self.macs_behind(vips),
            fragment_vip([self.desired.vip_plan(vip.name, switch.mode) for vip in vips]),
            tuple(sorted(senders.items())),
            placed and found,  # every backend known where: the rest may not send from the address
            config.pools[vips[0].pool].uid if len({vip.pool for vip in vips}) == 1 else None,
            tuple(sorted((v.ip_proto, v.backend_port, v.port) for v in vips if v.backend_port is not None)),
        )

    def macs_behind(self, vips: list[Vip]) -> tuple[str, ...]:
        """The MACs of the backends that may hold connections of these VIPs."""
        macs = set()
        for name in {vip.pool for vip in vips}:
            holders = self.backends.holders.get(name, set())
            for backend in self.desired.config.pools[name].backends.values():
                mac = self.backends.place(backend)[0]
                if backend.uid in holders and mac:
                    macs.add(mac)
        return tuple(sorted(macs))

    def slot_target(self, name: str, ip: str | None) -> SlotTarget | None:
        """Where a slot holding backend ``ip`` sends: None if it takes no new
        connections."""
        backend = self.desired.config.pools[name].backends.get(ip) if ip else None
        if backend is None or backend.weight == 0 or not self.backends.usable(name, backend):
            return None
        return self.target_of(backend)

    def handover_of(self, name: str, slot: int, switch: Switch | None = None) -> Handover | None:
        """A slot's handover now (on ``switch``, whose tracking decides
        whether there is a hold): None unless it moved within a window from
        a backend that still holds connections. A move still checked keeps
        the slot where it was, in a hold: every TCP connection that comes
        meanwhile is pinned where it goes, so that a slot the counters then
        show idle can move at once without taking a connection that began
        after they were read (the counters are read once the hold is on
        the switch)."""
        move = self.desired.planner.move(name, slot)
        if move is None:
            return None
        backends = self.desired.config.pools[name].backends
        holders = self.backends.holders.get(name, ())
        backend = backends.get(move.old)
        if backend is None or backend.uid not in holders:
            return None
        leader = backends.get(move.leader)
        leading = self.target_of(leader) if leader is not None and leader.uid in holders else None
        if not move.checked:
            return Handover(self.target_of(backend), True, False, leading or self.target_of(backend))
        age = self.wall() - move.since
        tcp, udp = age < self.settings.handover_window, age < self.settings.udp_handover_window
        if not (tcp or udp):
            return None
        learn = switch is None or switch.tracking == "learn"
        # The hold (learn only): new connections stay where they went, pinned, if that backend still takes them.
        first = leading if learn and age < HOLD else None
        return Handover(self.target_of(backend), tcp, udp, first)

    def handover_targets(self, name: str) -> list[tuple[str, SlotTarget]]:
        """(address, target) of each backend of a pool with a MAC, in address
        order: those its handover rules (``moved_rules``) send to."""
        backends = self.desired.config.pools[name].backends
        return [(ip, self.target_of(b)) for ip, b in sorted(backends.items()) if self.backends.place(b)[0]]

    def target_of(self, backend: Backend) -> SlotTarget:
        return SlotTarget(self.backends.place(backend)[0], backend.uid, backend.forwarding in ROUTED)

    def routed_behind(self, mac: str) -> tuple[tuple[int, str, str], ...]:
        """(uid, address, forwarding) of the dscp and gre backends reached
        through the gateway at ``mac``, in every pool that has them."""
        config = self.desired.config
        routed = []
        for ip in self.backends.ips_by_mac.get(mac, ()):
            for name in config.pools_by_backend.get(ip, ()):
                backend = config.pools[name].backends[ip]
                if backend.forwarding in ROUTED:
                    routed.append((backend.uid, ip, backend.forwarding))
        return tuple(sorted(routed))

    def host_place(self, mac: str) -> tuple[int, int] | None:
        """(switch, edge port) of a host: a backend's location, else where
        it was learned."""
        return self.backends.host_place(mac) or self.l2.host_at.get(mac)

    def host_port(self, switch: Switch, mac: str) -> int | None:
        """Where a MAC is forwarded on this switch: its own port when the
        host is here (a backend's own location wins over learning), else the
        port towards the switch it is on (the fabric's shortest path)."""
        where = self.host_place(mac)
        if where is None:
            return None
        dpid, port = where
        if dpid == switch.dpid:
            return port if switch.link_up(port) else None
        return self.l2.fabric.next_port(switch.dpid, dpid)

    def senders_here(self, switch: Switch, name: str) -> tuple[tuple[str, int], ...]:
        """(MAC, port) of a pool's backends on this switch, their link up."""
        senders = set()
        for ip in self.desired.config.pools[name].backends:
            mac, dpid, port = self.backends.places.get(ip, (None, None, None))
            if mac and dpid == switch.dpid and port is not None and switch.link_up(port):
                senders.add((mac, port))
        return tuple(sorted(senders))
