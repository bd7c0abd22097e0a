"""Slot planner: each pool's consistent-hash tables, sized to the pool.

A pool's table (``hash mod size`` -> backend) has 64 slots per configured
backend, rounded up to a power of two, at least 64 and at most the
``table_size`` setting: with exact apportionment a backend's share is then
within 1 + N/size of ideal (under 2% for any N). A table only grows: growing
doubles it by copying slot i into slot i + size, and since
``hash mod 2n`` is either ``hash mod n`` or that plus n, every flow keeps its
backend; the rebalance that follows moves only what the weights ask for.
Shrinking would move about half the flows, so a table keeps its size when a
pool shrinks.

When a slot's backend changes and the old backend still holds
connections (it is up, or draining), the planner remembers the move
(old backend, when): for the handover windows the slot's rules send packets
the switch cannot tell as a new connection's to the old backend and pin
them there (``flows.compute.slot_rules``). Moves are saved with the tables,
so a restarted controller keeps them, and end when the longer window has
passed.

Plain OpenFlow 1.3 switches use a table of ``2^plain_slot_bits`` slots per
pool (masked client-address bits), kept only while such a switch is
connected.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ryu_dsr.flows.slot_tables import rebalance
from ryu_dsr.model import InvalidInput

LOG = logging.getLogger("ryu_dsr.slots")
SLOTS_PER_BACKEND = 64
MIN_SLOTS = 64

Table = list[str | None]


HOLD = 2.0  # seconds a moved slot keeps sending new connections where they went before


@dataclass(frozen=True)
class SlotMove:
    """A slot's backend changed at ``since`` (wall clock). ``old`` holds the
    connections the switch cannot tell from new ones; ``first`` is where new
    connections went until this move (in ``learn`` mode they keep going
    there for ``HOLD`` seconds, pinned, before they follow the slot: see
    ``flows.compute``).

    A new move is first ``checked``: until the switches' counters say
    whether the slot carried any packet since its backend was chosen,
    nothing moves on them. A slot that carried none moves at once, with no
    handover (no connection can be on it); the others hand over from the
    moment the counters came back."""

    old: str
    since: float
    first: str | None = None
    checked: bool = True

    @property
    def leader(self) -> str:
        return self.first or self.old


@dataclass
class Planned:
    """A pool's next tables and slot moves (not yet installed)."""

    size: int
    tables: dict[int, Table]
    moves: dict[int, SlotMove] = field(default_factory=dict)


def size_for(n_backends: int, cap: int, current: int | None = None) -> int:
    """Slots for a pool of ``n_backends``: ``current`` doubled until it holds
    64 per backend (a new pool: the smallest power of two that does), never
    above ``cap`` and never below ``current``."""
    want = max(MIN_SLOTS, SLOTS_PER_BACKEND * n_backends)
    size = current if current else min(MIN_SLOTS, cap)
    while size < want and size * 2 <= cap:
        size *= 2
    return size


def grown(table: Table, size: int) -> Table:
    """``table`` doubled until it has ``size`` slots; no slot changes owner."""
    while len(table) < size:
        table = table + table
    return table


class SlotPlanner:
    """The tables of every pool, by pool name, and their slots in handover."""

    def __init__(self, cap: int, plain_size: int, tcp_window: float = 0, udp_window: float = 0) -> None:
        self.cap = cap
        self.plain_size = plain_size
        self.tcp_window = tcp_window
        self.udp_window = udp_window
        self.sizes: dict[str, int] = {}  # pool -> size of its Open vSwitch table
        # pool -> the smallest its table was since this controller started: slot s of a table that grew
        # from it carries what slot s mod that size carried before (a check reads both)
        self.smallest: dict[str, int] = {}
        self.tables: dict[str, dict[int, Table]] = {}  # pool -> size -> table
        self.moves: dict[str, dict[int, SlotMove]] = {}  # pool -> slot -> move in handover
        self._deadlines: list[tuple[float, str, int, float]] = []  # (when, pool, slot, move's since)
        self.held_until: float = 0.0  # the last hold whose end ``expire`` has processed ended by then

    @property
    def window(self) -> float:
        return max(self.tcp_window, self.udp_window)

    def size(self, pool: str) -> int:
        return self.sizes.get(pool, MIN_SLOTS)

    def table(self, pool: str, size: int | None = None) -> Table:
        return self.tables.get(pool, {}).get(size or self.size(pool), [])

    def move(self, pool: str, slot: int) -> SlotMove | None:
        return self.moves.get(pool, {}).get(slot)

    def plan(
        self,
        pool: str,
        n_backends: int,
        weights: Mapping[str, int],
        plain: bool,
        now: float = 0.0,
        holders: Collection[str] = (),
        check: bool = False,
    ) -> Planned | None:
        """The pool's next tables for these weights, or None if nothing
        changes. ``n_backends`` (configured, whatever their health) sets the
        size, so health flaps never resize a table. A slot whose backend
        changes from one of ``holders`` (backends that may hold connections)
        is in handover from ``now``; with ``check``, a slot that was in no
        handover is checked first (``SlotMove``)."""
        size = size_for(n_backends, self.cap, self.sizes.get(pool))
        old = self.tables.get(pool, {})
        old_size = self.sizes.get(pool)
        wanted = {size} | ({self.plain_size} if plain else set())
        new: dict[int, Table] = {}
        for each in wanted:
            previous = old.get(each)
            if previous is None and each == size and old_size in old and old_size < size:
                previous = grown(old[old_size], size)
            new[each] = rebalance(previous, weights, each)
        if size == old_size and new == {k: v for k, v in old.items() if k in wanted}:
            return None
        moves = self._grown_moves(pool, size, now)
        before = grown(old[old_size], size) if old_size in old else None
        if before is not None:
            for slot, (a, b) in enumerate(zip(before, new[size])):
                if a == b:
                    continue
                current = moves.get(slot)
                holder = current.old if current else a
                if holder is None or holder == b or holder not in holders:
                    moves.pop(slot, None)
                    continue
                held = current is not None and (now - current.since < HOLD or not current.checked)
                first = current.leader if held else a  # where new connections went until now
                checked = current.checked if current is not None else not check  # in a handover: it has traffic
                moves[slot] = SlotMove(holder, now, first if first != holder else None, checked)
        return Planned(size, new, moves)

    def _grown_moves(self, pool: str, size: int, now: float) -> dict[int, SlotMove]:
        """The pool's moves still in a window, numbered for a table of ``size``
        (a move of slot i in a table of n is one of i and i + n in 2n)."""
        old_size = self.sizes.get(pool, size)
        moves = {}
        for slot, move in self.moves.get(pool, {}).items():
            if now - move.since < self.window:
                for copy in range(slot, size, old_size):
                    moves[copy] = move
        return moves

    def install(self, pool: str, planned: Planned) -> None:
        before = self.tables.get(pool, {})
        for each, table in planned.tables.items():
            old = before.get(each)
            if old is not None and len(old) == len(table):
                moved = sum(1 for a, b in zip(old, table) if a != b)
                if moved:
                    LOG.info("pool %s: %d of %d slots move", pool, moved, each)
            elif old is not None:
                LOG.info("pool %s: table grows from %d to %d slots", pool, len(old), each)
        self.sizes[pool] = planned.size
        self.smallest.setdefault(pool, planned.size)
        self.tables[pool] = dict(planned.tables)
        self._set_moves(pool, planned.moves)

    def _set_moves(self, pool: str, moves: dict[int, SlotMove]) -> None:
        known = self.moves.get(pool, {})
        for slot, move in moves.items():
            if known.get(slot) != move:
                for window in {HOLD, self.tcp_window, self.udp_window}:
                    heapq.heappush(self._deadlines, (move.since + window, pool, slot, move.since))
        if moves:
            self.moves[pool] = dict(moves)
        else:
            self.moves.pop(pool, None)

    def drop_moves(self, pool: str, holders: Collection[str]) -> list[int]:
        """End the handovers from backends not in ``holders`` (they died,
        were removed, or their drain timed out); the slots whose rules change."""
        moves = self.moves.get(pool, {})
        ended = [slot for slot, move in moves.items() if move.old not in holders]
        for slot in ended:
            del moves[slot]
        if not moves:
            self.moves.pop(pool, None)
        return ended

    def checking(self, pool: str) -> list[int]:
        """The pool's slots whose move waits for the switches' counters."""
        return [slot for slot, move in self.moves.get(pool, {}).items() if not move.checked]

    def checked(self, pool: str, busy: Collection[int], now: float) -> list[int]:
        """The counters came back: a checked slot in ``busy`` (it carried
        packets) hands over from ``now``; any other moves at once, its move
        forgotten. The slots whose rules change (all that were checked)."""
        moves = dict(self.moves.get(pool, {}))
        slots = self.checking(pool)
        for slot in slots:
            move = moves.pop(slot)
            if slot in busy:
                moves[slot] = SlotMove(move.old, now, move.first, True)
        self._set_moves(pool, moves)
        return slots

    def end(self, pool: str, slots: Collection[int]) -> list[int]:
        """End these slots' handovers now (their connections are gone); the
        slots whose rules change."""
        moves = self.moves.get(pool, {})
        ended = [slot for slot in slots if slot in moves]
        for slot in ended:
            del moves[slot]
        if not moves:
            self.moves.pop(pool, None)
        return ended

    def expire(self, now: float) -> list[tuple[str, int]]:
        """(pool, slot) of every handover whose hold or window (TCP or UDP)
        ended by ``now``: their rules change; moves past both windows are
        forgotten."""
        changed = []
        self.held_until = now
        while self._deadlines and self._deadlines[0][0] <= now:
            _when, pool, slot, since = heapq.heappop(self._deadlines)
            move = self.moves.get(pool, {}).get(slot)
            if move is None or move.since != since:
                continue  # replaced or ended since
            changed.append((pool, slot))
            if now - since >= self.window:
                del self.moves[pool][slot]
                if not self.moves[pool]:
                    del self.moves[pool]
        return changed

    def holding(self, move: SlotMove, now: float, hold: bool = True) -> bool:
        """Whether a move is still checked, or (``hold``: some switch uses
        learn) in its hold, as the switches see it: its hold ends when
        ``expire`` has processed the end (and the slot's rules are being
        rewritten), not at the instant the clock passes it."""
        return not move.checked or (hold and (now - move.since < HOLD or move.since + HOLD > self.held_until))

    def forget(self, pool: str) -> None:
        self.sizes.pop(pool, None)
        self.smallest.pop(pool, None)
        self.tables.pop(pool, None)
        self.moves.pop(pool, None)

    def saved(self, pool: str) -> dict[str, Any]:
        return saved_form(Planned(self.sizes[pool], self.tables[pool], self.moves.get(pool, {})))

    def restore(self, pool: str, body: Any, now: float = 0.0) -> None:
        """Tables (and moves still in a window) from the store, checked."""
        where = f"slot_tables.{pool}"
        if not isinstance(body, dict) or not isinstance(body.get("tables"), dict):
            raise InvalidInput(where, "must be an object with size and tables")
        tables: dict[int, Table] = {}
        for size, table in body["tables"].items():
            ok = str(size).isdigit() and isinstance(table, list) and len(table) == int(size) > 0
            if not ok or not all(x is None or isinstance(x, str) for x in table):
                raise InvalidInput(f"{where}.{size}", "must be a list of backend IPs or nulls, as long as its size")
            tables[int(size)] = table
        size = body.get("size")
        if size not in tables:
            raise InvalidInput(f"{where}.size", "must name one of its tables")
        moves: dict[int, SlotMove] = {}
        for slot, move in (body.get("moves") or {}).items():
            ok = str(slot).isdigit() and int(slot) < size and isinstance(move, list) and len(move) in (2, 3)
            ok = ok and isinstance(move[0], str) and isinstance(move[1], (int, float))
            if not ok or not (len(move) == 2 or move[2] is None or isinstance(move[2], str)):
                raise InvalidInput(
                    f"{where}.moves.{slot}", "must be [old backend IP, time, first backend IP or null] for a slot"
                )
            if now - move[1] < self.window:
                moves[int(slot)] = SlotMove(move[0], float(move[1]), move[2] if len(move) == 3 else None)
        self.sizes[pool] = size
        self.smallest.setdefault(pool, size)
        self.tables[pool] = tables
        self._set_moves(pool, moves)


def saved_form(planned: Planned) -> dict[str, Any]:
    """How a pool's tables and moves are saved."""
    return {
        "size": planned.size,
        "tables": {str(k): v for k, v in planned.tables.items()},
        "moves": {str(slot): [move.old, move.since, move.first] for slot, move in sorted(planned.moves.items())},
    }
