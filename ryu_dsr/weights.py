"""Effective weights: the weight a backend's share of its pool's slots is
made from now, apart from its configured weight (runtime data, never
saved, shown with the reason it differs). Three things move it, each
bounded: the share its agent reports (``agent``), applied in steps of at
most the pool's ``max_move``; the share the least-connections policy gives
it from what the switches counted (``adaptive``); and the step of its slow
start. The configured weight is the ceiling. Time and counts come in;
``Backends`` says which backends take new connections at all.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from ryu_dsr.adaptive import adapt, bounded, smooth
from ryu_dsr.agent import AgentChecker
from ryu_dsr.model import Backend, Pool

LOG = logging.getLogger("ryu_dsr")
RAMP_STEPS = 8  # a slow start's shares of the weight: 1/8, 2/8, ... 8/8


class Weights:
    """Each backend's effective weight, and what moves it."""

    def __init__(
        self,
        clock: Callable[[], float],
        agents: AgentChecker,
        mac_of: Callable[[Backend], str | None],
        usable: Callable[[str, Backend], bool],
    ) -> None:
        """``agents``: what the backends' agents report; ``mac_of``: where a
        backend was found (its MAC, the key of the switches' counts);
        ``usable(pool, backend)``: found, link up, checks passed."""
        self.clock = clock
        self.agents = agents
        self.mac_of = mac_of
        self.usable = usable
        # Least connections: (pool, ip) -> the share of its configured weight the policy gives it
        self.shares: dict[tuple[str, str], float] = {}
        self.weights_then: dict[tuple[str, str], int] = {}  # (pool, ip) -> effective weight last noted
        # (pool, ip) -> its active connections, smoothed, and how many polls over how many seconds they are the mean of
        self.load_seen: dict[tuple[str, str], tuple[float, float, float]] = {}
        self.load_sums: dict[str, dict[str, list[float]]] = {}  # pool -> ip -> [sum, samples] since its last step
        self.rate_seen: dict[tuple[str, str], float] = {}  # (pool, ip) -> its new connections a second, smoothed
        self.answered_then: dict[tuple[str, str], tuple[int, float]] = {}  # (pool, ip) -> answered, when: last step
        self.held: dict[tuple[str, str], str] = {}  # (pool, ip) -> how long it held a connection, said at its last step
        self.adapted_at: dict[str, float] = {}  # adaptive pool -> when it was last looked at
        # Slow start: (pool, ip) -> when the backend began to take connections beside others; the
        # backends each pool's last plan gave connections; the ramp step each was planned at.
        self.ramps: dict[tuple[str, str], float] = {}
        self.usable_then: dict[str, set[str]] = {}
        self.ramp_planned: dict[tuple[str, str], int] = {}

    def apply(self, pool: Pool, usable: dict[str, int], serving: bool) -> dict[str, int]:
        """The effective weights of the backends that take new connections
        (``usable``: ip -> configured weight); ``serving``: the pool has VIPs
        (a backend that starts taking connections beside others then ramps)."""
        self.note_ramps(pool, usable, serving)
        weights = {}
        for ip, weight in usable.items():
            step = self.ramp_step(pool, ip)
            self.ramp_planned[(pool.name, ip)] = step
            weight = weight * self.agent_share(pool.name, ip) // 100
            if pool.adaptive is not None:
                weight = round(weight * self.shares.get((pool.name, ip), 1.0))
            weights[ip] = max(1, weight * step // RAMP_STEPS)
        return weights

    def serving(self, pool: Pool) -> dict[str, int]:
        """The backends that take new connections, with their configured
        weights: weight above 0, usable, their agent saying up."""
        return {
            b.ip: b.weight
            for b in pool.backends.values()
            if b.weight > 0 and self.usable(pool.name, b) and self.agents.says(pool.name, b.ip) == "up"
        }

    def pool_changed(self, pool: Pool) -> None:
        """A pool was made or changed: an adaptive one is looked at from now
        on (every interval; ``adaptive_due`` lets go of one that is not
        adaptive any more)."""
        if pool.adaptive is not None:
            self.adapted_at.setdefault(pool.name, self.clock())

    def forget(self, pool_name: str, ip: str) -> None:
        """A backend left a pool: nothing learned of it stays (added again,
        it starts afresh)."""
        key = (pool_name, ip)
        for learned in (
            self.weights_then, self.shares, self.load_seen, self.rate_seen, self.answered_then, self.held,
            self.ramps, self.ramp_planned,
        ):  # fmt: skip
            learned.pop(key, None)

    # -- agents --

    def agent_share(self, pool_name: str, ip: str) -> int:
        """The share of its weight (percent) applied from what the backend's
        agent reports (``step_agents`` moves it there in bounded steps)."""
        return 100 if self.agents.report(pool_name, ip) is None else self.agents.share((pool_name, ip))

    def agents_due(self, pools: dict[str, Pool]) -> list[str]:
        """Pools whose agents reported a share not applied yet and whose
        agent interval has passed since the last step (a pass over those
        pools only)."""
        now, due = self.clock(), []
        for name in list(self.agents.pending):
            pool = pools.get(name)
            if pool is None or pool.agent_check is None:
                self.agents.pending.discard(name)
                self.agents.stepped.pop(name, None)
            elif now - self.agents.stepped.get(name, -math.inf) >= pool.agent_check.interval:
                due.append(name)
        return due

    def step_agents(self, pool: Pool) -> bool:
        """One step of the pool's applied agent shares toward those reported:
        together at most ``max_move`` of the pool's effective weight (as the
        least-connections policy moves); whether a share changed."""
        self.agents.stepped[pool.name] = self.clock()
        serving = self.serving(pool)
        now = {ip: self.agent_share(pool.name, ip) / 100 for ip in serving}
        wanted = {}
        for ip in serving:
            report = self.agents.report(pool.name, ip)
            wanted[ip] = now[ip] if report is None else report.percent / 100
        after = bounded(now, wanted, serving, pool.agent_check.max_move)
        changed = False
        for ip in serving:
            share = round(100 * after[ip])
            if share != round(100 * now[ip]):
                LOG.info(
                    "pool %s backend %s: its agent's share applied %d%% -> %d%% (it reports %d%%)",
                    *(pool.name, ip, round(100 * now[ip]), share, round(100 * wanted[ip])),
                )
                self.agents.applied[(pool.name, ip)] = share
                changed = True
        if not changed:  # there (or as near as a step goes): nothing more to do until a report changes
            self.agents.pending.discard(pool.name)
        return changed

    # -- least connections --

    def adaptive_due(self, pools: dict[str, Pool]) -> list[str]:
        """Adaptive pools whose interval has passed (a pass over those pools only)."""
        now = self.clock()
        due = []
        for name in list(self.adapted_at):
            pool = pools.get(name)
            if pool is None or pool.adaptive is None:
                self.adapted_at.pop(name, None)
                for key in [key for key in self.shares if key[0] == name]:
                    del self.shares[key]
                for seen in (self.load_seen, self.rate_seen, self.answered_then, self.held):
                    for key in [key for key in seen if key[0] == name]:
                        del seen[key]
                self.load_sums.pop(name, None)
            elif now - self.adapted_at[name] >= pool.adaptive.interval:
                due.append(name)
        return due

    def sample_load(self, pools: dict[str, Pool], active_of: Callable[[str], int]) -> None:
        """After a poll: each adaptive pool's backends' active connections,
        summed toward the mean of its interval (a pass over adaptive pools only)."""
        for name in self.adapted_at:
            pool = pools.get(name)
            if pool is None or pool.adaptive is None:
                continue
            sums = self.load_sums.setdefault(name, {})
            for ip, backend in pool.backends.items():
                mac = self.mac_of(backend)
                if mac is not None:
                    entry = sums.setdefault(ip, [0.0, 0])
                    entry[0] += active_of(mac)
                    entry[1] += 1

    def adapt(self, pool: Pool, answered_of: Callable[[str], int]) -> bool:
        """One step of the pool's policy from what the switches counted of
        each backend MAC: its active connections at each poll since the last
        step (``sample_load``) and the connections it answered so far
        (``answered_of``); whether a share changed."""
        now = self.clock()
        self.adapted_at[pool.name] = now
        serving = {ip: weight * self.agent_share(pool.name, ip) // 100 for ip, weight in self.serving(pool).items()}
        serving = {ip: weight for ip, weight in serving.items() if weight > 0}
        # A poll's count is a snapshot: the mean of the interval's polls, smoothed over
        # the intervals (half this one, half those before: ``smooth``); the rate likewise. No poll
        # since the last step (an interval shorter than stats_interval): nothing new to go by
        sums = self.load_sums.pop(pool.name, {})
        if not sums:
            return False
        load, rates, counted = {}, {}, {}
        for ip in serving:
            key, mac = (pool.name, ip), self.mac_of(pool.backends[ip])
            total, samples = sums.get(ip, (0.0, 0))
            active = total / samples if samples else 0.0
            answered = answered_of(mac) if mac else 0
            before, then = self.answered_then.get(key, (answered, now))
            self.answered_then[key] = (answered, now)
            span = now - then
            rate = max(0, answered - before) / span if span > 0 else 0.0
            seen_rate = self.rate_seen.get(key)
            smoothed = self.load_seen[key] = smooth(self.load_seen.get(key), active, samples, span)
            load[ip], counted[ip] = smoothed[0], smoothed[1:]
            rates[ip] = self.rate_seen[key] = rate if seen_rate is None else (seen_rate + rate) / 2
        pool_load, pool_rate = sum(load.values()), sum(rates.values())
        for ip in serving:
            rest_rate = pool_rate - rates[ip]
            if rates[ip] > 0 and rest_rate > 0:
                self.held[(pool.name, ip)] = (
                    f"it holds a connection {load[ip] / rates[ip]:.2f} s, "
                    f"the rest of the pool {(pool_load - load[ip]) / rest_rate:.2f} s"
                )
        before_shares = {ip: self.shares.get((pool.name, ip), 1.0) for ip in serving}
        after = adapt(before_shares, load, rates, serving, pool.adaptive, counted)
        changed = [ip for ip in serving if after[ip] != before_shares[ip]]
        for ip in changed:
            LOG.info(
                "pool %s backend %s: %.1f active connections, %.1f new a second, its share of its weight %.2f -> %.2f",
                *(pool.name, ip, load[ip], rates[ip], before_shares[ip], after[ip]),
            )
            self.shares[(pool.name, ip)] = after[ip]
        return bool(changed)

    def note_ramps(self, pool: Pool, usable: dict[str, int], serving: bool) -> None:
        """Start the slow start of the backends that begin to take
        connections beside others of a serving pool; end those that stopped."""
        before = self.usable_then.get(pool.name, set())
        self.usable_then[pool.name] = set(usable)
        for key in [key for key in self.ramps if key[0] == pool.name and key[1] not in usable]:
            del self.ramps[key]
            self.ramp_planned.pop(key, None)
        if not pool.slow_start or not serving or not before & usable.keys():
            return
        now = self.clock()
        for ip in usable.keys() - before:
            self.ramps[(pool.name, ip)] = now
            LOG.info("pool %s backend %s: slow start over %gs", pool.name, ip, pool.slow_start)

    def ramp_step(self, pool: Pool, ip: str) -> int:
        """The step (1..RAMP_STEPS) of a backend's slow start now: its share
        of its weight in eighths, RAMP_STEPS when it ramps no more."""
        start = self.ramps.get((pool.name, ip))
        if start is None or not pool.slow_start:
            return RAMP_STEPS
        step = 1 + int((self.clock() - start) / pool.slow_start * RAMP_STEPS)
        if step >= RAMP_STEPS:
            del self.ramps[(pool.name, ip)]
            return RAMP_STEPS
        return step

    def ramps_due(self, pools: dict[str, Pool]) -> set[str]:
        """Pools with a backend whose slow start reached a new step since
        their last plan (a pass over the ramping backends only)."""
        due = set()
        for name, ip in list(self.ramps):
            pool = pools.get(name)
            if pool is None:
                self.ramps.pop((name, ip), None)
                continue
            if self.ramp_step(pool, ip) != self.ramp_planned.get((name, ip)):
                due.add(name)
        return due

    def of(self, pool: Pool, backend: Backend) -> tuple[int, str | None]:
        """A backend's effective weight and why it differs from its weight."""
        share = self.agent_share(pool.name, backend.ip)
        said = self.agents.says(pool.name, backend.ip)
        reasons = []
        weight = backend.weight
        if said != "up":
            report = self.agents.report(pool.name, backend.ip)
            return 0, f"its agent said {report.line!r}: {said}"
        reported = self.agents.report(pool.name, backend.ip)
        if reported is not None and reported.percent != share and pool.agent_check is not None:
            reasons.append(
                f"its agent reports {reported.percent}% of its weight, {share}% applied so far "
                f"(at most {pool.agent_check.max_move:g} of the pool's weight moves an interval)"
            )
        elif share < 100:
            reasons.append(f"its agent reports {share}% of its weight")
        if share < 100:
            weight = max(1, weight * share // 100) if weight else 0
        adapted = self.shares.get((pool.name, backend.ip), 1.0) if pool.adaptive is not None else 1.0
        if adapted < 1.0 and weight:
            weight = max(1, round(weight * adapted))
            reasons.append(
                f"least connections: {round(100 * adapted)}% of its weight "
                f"({self.held.get((pool.name, backend.ip), 'it held its connections longer than the rest of the pool')})"
            )
        step = self.ramp_step(pool, backend.ip)
        if step < RAMP_STEPS:
            start = self.ramps[(pool.name, backend.ip)]
            elapsed = self.clock() - start
            weight = max(1, weight * step // RAMP_STEPS)
            reasons.append(f"slow start: {step}/{RAMP_STEPS} of its weight ({elapsed:.0f} s of {pool.slow_start:g} s)")
        return weight, "; ".join(reasons) or None

    def note(self, pool: Pool) -> list[tuple[str, int, int, str]]:
        """Changes of effective weight since last noted (a backend that
        takes new connections): (ip, old, new, why)."""
        changes = []
        for backend in pool.backends.values():
            key = (pool.name, backend.ip)
            weight, why = self.of(pool, backend)
            old = self.weights_then.get(key)
            self.weights_then[key] = weight
            if old is not None and old != weight:
                changes.append((backend.ip, old, weight, why or "its configured weight"))
        return changes
