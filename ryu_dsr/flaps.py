"""Ports that flap are held down for a while, as routers damp routes that
flap (RFC 2439's figure of merit): every flap (the port went down, or its
link stopped being heard) adds a penalty that halves every ``HALF_LIFE``
seconds; a port whose penalty reaches ``SUPPRESS`` is held down, out of the
fabric (no link, no flooding, no hosts learned), until the penalty has
decayed to ``REUSE``. A cable pulled and put back once is one flap and is
never held; a port bouncing every second is held after its third bounce and
costs the fabric nothing more until it is quiet. Pure: time comes in.
"""

from __future__ import annotations

import math

Port = tuple[int, int]  # (dpid, port)

PENALTY = 1.0  # a flap
SUPPRESS = 2.5  # held down from this penalty (three flaps within a few seconds)
REUSE = 1.0  # released once the penalty has decayed below this
HALF_LIFE = 10.0  # seconds
MAX_HOLD = 60.0  # the longest a port is held after its last flap
_CEILING = REUSE * 2 ** (MAX_HOLD / HALF_LIFE)


class Damping:
    def __init__(self) -> None:
        self.merit: dict[Port, tuple[float, float]] = {}  # port -> (penalty, when it was that)
        self.held: dict[Port, bool] = {}  # ports held down -> whether the switch has them up now
        self.flaps = 0  # flaps counted
        self.holds = 0  # times a port was held down

    def penalty(self, port: Port, now: float) -> float:
        value, at = self.merit.get(port, (0.0, now))
        return value * 0.5 ** ((now - at) / HALF_LIFE)

    def flap(self, port: Port, now: float) -> bool:
        """The port flapped; True when that holds it down (now)."""
        self.flaps += 1
        value = min(self.penalty(port, now) + PENALTY, _CEILING)
        self.merit[port] = (value, now)
        if value >= SUPPRESS and port not in self.held:
            self.held[port] = False
            self.holds += 1
            return True
        return False

    def is_held(self, port: Port) -> bool:
        return port in self.held

    def until(self, port: Port, now: float) -> float | None:
        """When a held port is released, if it stays quiet."""
        if port not in self.held:
            return None
        value = self.penalty(port, now)
        return now + max(0.0, HALF_LIFE * math.log2(value / REUSE)) if value > REUSE else now

    def release(self, now: float) -> list[tuple[Port, bool]]:
        """Held ports whose penalty decayed to ``REUSE``, with whether they are up."""
        released = [(port, up) for port, up in self.held.items() if self.penalty(port, now) <= REUSE]
        for port, _up in released:
            del self.held[port]
        for port in [port for port, (value, at) in self.merit.items() if port not in self.held]:
            if self.penalty(port, now) < 0.01:
                del self.merit[port]
        return released

    def forget(self, dpid: int) -> None:
        """A switch left: its ports start afresh when it comes back."""
        for port in [port for port in self.merit if port[0] == dpid]:
            del self.merit[port]
            self.held.pop(port, None)
