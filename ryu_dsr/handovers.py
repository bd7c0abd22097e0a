"""What the controller watches of the slots that move, so that a handover
happens only where a connection could break, and lasts only while one
could.

- Before a slot hands over, the switches say whether it carried any packet
  since its backend was chosen (the packet counter of its slot rule, read
  per pool): one that carried none moves at once, with no handover, no pin
  and no window. Until they answer (at most ``CHECK_SECONDS``) nothing
  moves on the switches; a switch that does not answer counts as "it did".
- During a handover, the switches' counters of what still goes to the old
  backend are read every ``WATCH_SECONDS``: packets of older connections
  not pinned yet (the rule that sends them to the old backend: with
  ``learn`` one per old backend of a pool, shared by the slots that moved
  from it; with the tracker one per slot) and the old backend's pins.
  Once both were quiet for ``handover_quiet`` seconds, the slot's TCP
  window ends; ``handover_window`` is only its upper bound.

Pure: counters and time come in, decisions go out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ryu_dsr.flows.pipeline import REG_OLDER_TCP, REG_SLOT, Moved, Table, Tracked, uid_of

CHECK_SECONDS = 1.0  # slot counters not back by then: the slots are taken as having carried packets
WATCH_SECONDS = 1.0  # the counters of slots in a handover are read this often


@dataclass
class Check:
    """A pool's moved slots whose counters are being read."""

    uid: int
    base: int  # the smallest size of the table since its rules were written: slot s carries s mod base's history
    waiting: set[int]  # switches that did not answer yet
    deadline: float
    busy: set[int] = field(default_factory=set)  # slots that carried packets

    def carried(self, slots: set[int]) -> set[int]:
        """Of ``slots``, those that (or a twin they grew from or into) carried packets."""
        busy = {slot % self.base for slot in self.busy}
        return {slot for slot in slots if slot % self.base in busy}


@dataclass
class Activity:
    """A counter of what still reaches an old backend, and when it last changed."""

    count: int
    changed: float


class Handovers:
    def __init__(self, quiet: float, wall: Callable[[], float]) -> None:
        self.quiet = quiet
        self.wall = wall
        self.checks: dict[str, Check] = {}  # pool name -> its check
        # ("slot", pool uid, slot) or ("backend", pool uid, old backend uid) -> dpid -> packets that went
        # to the old backend unpinned (older connections)
        self.unpinned: dict[tuple[str, int, int], dict[int, Activity]] = {}
        self.pins: dict[int, dict[int, Activity]] = {}  # backend uid -> dpid -> its pins' packets
        self.read_at: dict[int, float] = {}  # dpid -> when its last handover counters came back

    # -- before a slot hands over --

    def check(self, name: str, uid: int, base: int, switches: set[int]) -> set[tuple[int, int]]:
        """Read the pool's slot counters on these switches (unless a check
        of the pool is out already); what to ask, as (dpid, pool uid)."""
        if name in self.checks:
            return set()
        self.checks[name] = Check(uid, base, set(switches), self.wall() + CHECK_SECONDS)
        return {(dpid, uid) for dpid in switches}

    def counted(self, name: str, dpid: int, packets: dict[int, int]) -> bool:
        """A switch's slot counters of a pool came back; True when the
        check is whole (``finish`` it)."""
        check = self.checks.get(name)
        if check is None or dpid not in check.waiting:
            return False
        check.waiting.discard(dpid)
        check.busy |= {slot for slot, count in packets.items() if count}
        return not check.waiting

    def overdue(self) -> list[str]:
        """Checks whose switches did not all answer in time."""
        now = self.wall()
        return [name for name, check in self.checks.items() if now >= check.deadline]

    def finish(self, name: str, slots: Iterable[int]) -> set[int]:
        """The slots of ``slots`` that carried packets (all of them when a
        switch did not answer)."""
        check = self.checks.pop(name, None)
        slots = set(slots)
        if check is None or check.waiting:
            return slots
        return check.carried(slots)

    def forget(self, name: str) -> None:
        self.checks.pop(name, None)

    # -- during a handover --

    def read(self, dpid: int, unpinned: dict[tuple[str, int, int], int], pins: dict[int, int]) -> None:
        """One read of a switch's handover counters: packets sent unpinned
        to the old backend (``unpinned_packets``), and each old backend's
        pins' packets."""
        now = self.wall()
        for key, count in unpinned.items():
            self._note(self.unpinned.setdefault(key, {}), dpid, count, now)
        for backend, count in pins.items():
            self._note(self.pins.setdefault(backend, {}), dpid, count, now)
        self.read_at[dpid] = now

    @staticmethod
    def _note(by_switch: dict[int, Activity], dpid: int, count: int, now: float) -> None:
        """A counter that grew is activity; one that fell is not (pins that
        expired take their packets with them, a rewritten rule starts at 0)."""
        seen = by_switch.get(dpid)
        if seen is None or count > seen.count:
            by_switch[dpid] = Activity(count, now)
        elif count < seen.count:
            by_switch[dpid] = Activity(count, seen.changed)

    def quiet_since(self, uid: int, slot: int, old: int, since: float, switches: Iterable[int]) -> float | None:
        """Since when nothing reached backend ``old`` through slot ``slot``
        of pool ``uid`` (or its pins) on any of ``switches``: the latest
        change of those counters, or the move itself; None while a switch
        has not been read since then."""
        last = since
        by_slot, by_backend = self.unpinned.get(("slot", uid, slot), {}), self.unpinned.get(("backend", uid, old), {})
        pins = self.pins.get(old, {})
        for dpid in switches:
            read = self.read_at.get(dpid)
            if read is None or read < since:
                return None
            for activity in (by_slot.get(dpid), by_backend.get(dpid), pins.get(dpid)):
                if activity is not None:
                    last = max(last, activity.changed)
        return last

    def quiet_slots(
        self, moves: Mapping[str, Mapping[int, Any]], pools: Mapping[str, Any], switches: set[int], least: float
    ) -> list[tuple[str, list[int]]]:
        """The checked TCP moves, by pool, whose older connections stayed
        quiet for ``quiet`` seconds on every switch, once ``least`` seconds
        passed since the move (``moves``: the planner's, pool name -> slot
        -> ``SlotMove``)."""
        now = self.wall()
        quiet = []
        for name, pool_moves in moves.items():
            pool = pools.get(name)
            if pool is None or not switches:
                continue
            ended = []
            for slot, move in pool_moves.items():
                old = pool.backends.get(move.old)
                if old is None or not move.checked or now - move.since < least:
                    continue
                last = self.quiet_since(pool.uid, slot, old.uid, move.since, switches)
                if last is not None and now - last >= self.quiet:
                    ended.append(slot)
            if ended:
                quiet.append((name, ended))
        return quiet

    def switch_gone(self, dpid: int) -> None:
        self.read_at.pop(dpid, None)
        for by_switch in (*self.unpinned.values(), *self.pins.values()):
            by_switch.pop(dpid, None)

    def watching(self, backends: set[int]) -> None:
        """Forget the counters of old backends no handover waits for any more."""
        for backend in self.pins.keys() - backends:
            del self.pins[backend]
        for key in [key for key in self.unpinned if key[0] == "backend" and key[2] not in backends]:
            del self.unpinned[key]

    def ended(self, uid: int, slots: Iterable[int]) -> None:
        """Forget the counters of slots out of their handover."""
        for slot in slots:
            self.unpinned.pop(("slot", uid, slot), None)


def unpinned_packets(entries: Iterable[tuple[int, int, int, dict, int]]) -> dict[tuple[str, int, int], int]:
    """From a switch's handover rules (table, priority, cookie, match,
    packets), the TCP packets sent to an old backend unpinned (older
    connections, pinned there on the way): by ("backend", pool uid, old
    backend uid) from table MOVED's rules (``learn``: shared by the slots
    that moved from it), by ("slot", pool uid, slot) from table TRACKED's
    unlabelled rules (the tracker: one per slot)."""
    unpinned: dict[tuple[str, int, int], int] = {}
    for table, priority, cookie, match, packets in entries:
        if match.get("ip_proto") != 6:
            continue
        if (table, priority) == (Table.MOVED, Moved.OLDER) and REG_OLDER_TCP in match:
            key = ("backend", uid_of(cookie), match[REG_OLDER_TCP])
        elif (table, priority) == (Table.TRACKED, Tracked.UNLABELLED) and REG_SLOT in match:
            key = ("slot", uid_of(cookie), match[REG_SLOT])
        else:
            continue
        unpinned[key] = unpinned.get(key, 0) + packets
    return unpinned
