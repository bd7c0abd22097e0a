"""What the Ryu shell keeps per connected switch, in one object, and the
barrier protocol that says when a REST change is held by a switch.

Pure: no Ryu here. The shell gives each ``Session`` the switch's datapath
and the queue its writer thread reads; everything else about the switch's
connection lives in the session and goes with it when the switch leaves.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

SENT_REMEMBERED = 100000  # barriers remembered by xid
# Messages remembered by xid, to name what a switch refused: five steps of
# flow changes (a switch answers within them; an older one is named by xid).
NAMED = 20000


class Confirmations:
    """When the work queued for one switch is confirmed by it.

    Work queued for the switch counts up ``requested``. When its writer has
    sent everything queued, it sends a barrier stamped with that count;
    the barrier's reply raises ``confirmed`` to it. A REST change takes a
    ticket (the count after its own work) and waits until ``confirmed``
    reaches it: its own work only, not for the switch to fall idle, which
    concurrent writers could keep from ever happening. A switch still being
    read when the change is made holds none of it yet: its ticket is one
    more, the first write after the read."""

    def __init__(self) -> None:
        self.requested = 0
        self.confirmed = 0
        self.stamps: OrderedDict[int, int] = OrderedDict()  # barrier xid -> count it confirms

    def queued(self) -> None:
        """One more piece of work for the switch."""
        self.requested += 1

    def ticket(self, reading: bool = False) -> int:
        """The count a change made now waits for."""
        return self.requested + (1 if reading else 0)

    def due(self) -> int | None:
        """The count a barrier sent now would confirm, or None when every
        count is confirmed or already on a barrier in flight."""
        count = self.requested
        if count <= self.confirmed or count in self.stamps.values():
            return None
        return count

    def stamped(self, xid: int, count: int) -> None:
        """A barrier carrying ``count`` went out with ``xid``."""
        self.stamps[xid] = count
        while len(self.stamps) > SENT_REMEMBERED:
            self.stamps.popitem(last=False)

    def answered(self, xid: int) -> None:
        """The switch answered barrier ``xid``: what it was stamped with is held."""
        count = self.stamps.pop(xid, None)
        if count is not None and count > self.confirmed:
            self.confirmed = count

    def holds(self, ticket: int) -> bool:
        return self.confirmed >= ticket


@dataclass
class Connecting:
    """What a switch said while it was being taken: its description, ports and flows."""

    desc: Any = None
    ports: set[int] = field(default_factory=set)
    ports_down: set[int] = field(default_factory=set)
    port_macs: dict[int, str] = field(default_factory=dict)  # the ports' own MAC addresses
    port_names: dict[int, str] = field(default_factory=dict)  # port number -> its name
    installed: dict[tuple, int] = field(default_factory=dict)  # rule key -> cookie
    asked: float = field(default_factory=time.monotonic)  # when its flows were asked for
    parsing: float = 0.0  # seconds spent reading the flows' keys from the replies


@dataclass
class Poll:
    """One read of a switch's counters (traffic, or slots in a handover),
    until every reply is in."""

    sent: float  # monotonic time it was asked
    waiting: set[int] = field(default_factory=set)  # xids not answered yet
    entries: list = field(default_factory=list)  # counting flows read so far (a handover watch)
    flows: int = 0  # flows read so far
    pin_requests: dict[int, int] = field(default_factory=dict)  # xid -> backend uid whose pins it counts
    pins: dict[int, int] = field(default_factory=dict)  # backend uid -> its pins


@dataclass
class Session:
    """One connected switch as the shell sees it."""

    datapath: Any
    outbox: Any  # the writer thread's queue of command lists (None: stop)
    confirm: Confirmations = field(default_factory=Confirmations)
    connecting: Connecting | None = None  # being taken: description, ports, flows read so far
    reading: dict[tuple, int] | None = None  # flows read for a resync so far
    poll: Poll | None = None  # a read of its traffic counters
    watch: Poll | None = None  # a read of the counters of its slots in a handover
    counting: dict[int, tuple[int, dict[int, int]]] = field(default_factory=dict)  # xid -> pool uid, slot packets
    counts_due: set[int] = field(default_factory=set)  # pools whose slot counters are read once the writes went
    role: str | None = None  # the role the switch last confirmed for us (a cluster)
    asked_generation: bool = False  # asked for its generation id after it refused us
    busy: bool = False  # its writer is writing
    barrier: int | None = None  # xid of the last step's barrier not answered yet
    bundles: bool = False  # its steps are sent as bundles (Open vSwitch)
    bundle: int | None = None  # the id of the bundle open now (a step's flow changes so far)
    bundle_ids: int = 0  # bundles opened so far
    outgoing: bytearray = field(default_factory=bytearray)  # a bundle's messages not handed to Ryu yet
    sent: OrderedDict[int, Any] = field(default_factory=OrderedDict)  # xid -> what it was

    @property
    def dpid(self) -> int:
        return self.datapath.id

    def awaiting(self, xid: int) -> Poll | None:
        """The read of counters (traffic poll or handover watch) that waits for reply ``xid``."""
        for read in (self.poll, self.watch):
            if read is not None and xid in read.waiting:
                return read
        return None

    def remember(self, xid: int, what: Any) -> None:
        """What went out with ``xid``, to name it if the switch refuses it."""
        self.sent[xid] = what
        while len(self.sent) > NAMED:
            self.sent.popitem(last=False)

    def close(self) -> None:
        """Stop its writer."""
        self.outbox.put(None)
