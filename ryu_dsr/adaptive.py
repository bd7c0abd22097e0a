"""Weights that follow the load the switch measures: least connections in
spirit, over a hashed table (IPVS's ``wlc`` scheduler gives each new
connection to the server with the fewest active ones per unit of weight; a
hashed table cannot pick per connection, so the weights move instead).

The switch counts, per backend, the connections it answered (SYN-ACK from
a VIP address) and those it closed (FIN) or reset (RST); the difference is
its active connections, and the answered ones a second its rate of new
connections. By Little's law their ratio is how long the backend holds a
connection. Where ``wlc`` settles, every backend carries the same active
connections per unit of weight, which is new connections in inverse
proportion to how long each is held: the share of its configured weight a
backend gets is the rest of the pool's time per connection over its own
(the rest: the other backends together, so one slow backend does not
pull the yardstick it is measured by, and one noisy count does not set
it for all). A slower
backend (a weaker CPU, a noisy neighbour, a slow disk) holds connections
longer and gets that much less; one as fast as the rest gets its
configured weight back. A shed backend whose target moves by less than half
the hysteresis stays where it is. A few connections make a noisy count (a
poll sees a Poisson count of them), so a backend is taken as slower only
when it holds more than three standard deviations over what it would hold
at the rest's time per connection; until then it is as fast as the rest.

The target is computed afresh each interval from what was measured (not
added up step after step), so it settles where ``wlc`` would instead of
running to the floor while a queue drains.

Pure: counts in, shares (of the configured weight, ``floor`` to 1) out.
Bounded and calm: a backend sheds weight only once its time per
connection runs more than ``hysteresis`` over the rest's; it climbs back
(by ``CLIMB`` of its weight an interval, to its configured weight) once it
is within half of that; between the two it stays. All moves of one
interval together shift at most ``max_move`` of the pool's effective
weight; shares move in steps of at least ``MIN_STEP``. With fewer than
``min_connections`` active in the pool there is too little to tell, and
nothing moves: what was learned under load holds through a quiet spell
(too little load to overload anyone either).
"""

from __future__ import annotations

import math

from ryu_dsr.model import Adaptive

MIN_STEP = 0.02  # a share that would move less stays
CLIMB = 0.1  # how much of its weight a backend takes back an interval (as a slow start's steps do)


def adapt(
    shares: dict[str, float],
    load: dict[str, float],
    rates: dict[str, float],
    weights: dict[str, int],
    policy: Adaptive,
) -> dict[str, float]:
    """The shares of their configured weights the backends of ``weights``
    (those taking new connections) get next, from their active
    connections ``load``, their new connections a second ``rates`` and
    their shares now (1.0 for a backend new to the policy)."""
    now = {ip: shares.get(ip, 1.0) for ip in weights}
    if len(weights) < 2:
        return now
    total = sum(load.get(ip, 0) for ip in weights)
    offered = sum(rates.get(ip, 0) for ip in weights)
    wanted = dict(now)
    if total >= policy.min_connections and offered > 0:  # else too little to tell: nothing moves
        for ip in weights:
            mine, rate = load.get(ip, 0), rates.get(ip, 0)
            rest_load, rest_rate = total - mine, offered - rate
            if rate <= 0 or rest_rate <= 0:
                continue  # no new connection this interval (its own or the rest's): nothing to tell time by
            # what it would hold at the rest's time per connection (Little's law: active = new a second x time)
            expected = rate * rest_load / rest_rate
            ratio = mine / expected if expected > 0 else (float("inf") if mine else 1.0)
            # counts of a few connections are noisy (a poll sees a Poisson count): slower only past three deviations
            slower = mine - expected > 3 * math.sqrt(expected)
            if ratio > 1 + policy.hysteresis and slower:  # holds connections longer than the rest: wlc's share
                target = max(policy.floor, min(1.0, 1 / ratio))
                if abs(target - now[ip]) > now[ip] * policy.hysteresis / 2:  # settled within the hysteresis: stays
                    wanted[ip] = target
            elif ratio <= 1 + policy.hysteresis / 2 or not slower:  # as fast as the rest: back toward its weight
                wanted[ip] = min(1.0, now[ip] + CLIMB)
    effective = sum(weights[ip] * now[ip] for ip in weights)
    moving = sum(abs(wanted[ip] - now[ip]) * weights[ip] for ip in weights) / effective
    scale = min(1.0, policy.max_move / moving) if moving else 1.0
    out = {}
    for ip in weights:
        share = now[ip] + (wanted[ip] - now[ip]) * scale
        if share >= 1 - MIN_STEP / 2:
            share = 1.0
        out[ip] = share if abs(share - now[ip]) >= MIN_STEP or share == 1.0 else now[ip]
    return out


def shift(before: dict[str, float], after: dict[str, float], weights: dict[str, int]) -> float:
    """The part of the pool's effective weight a step moved."""
    total = sum(weights[ip] * before.get(ip, 1.0) for ip in weights)
    moved = sum(abs(after[ip] - before.get(ip, 1.0)) * weights[ip] for ip in weights)
    return moved / total if total else 0.0
