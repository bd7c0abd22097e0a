"""How the controller stays responsive while it does something long: a
long read (a scrape, a page of thousands of objects) pauses every few
milliseconds of work (``Pacer``), and the shell watches how late its own
loop runs (``Lateness``), which ``/metrics`` shows. Pure: time comes in
(``Pacer`` reads a performance counter).
"""

from __future__ import annotations

import time
from collections.abc import Callable

STALL = 0.020  # a loop this late is a stall: counted


def no_pause() -> None:
    """What a long read calls between its pieces when there is no other work
    to let run (tests, tools); the shell passes a yield to its green threads."""


class Pacer:
    """The pauses of one long read: asked after every object, it calls
    ``pause`` once ``slice`` seconds of work have passed since the last
    one, so other work waits that long at most, however large or small the
    objects."""

    def __init__(self, pause: Callable[[], None] = no_pause, slice: float = 0.004) -> None:
        self.pause = pause
        self.slice = slice
        self.last = time.perf_counter()
        self.pauses = 0

    def __call__(self) -> None:
        if time.perf_counter() - self.last >= self.slice:
            self.pause()
            self.pauses += 1
            self.last = time.perf_counter()


class Lateness:
    """How late a green thread that sleeps a short while woke up, time after
    time: while anything holds the controller's only thread, everything
    else (REST, OpenFlow echo, barriers) waits as long. Keeps the longest
    of the current and the previous window, and counts stalls.

    A wake-up is late either because the controller worked (one of its
    green threads ran without yielding) or because the machine ran
    something else (on a shared core, another process). ``working``, the
    controller's CPU time over the same stretch, tells them apart: the
    lesser of the two is the part of the lateness that was its own work."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self.started = 0.0  # when the current window began
        self.longest = 0.0  # in the current window
        self.before = 0.0  # in the previous one
        self.working = 0.0  # of the longest lateness in the current window, the controller's own work
        self.working_before = 0.0  # in the previous one
        self.stalls = 0  # wake-ups later than STALL

    def woke(self, late: float, now: float, working: float | None = None) -> None:
        """A wake-up ``late`` seconds late, at ``now``; ``working``: the
        controller's CPU seconds meanwhile (None: taken as all of it)."""
        if now - self.started >= self.window:
            keep = now - self.started < 2 * self.window
            self.before = self.longest if keep else 0.0
            self.working_before = self.working if keep else 0.0
            self.longest, self.working, self.started = 0.0, 0.0, now
        self.longest = max(self.longest, late)
        self.working = max(self.working, late if working is None else min(late, working))
        if late > STALL:
            self.stalls += 1

    def recent(self) -> float:
        """The longest lateness over the last one to two windows."""
        return max(self.longest, self.before)

    def recent_working(self) -> float:
        """The longest part of a lateness that was the controller's own
        work, over the last one to two windows."""
        return max(self.working, self.working_before)
