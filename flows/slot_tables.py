"""Consistent-hash slot tables: weighted Maglev, then minimal-move updates.

A pool's first table is built by weighted Maglev (Eisenbud et al., NSDI 2016).

Each backend has a permutation of the table's slots, derived from two hashes
of its key (offset and skip). Backends take turns claiming the next free slot
of their own permutation until the table is full. Turns are handed out by
smooth weighted round robin, and each stops at its exact share of the slots
(largest-remainder apportionment of the weights).

Maglev alone moves noticeably more than the ideal share of slots once a pool
has more than a handful of backends (about 1.5x the ideal at N=32 with 4099
slots, see bench/hash_table.py). Later tables are therefore derived from the
previous one by ``rebalance``: every backend's slot count is set by exact
apportionment of the weights, a backend keeps its slots up to that count, and
only the surplus and the slots of departed backends are handed to backends
below their count. That moves exactly the slots whose owner must change.
The price is that a table depends on its history; ryu_dsr persists it with the
rest of the state.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Mapping
from math import gcd

DEFAULT_TABLE_SIZE = 4099  # prime; > 64 x the largest pool we plan for


def _hash(key: str, salt: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8, salt=salt).digest(), "big")


def permutation(key: str, size: int) -> tuple[int, int]:
    """(offset, skip) of a backend's permutation; skip is coprime with size, so
    the walk offset, offset+skip, ... visits every slot once."""
    offset = _hash(key, b"offset") % size
    if size == 1:
        return 0, 1
    skip = _hash(key, b"skip") % (size - 1) + 1
    while gcd(skip, size) != 1:
        skip = skip % (size - 1) + 1
    return offset, skip


def build_table(weights: Mapping[str, int], size: int = DEFAULT_TABLE_SIZE) -> list[str | None]:
    """Slot -> backend key for the backends with positive weight.

    ``weights`` maps a stable backend key (its IP) to its weight. Slots are
    ``None`` only when no backend has a positive weight.
    """
    if size < 1:
        raise ValueError("table size must be at least 1")
    active = sorted(k for k, w in weights.items() if w > 0)
    table: list[str | None] = [None] * size
    if not active:
        return table
    targets = apportion(weights, size)
    perms = {k: permutation(k, size) for k in active}
    walked = dict.fromkeys(active, 0)
    credit = dict.fromkeys(active, 0)
    held = dict.fromkeys(active, 0)
    filled = 0
    while filled < size:
        # smooth weighted round robin among backends short of their exact
        # share (apportion): the one with the most credit claims a slot
        open_keys = [k for k in active if held[k] < targets[k]]
        total = sum(weights[k] for k in open_keys)
        for k in open_keys:
            credit[k] += weights[k]
        turn = max(open_keys, key=lambda k: credit[k])
        credit[turn] -= total
        offset, skip = perms[turn]
        while True:
            slot = (offset + walked[turn] * skip) % size
            walked[turn] += 1
            if table[slot] is None:
                table[slot] = turn
                held[turn] += 1
                filled += 1
                break
    return table


def apportion(weights: Mapping[str, int], size: int, held: Mapping[str, int] | None = None) -> dict[str, int]:
    """Slots per backend.

    A new table: each backend gets the floor of its exact share of ``size``
    and the slots left over go by largest remainder (every count within one
    slot of the exact share). After a change (``held``: what each backend
    holds now): each keeps what it holds as long as that stays within one
    slot of its floor either way (a new backend starts at its floor), and
    the difference is made up by giving to the most under-served and taking
    from the most over-served. Counts stay within two slots of the exact
    share, and rounding moves nothing that need not move: a backend that
    leaves frees only its own slots, where keeping every count within one
    slot would sometimes take a slot from a backend that stays."""
    active = sorted(k for k, w in weights.items() if w > 0)
    if not active:
        return {}
    total = sum(weights[k] for k in active)
    quotas = {k: size * weights[k] / total for k in active}
    floors = {k: int(q) for k, q in quotas.items()}
    if not held:
        counts = dict(floors)
        left = size - sum(counts.values())
        for k in sorted(active, key=lambda k: (-(quotas[k] - floors[k]), k))[:left]:
            counts[k] += 1
        return counts
    counts = {}
    for k in active:
        had = held.get(k, 0)
        counts[k] = min(max(had, floors[k] - 1), floors[k] + 1) if had else floors[k]
    diff = size - sum(counts.values())
    sign = 1 if diff > 0 else -1
    # most under-served first when giving, most over-served first when taking
    heap = [(sign * (counts[k] - quotas[k]), k) for k in active]
    heapq.heapify(heap)
    for _ in range(abs(diff)):
        _gap, k = heapq.heappop(heap)
        counts[k] += sign
        heapq.heappush(heap, (sign * (counts[k] - quotas[k]), k))
    return counts


def rebalance(
    previous: list[str | None] | None, weights: Mapping[str, int], size: int = DEFAULT_TABLE_SIZE
) -> list[str | None]:
    """The next table after ``previous`` for new ``weights``, moving only slots
    whose owner must change. Falls back to ``build_table`` when there is no
    usable previous table (none, another size, or none of its owners left)."""
    held_before: dict[str, int] = {}
    for key in previous or ():
        if key is not None:
            held_before[key] = held_before.get(key, 0) + 1
    targets = apportion(weights, size, held_before)
    if not targets:
        return [None] * size
    if previous is None or len(previous) != size or not any(k in targets for k in previous):
        return build_table(weights, size)
    table: list[str | None] = [None] * size
    kept = dict.fromkeys(targets, 0)
    # A backend over its count keeps the slots that come first in its own
    # permutation (deterministic, and independent of slot numbering).
    held: dict[str, list[int]] = {}
    for slot, key in enumerate(previous):
        if key in targets:
            held.setdefault(key, []).append(slot)
    for key, slots in held.items():
        if len(slots) > targets[key]:
            offset, skip = permutation(key, size)
            inverse = pow(skip, -1, size)
            slots.sort(key=lambda s: ((s - offset) * inverse) % size)
        for slot in slots[: targets[key]]:
            table[slot] = key
            kept[key] += 1
    free = {i for i, key in enumerate(table) if key is None}
    short = sorted(k for k in targets if kept[k] < targets[k])
    walked = dict.fromkeys(short, 0)
    while short:
        for key in list(short):
            offset, skip = permutation(key, size)
            while True:
                slot = (offset + walked[key] * skip) % size
                walked[key] += 1
                if slot in free:
                    free.discard(slot)
                    table[slot] = key
                    kept[key] += 1
                    break
            if kept[key] == targets[key]:
                short.remove(key)
    return table


def changed_slots(old: list[str | None], new: list[str | None]) -> list[int]:
    """Slots whose backend differs between two tables of the same size."""
    return [i for i, (a, b) in enumerate(zip(old, new)) if a != b]
