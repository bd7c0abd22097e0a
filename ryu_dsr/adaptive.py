"""Weights that follow the load the switch measures: least connections in
spirit, over a hashed table (IPVS's ``lc`` scheduler gives each new
connection to the server with the fewest active ones; a hashed table
cannot pick per connection, so the weights move instead).

The switch counts, per backend, the connections it answered (SYN-ACK from
a VIP address) and those it closed (FIN) or reset (RST); the difference is
its active connections. A backend that is slower than its peers (a weaker
CPU, a noisy neighbour) holds each connection longer, so it carries more
active connections per unit of its configured weight. Every interval this policy gives
such a backend a smaller share of its configured weight, and gives a
backend that runs behind the pool back toward its configured weight.

Pure: counts in, shares (of the configured weight, ``floor`` to 1) out.
Bounded and calm: a backend sheds weight only once its load per weight
runs more than ``hysteresis`` ahead of the pool's, and takes weight back
(up to its configured weight) only while it runs behind; all moves of one interval together shift at most
``max_move`` of the pool's effective weight; shares move in steps of at
least ``MIN_STEP``; with fewer than ``min_connections`` active in the pool
nothing moves (too little to tell).
"""

from __future__ import annotations

from ryu_dsr.model import Adaptive

MIN_STEP = 0.02  # a share that would move less stays


def active(answered: int, finished: int, resets: int) -> int:
    """A backend's connections now: answered and neither closed nor reset."""
    return max(0, answered - finished - resets)


def adapt(
    shares: dict[str, float], load: dict[str, int], weights: dict[str, int], policy: Adaptive
) -> dict[str, float]:
    """The shares of their configured weights the backends of ``weights``
    (those taking new connections) get next, from their active
    connections ``load`` and their shares now (1.0 for a backend new to
    the policy)."""
    now = {ip: shares.get(ip, 1.0) for ip in weights}
    total = sum(load.get(ip, 0) for ip in weights)
    if len(weights) < 2 or total < policy.min_connections:
        return now
    effective = {ip: weights[ip] * now[ip] for ip in weights}
    # Per unit of configured weight (the capacity the operator declared): a
    # backend's active connections are its new ones a second times how long
    # each lasts, so equal load per weight gives each a share of new
    # connections in inverse proportion to how long it holds them.
    per_weight = total / sum(weights.values())
    wanted = dict(now)
    for ip in weights:
        ratio = load.get(ip, 0) / weights[ip] / per_weight
        if ratio > 1 + policy.hysteresis:  # ahead of the pool: shed
            wanted[ip] = max(policy.floor, now[ip] / ratio)
        elif ratio < 1 and now[ip] < 1:  # below the pool and below its ceiling: back up
            wanted[ip] = min(1.0, now[ip] / max(ratio, 1e-9))
            if wanted[ip] >= 1 - 2 * MIN_STEP:
                wanted[ip] = 1.0  # close to the ceiling: all the way
    shift = sum(abs(wanted[ip] - now[ip]) * weights[ip] for ip in weights) / sum(effective.values())
    scale = min(1.0, policy.max_move / shift) if shift else 1.0
    out = {}
    for ip in weights:
        share = now[ip] + (wanted[ip] - now[ip]) * scale
        out[ip] = share if abs(share - now[ip]) >= MIN_STEP else now[ip]
    return out


def shift(before: dict[str, float], after: dict[str, float], weights: dict[str, int]) -> float:
    """The part of the pool's effective weight a step moved."""
    total = sum(weights[ip] * before.get(ip, 1.0) for ip in weights)
    moved = sum(abs(after[ip] - before.get(ip, 1.0)) * weights[ip] for ip in weights)
    return moved / total if total else 0.0
