"""The desired state: the operator's pools and VIPs (``model.Config``), each
pool's consistent-hash slot tables (``slots.SlotPlanner``), and where both
are kept (``store``), with the indexes rules are computed from.

A change costs what it touches: the rule owners each step touches are
worked out here from the desired state's own indexes, never by a pass over
every pool or VIP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from ryu_dsr.flows.compute import VipPlan
from ryu_dsr.flows.family import FAMILIES, IPV4, Family, family_of
from ryu_dsr.flows.pipeline import Kind, Owner, services_mark, slot_owner, slots_mark
from ryu_dsr.model import Change, Config, InvalidInput, Pool, Vip
from ryu_dsr.slots import Planned, SlotPlanner
from ryu_dsr.store import Saved, Store

LOG = logging.getLogger("ryu_dsr")


class Desired:
    def __init__(self, settings: Any, store: Store, saved: Saved, wall: Callable[[], float]) -> None:
        self.store = store
        self.wall = wall
        self.config: Config = saved.config
        self.planner = SlotPlanner(
            settings.table_size,
            1 << settings.plain_slot_bits,
            settings.handover_window,
            settings.udp_handover_window,
        )
        self.pool_names: dict[int, str] = {pool.uid: name for name, pool in self.config.pools.items()}
        self.vip_names: dict[int, str] = {vip.uid: name for name, vip in self.config.vips.items()}
        self.protocols: dict[str, frozenset[int]] = {}  # pool -> protocols of its VIPs (a slot has a rule for each)
        self.families: dict[str, tuple[Family, ...]] = {}  # pool -> address families of its VIPs (the same)
        for name, body in saved.slots.items():
            try:
                self.planner.restore(name, body, wall())
            except InvalidInput as error:
                LOG.warning("slot tables of pool %s not used (%s): rebuilt", name, error)
        for name in self.config.pools:
            self.update_protocols(name)

    # -- a change --

    def apply(self, change: Change) -> tuple[dict[str, Pool | None], dict[str, Vip | None]]:
        """Apply a saved change; the pools and VIPs it replaced (None: new)."""
        old_pools = {name: self.config.pools.get(name) for name in change.pools}
        old_vips = {name: self.config.vips.get(name) for name in change.vips}
        self.config.apply(change)
        for name, old in old_vips.items():
            new = change.vips[name]
            if old is not None and (new is None or new.uid != old.uid):
                self.vip_names.pop(old.uid, None)
            if new is not None:
                self.vip_names[new.uid] = name
        for name, old in old_pools.items():
            new = change.pools[name]
            if old is not None:
                self.pool_names.pop(old.uid, None)
            if new is None:
                self.planner.forget(name)
                self.protocols.pop(name, None)
                self.families.pop(name, None)
            else:
                self.pool_names[new.uid] = name
        return old_pools, old_vips

    def update_protocols(self, name: str) -> bool:
        """The protocols and address families of the VIPs using a pool
        (its slots' handover rules match each); True if they changed."""
        config = self.config
        vips = [config.vips[v] for v in config.vips_by_pool.get(name, ())]
        protocols = frozenset(vip.ip_proto for vip in vips)
        families = tuple(family for family in FAMILIES if any(family_of(vip.ip) is family for vip in vips)) or (IPV4,)
        changed = self.protocols.get(name) != protocols or self.families.get(name) != families
        self.protocols[name] = protocols
        self.families[name] = families
        return changed

    # -- slot tables --

    def plan_tables(self, pool: Pool, weights: dict[str, int], plain: bool, holders: Iterable[str]) -> Planned | None:
        """The pool's next tables for these weights (None: nothing changes).
        ``holders``: backends that may hold connections, whose slots that
        move are handed over; none while no VIP uses the pool (backends
        found one after another in a new pool hand nothing over)."""
        if not self.config.vips_by_pool.get(pool.name):
            holders = ()
        return self.planner.plan(pool.name, len(pool.backends), weights, plain, self.wall(), set(holders), check=True)

    def install_tables(self, name: str, planned: Planned, plain: bool) -> set[Owner]:
        """Install a pool's new tables; the owners of the slots that change
        (every slot, and the pool's VIPs, when the table grows)."""
        old_size = self.planner.sizes.get(name)
        old_tables = self.planner.tables.get(name, {})
        self.planner.install(name, planned)
        if old_size != planned.size:
            return self.pool_owners(name, plain=plain) | self.vips_of(name)
        uid = self.config.pools[name].uid
        touched: set[Owner] = {(Kind.HANDOVER, uid)}  # (its backends, as they are now: a few rules each)
        for each, table in planned.tables.items():
            old = old_tables.get(each)
            if old is None or len(old) != len(table):
                touched |= {(Kind.POOL, slot_owner(uid, slot)) for slot in range(len(table))}
            else:
                touched |= {(Kind.POOL, slot_owner(uid, slot)) for slot, (a, b) in enumerate(zip(old, table)) if a != b}
        return touched

    def save_tables(self, name: str) -> None:
        self.store.write(slots={name: self.planner.saved(name)})

    def end_moves(self, name: str, holders: Iterable[str]) -> set[Owner]:
        """Slots handing over from backends that hold no connections any
        more (dead, removed, drain timed out) stop doing so; their owners."""
        pool = self.config.pools.get(name)
        if pool is None:
            return set()
        ended = self.planner.drop_moves(name, set(holders))
        if ended:
            self.save_tables(name)
        return {(Kind.POOL, slot_owner(pool.uid, slot)) for slot in ended}

    def expire(self) -> set[Owner]:
        """The slots whose handover hold or window ended now: their rules change."""
        ended = set()
        for name, slot in self.planner.expire(self.wall()):
            if name in self.config.pools:
                ended.add((Kind.POOL, slot_owner(self.config.pools[name].uid, slot)))
        return ended

    def slot_owners(self, name: str, slots: Iterable[int]) -> set[Owner]:
        pool = self.config.pools.get(name)
        return {(Kind.POOL, slot_owner(pool.uid, slot)) for slot in slots} if pool else set()

    def slot_size(self, name: str, mode: str) -> int:
        return self.planner.plain_size if mode == "plain" else self.planner.size(name)

    # -- rule owners, from the indexes --

    def pool_owners(self, name: str, uid: int | None = None, plain: bool = False) -> set[Owner]:
        """Every slot owner of a pool (of its current uid, or ``uid``), and its guard."""
        uid = self.config.pools[name].uid if uid is None else uid
        size = max(self.planner.sizes.get(name, 0), self.planner.plain_size if plain else 0)
        return {(Kind.POOL, slot_owner(uid, slot)) for slot in range(size)} | {(Kind.GUARD, uid), (Kind.HANDOVER, uid)}

    def slots_of(self, name: str, ips: set[str]) -> set[Owner]:
        """The slot owners that send to these backends (their MAC changed)."""
        if not ips:
            return set()
        uid = self.config.pools[name].uid
        touched: set[Owner] = {(Kind.HANDOVER, uid)}  # (a moved slot's older connections may go to them)
        for table in self.planner.tables.get(name, {}).values():
            touched |= {(Kind.POOL, slot_owner(uid, slot)) for slot, ip in enumerate(table) if ip in ips}
        return touched

    def addresses_of(self, name: str) -> set[Owner]:
        """The VIP address owners of a pool's VIPs."""
        return {(Kind.ADDRESS, self.config.vips[v].ip) for v in self.config.vips_by_pool.get(name, ())}

    def vips_of(self, name: str) -> set[Owner]:
        return {(Kind.VIP, self.config.vips[v].uid) for v in self.config.vips_by_pool.get(name, ())}

    def guards_of(self, ip: str) -> set[Owner]:
        """The owners of a backend's pools that name it where it is: their
        guards and their handover rules."""
        pools = [self.config.pools[n].uid for n in self.config.pools_by_backend.get(ip, ())]
        return {(Kind.GUARD, uid) for uid in pools} | {(Kind.HANDOVER, uid) for uid in pools}

    def balancing_owners(self, mode: str) -> set[Owner]:
        """Every VIP, address, guard, slot and pool mark owner (what a switch
        that is not transit holds)."""
        config = self.config
        owners: set[Owner] = set()
        for name, pool in config.pools.items():
            owners |= {(Kind.POOL, slot_owner(pool.uid, slot)) for slot in range(self.slot_size(name, mode))}
        owners |= {(Kind.GUARD, pool.uid) for pool in config.pools.values()}
        if mode == "ovs":
            owners |= {(Kind.HANDOVER, pool.uid) for pool in config.pools.values()}
            owners |= {slots_mark(pool.uid) for pool in config.pools.values()}
            owners |= {services_mark(pool.uid) for pool in config.pools.values()}
        owners |= {(Kind.VIP, v.uid) for v in config.vips.values()}
        owners |= {(Kind.ADDRESS, ip) for ip in config.vips_by_ip}
        return owners

    def vip_plan(self, name: str, mode: str) -> VipPlan:
        vip = self.config.vips[name]
        pool = self.config.pools[vip.pool]
        n_slots = self.slot_size(vip.pool, mode)
        return VipPlan(
            vip.uid, vip.ip, vip.mac, vip.ip_proto, vip.port, vip.hash, pool.uid, n_slots, vip.backend_port, vip.dscp
        )
