"""Switch sync: what one switch holds, indexed by owner, and the minimal
commands that bring the owners marked dirty in line with their rules.

A change marks the owners it touches (a pool, a VIP, a VIP address, a host,
the base rules); only those are recomputed and diffed. A resync (switch
connect, a failed write) marks every owner, desired or installed. Work is
done in steps of a bounded number of rules, so a large change does not hold
the controller's single thread for long; deletes wait for the last step, so
a key that moves from one owner to another is replaced in place.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ryu_dsr.flows.pipeline import MAX_SLOTS_OVS, PHASE, Kind, Owner, Table, owner_of, pin_cookie, slots_mark
from ryu_dsr.flows.rules import Barrier, Command, FlowAdd, FlowDelete, FlowDeleteByCookie, Rule, resets

ALL_ONES = (1 << 64) - 1
VOUCHED = frozenset({Kind.VIP, Kind.ADDRESS, Kind.GUARD})  # besides slots: owners a pool's mark may vouch for
STEP_RULES = 4000  # rules computed and diffed per step
SLOT_KINDS = frozenset({Kind.POOL, Kind.HANDOVER})  # the flows of a pool its slots' mark vouches for


@dataclass
class RuleSync:
    installed: dict[tuple, int] = field(default_factory=dict)  # key -> cookie, as on the switch
    # owner -> its keys; a key's owner is not kept apart: its cookie names it (``owner_of``)
    owner_keys: dict[Owner, tuple[tuple, ...]] = field(default_factory=dict)
    dirty: dict[int, set[Owner]] = field(default_factory=dict)  # phase -> owners to recompute
    dropped: dict[tuple, None] = field(default_factory=dict)  # keys no owner wants any more, in order
    pins_to_delete: set[int] = field(default_factory=set)  # backend uids
    setup: list[Command] = field(default_factory=list)  # sent before any rule (the hash group)
    rules_computed: int = 0  # for tests and stats: how much work changes cost
    # the pool marks that digest an owner's flows (recomputed with it); None: slots' pools only
    marks_of: Callable[[Owner], Iterable[Owner]] | None = None
    # pool uid -> the sum of the cookies of its slot flows, as the switch holds them (none to be deleted)
    slot_sums: dict[int, int] = field(default_factory=dict)

    def load(self, installed: dict[tuple, int], desired_owners: Iterable[Owner], keep: Iterable[Owner] = ()) -> None:
        """Start over from what the switch holds now; every owner, installed
        or desired, is dirty, but those in ``keep`` (left alone).

        The index is a few hundred thousand objects that all live on: the
        cyclic collector, which would walk the whole heap again and again
        while they are made (half the time of a load of 200,000 flows), is
        paused meanwhile, and what lives then is frozen out of its walks
        (as the shell does every few seconds); reference counting frees as
        ever."""
        self.installed = {}
        self.owner_keys = {}
        self.dropped = {}
        self.slot_sums = {}
        keys: dict[Owner, list[tuple]] = {}
        collecting = gc.isenabled()
        gc.disable()
        try:
            for key, cookie in installed.items():
                who = owner_of(key, cookie)
                if who is None:
                    if key[0] != Table.SLOTS:  # a pin of the 0.1 pipeline (its own table, now DECIDE): stale
                        self.installed[key] = cookie
                        self.dropped[key] = None
                    continue  # learned pins are never diffed
                self.installed[key] = cookie
                keys.setdefault(who, []).append(key)
                self._count(cookie, 1)
            self.owner_keys = {who: tuple(found) for who, found in keys.items()}
        finally:
            gc.freeze()
            if collecting:
                gc.enable()
        self.dirty = {}
        self.mark((self.owner_keys.keys() | set(desired_owners)).difference(keep))

    def _count(self, cookie: int | None, sign: int) -> None:
        """A slot flow's (or a pool's handover flow's) cookie in (1) or out
        (-1) of its pool's sum."""
        if cookie is not None and cookie >> 56 in SLOT_KINDS:
            uid = (cookie >> 32) & 0xFFFFFF
            self.slot_sums[uid] = self.slot_sums.get(uid, 0) + sign * cookie

    def slot_sum(self, pool_uid: int) -> int:
        """The sum of the cookies of a pool's slot and handover flows on the
        switch, but those to be deleted (modulo 2**64): what its mark
        digests of them. Kept as flows come and go, so a mark costs no pass
        over the slots."""
        return self.slot_sums.get(pool_uid, 0) & ALL_ONES

    def owner(self, key: tuple) -> Owner | None:
        """Who holds a key now, from its cookie (None: no one, or a pin)."""
        cookie = self.installed.get(key)
        return None if cookie is None else owner_of(key, cookie)

    def mark(self, owners: Iterable[Owner]) -> None:
        """Owners to recompute, and the pool marks that vouch for them (a
        mark digests what they are)."""
        dirty, marks, marks_of = self.dirty, set(), self.marks_of
        for who in owners:
            kind = who[0]
            dirty.setdefault(PHASE.get(kind, 9), set()).add(who)
            if kind == Kind.POOL:
                marks.add(slots_mark(who[1] // MAX_SLOTS_OVS))
            elif kind == Kind.HANDOVER:
                marks.add(slots_mark(who[1]))
            elif marks_of is not None and kind in VOUCHED:
                marks.update(marks_of(who))
        if marks:
            dirty.setdefault(PHASE[Kind.MARK], set()).update(marks)

    def leave(self, owners: Iterable[Owner]) -> int:
        """Owners whose flows stay as the switch holds them (a mark vouched
        for them, or they are kept from a lost state): not recomputed. How
        many were waiting to be."""
        left = 0
        for who in owners:
            phase = PHASE.get(who[0], 9)
            waiting = self.dirty.get(phase)
            if waiting is not None and who in waiting:
                waiting.discard(who)
                left += 1
                if not waiting:
                    del self.dirty[phase]
        return left

    def cookie_sum(self, owners: Iterable[Owner]) -> int:
        """The sum of the cookies of these owners' flows as the switch holds
        them (modulo 2**64): what a pool's services mark digests of its VIPs',
        addresses' and guard's flows."""
        installed, total = self.installed, 0
        for who in owners:
            for key in self.owner_keys.get(who, ()):
                total += installed.get(key, 0)
        return total & ALL_ONES

    @property
    def pending(self) -> bool:
        return bool(self.dirty or self.dropped or self.pins_to_delete or self.setup)

    def _next_dirty(self) -> Owner | None:
        """A dirty owner of the earliest phase (slot rules first)."""
        for phase in sorted(self.dirty):
            owners = self.dirty[phase]
            who = owners.pop()
            if not owners:
                del self.dirty[phase]  # a drained big set would make every later pop scan its table
            return who
        return None

    def step(self, rules_of: Callable[[Owner], list[Rule]], budget: int = STEP_RULES) -> list[Command]:
        """Commands for some dirty owners (slot rules first), ending with a
        barrier; [] if they changed nothing. Call while ``pending``."""
        setup, self.setup = self.setup, []
        adds: list[FlowAdd] = []
        computed = 0
        while computed < budget:
            who = self._next_dirty()
            if who is None:
                break
            rules = rules_of(who)
            computed += len(rules) + 1
            wanted = set()
            for rule in rules:
                key, cookie = rule.key, rule.cookie
                wanted.add(key)
                held = self.installed.get(key)
                counted = None if key in self.dropped else held
                if held != cookie:
                    adds.append(FlowAdd(rule, resets(rule, held)))
                    self.installed[key] = cookie
                self.dropped.pop(key, None)  # (a key another owner had is now this one's: its cookie says so)
                if counted != cookie:
                    self._count(counted, -1)
                    self._count(cookie, 1)
            for key in self.owner_keys.get(who, ()):
                if key not in wanted and key not in self.dropped and self.owner(key) == who:
                    self.dropped[key] = None
                    self._count(self.installed[key], -1)
            if wanted:
                self.owner_keys[who] = tuple(wanted)
            else:
                self.owner_keys.pop(who, None)
        self.rules_computed += computed
        # Slot rules before what leads to them; in a table, higher priority
        # first, so a moved slot's handover rules are in place before its
        # new backend is (connections open on the old one never see it).
        # Marks last: each vouches for flows sent before it.
        adds.sort(key=lambda c: (c.rule.table == Table.MARKS, -c.rule.table, -c.rule.priority))
        commands: list[Command] = setup + list(adds)
        if not self.dirty:
            # Deletes come last, so a key another owner took is replaced in
            # place; strict deletes (cheap for the switch, unlike a delete by
            # cookie mask, which scans every flow), a budget per step.
            for key in list(itertools.islice(self.dropped, max(budget - computed, 0) or budget)):
                del self.dropped[key]  # (an owner that wanted it again took it out of ``dropped``)
                self.installed.pop(key, None)
                table, priority, match = key
                commands.append(FlowDelete(table, priority, match))
            if self.dropped:
                return commands + [Barrier()]
            # Pins go after the slot rules that stop making new ones.
            commands += [FlowDeleteByCookie(pin_cookie(uid), ALL_ONES) for uid in sorted(self.pins_to_delete)]
            self.pins_to_delete = set()
        return commands + [Barrier()] if commands else []
