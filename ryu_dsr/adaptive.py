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
configured weight back.

A few connections make a noisy count (a poll sees a Poisson count of
them), and the two ways out of a share weigh the noise differently:

- *Shown slower* (it sheds): it holds more than three standard deviations
  of one poll's count over what it would hold at the rest's time per
  connection (strict: equal backends must never shed on noise). A shed
  backend whose target moves by less than half the hysteresis stays where
  it is.
- *As fast as the rest* (it climbs): its time per connection is within
  half the hysteresis of the rest's, or its load is within one standard
  deviation of what it would hold at the rest's pace, the deviation taken
  over everything it was counted in: the mean of many polls (a mean of n
  independent counts deviates a square root of n less; no more polls than
  its connections turned over in the time they span, as one held across
  polls is seen by each) and the counts ``expected`` is made of.

Between the two it stays. Before, a backend not shown slower climbed: a
weak backend shed to its share holds a connection or two, can never be
shown slower in one poll, so it climbed back, was overloaded and was shed
again (the table flapped: bench/adaptive.py saw 16 and 20 changes).

The target is computed afresh each interval from what was measured (not
added up step after step), so it settles where ``wlc`` would instead of
running to the floor while a queue drains.

Pure: counts in, shares (of the configured weight, ``floor`` to 1) out.
Bounded and calm: a backend sheds weight only once its time per
connection runs more than ``hysteresis`` over the rest's; it climbs back
by ``CLIMB`` of its weight an interval, to its configured weight. All moves of one
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
    counted: dict[str, tuple[float, float]] | None = None,
) -> dict[str, float]:
    """The shares of their configured weights the backends of ``weights``
    (those taking new connections) get next, from their active
    connections ``load``, their new connections a second ``rates`` and
    their shares now (1.0 for a backend new to the policy). ``counted``:
    of each backend, how many polls its load is the mean of and over how
    many seconds (one poll when not given)."""
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
            # counts of a few connections are noisy (a poll sees a Poisson count): slower only past three
            # deviations of one poll's count; as fast as the rest within one deviation of all it was counted in
            spread = noise(counted, ip, expected, rate, rest_load, rest_rate)
            slower = mine - expected > 3 * math.sqrt(expected)
            as_fast = mine - expected <= spread
            if ratio > 1 + policy.hysteresis and slower:  # holds connections longer than the rest: wlc's share
                target = max(policy.floor, min(1.0, 1 / ratio))
                if abs(target - now[ip]) > now[ip] * policy.hysteresis / 2:  # settled within the hysteresis: stays
                    wanted[ip] = target
            elif ratio <= 1 + policy.hysteresis / 2 or as_fast:  # as fast as the rest: back toward its weight
                wanted[ip] = min(1.0, now[ip] + CLIMB)
    return bounded(now, wanted, weights, policy.max_move)


def bounded(
    now: dict[str, float], wanted: dict[str, float], weights: dict[str, int], max_move: float
) -> dict[str, float]:
    """The shares of their configured ``weights`` the backends go to, from
    ``now`` toward ``wanted``: every move scaled down alike so that all of
    them shift at most ``max_move`` of the pool's effective weight; a share
    that would move less than ``MIN_STEP`` stays (one within half of it of
    the whole weight takes it)."""
    effective = sum(weights[ip] * now[ip] for ip in weights)
    moving = sum(abs(wanted[ip] - now[ip]) * weights[ip] for ip in weights) / effective if effective else 0.0
    scale = min(1.0, max_move / moving) if moving else 1.0
    out = {}
    for ip in weights:
        share = now[ip] + (wanted[ip] - now[ip]) * scale
        if share >= 1 - MIN_STEP / 2:
            share = 1.0
        out[ip] = share if abs(share - now[ip]) >= MIN_STEP or share == 1.0 else now[ip]
    return out


def smooth(
    seen: tuple[float, float, float] | None, mean: float, polls: int, seconds: float
) -> tuple[float, float, float]:
    """A backend's load smoothed over the intervals: half the ``mean`` of
    this interval's ``polls`` (over ``seconds``), half what was ``seen``
    before; with how many polls over how many seconds the result is worth
    (a quarter of the variance of each half: three intervals' worth once
    steady), for ``adapt``'s ``counted``."""
    if seen is None or seen[1] <= 0:
        return (mean, float(polls), seconds)
    if not polls:
        return seen  # nothing counted this interval: what was seen stands
    span = 4 / (1 / seen[2] + 1 / seconds) if seen[2] > 0 and seconds > 0 else seconds
    return ((seen[0] + mean) / 2, 4 / (1 / seen[1] + 1 / polls), span)


def noise(
    counted: dict[str, tuple[float, float]] | None,
    ip: str,
    expected: float,
    rate: float,
    rest_load: float,
    rest_rate: float,
) -> float:
    """The standard deviation of a backend's load less ``expected`` (what
    it would hold at the rest's time per connection) were it as fast as
    the rest.

    Independent counts: one per poll, but no more than the times its
    connections turned over in the seconds they span (a connection held
    across polls is counted by each). The deviation: of a Poisson count's
    mean over those polls, and of ``expected`` itself, which is made of
    counts too (its rate, the rest's load and rate: relative variances
    add). One poll and exact rates when ``counted`` does not say."""
    polls, seconds = (counted or {}).get(ip, (1.0, 0.0))
    held = rest_load / rest_rate
    counts = max(1.0, min(polls, seconds / held if held > 0 else polls))
    variance = expected / counts
    if seconds > 0 and rest_load > 0:
        variance += expected**2 * (1 / (rate * seconds) + 1 / (rest_rate * seconds) + 1 / (rest_load * counts))
    return math.sqrt(variance)


def shift(before: dict[str, float], after: dict[str, float], weights: dict[str, int]) -> float:
    """The part of the pool's effective weight a step moved."""
    total = sum(weights[ip] * before.get(ip, 1.0) for ip in weights)
    moved = sum(abs(after[ip] - before.get(ip, 1.0)) * weights[ip] for ip in weights)
    return moved / total if total else 0.0
