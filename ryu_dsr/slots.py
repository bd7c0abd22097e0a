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

Plain OpenFlow 1.3 switches use a table of ``2^plain_slot_bits`` slots per
pool (masked client-address bits), kept only while such a switch is
connected.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ryu_dsr.flows.maglev import rebalance
from ryu_dsr.model import InvalidInput

LOG = logging.getLogger("ryu_dsr.slots")
SLOTS_PER_BACKEND = 64
MIN_SLOTS = 64

Table = list[str | None]


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
    """The tables of every pool, by pool name."""

    def __init__(self, cap: int, plain_size: int) -> None:
        self.cap = cap
        self.plain_size = plain_size
        self.sizes: dict[str, int] = {}  # pool -> size of its Open vSwitch table
        self.tables: dict[str, dict[int, Table]] = {}  # pool -> size -> table

    def size(self, pool: str) -> int:
        return self.sizes.get(pool, MIN_SLOTS)

    def table(self, pool: str, size: int | None = None) -> Table:
        return self.tables.get(pool, {}).get(size or self.size(pool), [])

    def plan(
        self, pool: str, n_backends: int, weights: Mapping[str, int], plain: bool
    ) -> tuple[int, dict[int, Table]] | None:
        """The pool's next (size, tables) for these weights, or None if
        nothing changes. ``n_backends`` (configured, whatever their health)
        sets the size, so health flaps never resize a table."""
        size = size_for(n_backends, self.cap, self.sizes.get(pool))
        old = self.tables.get(pool, {})
        wanted = {size} | ({self.plain_size} if plain else set())
        new: dict[int, Table] = {}
        for each in wanted:
            previous = old.get(each)
            if previous is None and each == size and self.sizes.get(pool) in old and self.sizes[pool] < size:
                previous = grown(old[self.sizes[pool]], size)
            new[each] = rebalance(previous, weights, each)
        if size == self.sizes.get(pool) and new == {k: v for k, v in old.items() if k in wanted}:
            return None
        return size, new

    def install(self, pool: str, planned: tuple[int, dict[int, Table]]) -> None:
        size, tables = planned
        before = self.tables.get(pool, {})
        for each, table in tables.items():
            old = before.get(each)
            if old is not None and len(old) == len(table):
                moved = sum(1 for a, b in zip(old, table) if a != b)
                if moved:
                    LOG.info("pool %s: %d of %d slots move", pool, moved, each)
            elif old is not None:
                LOG.info("pool %s: table grows from %d to %d slots", pool, len(old), each)
        self.sizes[pool] = size
        self.tables[pool] = dict(tables)

    def forget(self, pool: str) -> None:
        self.sizes.pop(pool, None)
        self.tables.pop(pool, None)

    def saved(self, pool: str) -> dict[str, Any]:
        return {"size": self.sizes[pool], "tables": {str(k): v for k, v in self.tables[pool].items()}}

    def restore(self, pool: str, body: Any) -> None:
        """Tables from the store, checked."""
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
        self.sizes[pool] = size
        self.tables[pool] = tables
