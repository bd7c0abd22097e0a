"""Agent checks: each backend reports its own state and load, as HAProxy's
``agent-check`` reads it.

The controller connects in-band (as a TCP health check does, through the
switch, from the probe address) to the agent's port on the backend's own
address and reads the one line the agent sends: ``75%`` (a share of the
backend's configured weight), ``drain``, ``down`` (``fail``, ``stopped``,
``maint``), ``up`` (``ready``), or several of them (``up 50%``). What the
line says is kept per (pool, backend) and changes the backend's effective
weight; a share moves only by the pool's ``step`` or more (or to 0 % or
100 %), so noise does not move slots. The share applied follows the one
reported in bounded steps (``Weights.step_agents``: at most the pool's
``max_move`` of its weight each interval); ``drain`` and ``down`` apply at
once. An agent that does not answer, or
answers nonsense, changes nothing (HAProxy does the same): the health
check says whether a backend is up.
"""

from __future__ import annotations

from dataclasses import dataclass

from ryu_dsr.health import Health, HealthChecker, Probe, Transition
from ryu_dsr.model import AgentCheck, HealthCheck

FIRST_AGENT_PORT, LAST_AGENT_PORT = 60000, 61999  # source ports of agent probes (health probes take lower ones)
DOWN = ("down", "fail", "stopped", "maint")
UP = ("up", "ready")


@dataclass(frozen=True)
class Report:
    """What a backend's agent said last, as applied."""

    state: str  # "up", "drain" or "down"
    percent: int  # its share of the configured weight
    line: str  # the agent's own words


def as_check(agent: AgentCheck) -> HealthCheck:
    """The probe an agent check makes: a TCP connection, then a line read."""
    return HealthCheck(kind="agent", port=agent.port, interval=agent.interval, timeout=agent.timeout, rise=1, fall=1)


def parse_line(line: str, before: Report | None) -> Report | None:
    """What an agent's line says, given the last report; None: nothing
    understood (the report stays)."""
    state, percent = (before.state, before.percent) if before else ("up", 100)
    understood = False
    for word in line.replace(",", " ").lower().split():
        if word.endswith("%") and word[:-1].isdigit():
            percent, understood = min(100, int(word[:-1])), True
        elif word in DOWN:
            state, understood = "down", True
        elif word == "drain":
            state, understood = "drain", True
        elif word in UP:
            state, understood = "up", True
    return Report(state, percent, line.strip()[:80]) if understood else None


class AgentChecker(HealthChecker):
    """Probes agents as health probes go, but reads a line and keeps what it
    says; a result is a Transition only when what the backend reports
    changed (its pool's effective weights then change)."""

    def __init__(self, probe_mac: str, probe_ip: str | None) -> None:
        super().__init__(probe_mac, probe_ip, first_port=FIRST_AGENT_PORT, last_port=LAST_AGENT_PORT)
        self.reports: dict[tuple[str, str], Report] = {}
        self.steps: dict[str, int] = {}  # pool -> its step (percent)
        self.applied: dict[tuple[str, str], int] = {}  # (pool, ip) -> the share applied now (percent; absent: 100)
        self.pending: set[str] = set()  # pools with a share applied that is not yet the one reported
        self.stepped: dict[str, float] = {}  # pool -> when its applied shares last moved toward the reports

    def _request(self, probe: Probe) -> bytes:
        return b""  # the agent speaks first

    def _read(self, probe: Probe, where: str) -> tuple[bool, str] | None:
        # an agent writes its one line at once (and closes): the first segment holds it
        return True, probe.response.split(b"\n", 1)[0].decode(errors="replace").strip()

    def _result(
        self, key, check: HealthCheck, ok: bool, reason: str, now: float, address: str = ""
    ) -> list[Transition]:
        state = self.health.setdefault(key, Health())
        state.checked_at = now
        if not ok:
            state.last_result = f"no answer: {reason}"
            return []
        before = self.reports.get(key)
        report = parse_line(reason, before)
        if report is None:
            state.last_result = f"not understood: {reason[:80]!r}"
            return []
        state.last_result = f"said {report.line!r}"
        if before is not None:
            step = self.steps.get(key[0], 10)
            moved = abs(report.percent - before.percent)
            if moved < step and report.percent not in (0, 100):
                report = Report(report.state, before.percent, report.line)  # within the step: the share stays
            if (report.state, report.percent) == (before.state, before.percent):
                self.reports[key] = report
                return []
        elif (report.state, report.percent) == ("up", 100):
            self.reports[key] = report
            return []
        self.reports[key] = report
        self.pending.add(key[0])
        return [Transition(key[0], key[1], report.state != "down", f"agent said {report.line!r}")]

    def forget(self, key: tuple[str, str]) -> None:
        super().forget(key)
        self.reports.pop(key, None)
        self.applied.pop(key, None)

    def says(self, pool: str, ip: str) -> str:
        """What the backend's agent reports: "up" (also when there is no
        agent, or it said nothing yet), "drain" or "down"."""
        report = self.reports.get((pool, ip))
        if report is None:
            return "up"
        if report.state == "up" and report.percent == 0:
            return "drain"  # 0 % of its weight: as a weight of 0
        return report.state

    def share(self, key: tuple[str, str]) -> int:
        """The share of its weight (percent) applied now to a backend whose
        agent reported: it follows the report in bounded steps."""
        return self.applied.get(key, 100)

    def report(self, pool: str, ip: str) -> Report | None:
        return self.reports.get((pool, ip))
