"""What an event wants done, returned by the balancer for the shell (or a
test's switches) to carry out."""

from __future__ import annotations

from dataclasses import dataclass, field

from ryu_dsr.flows.rules import PacketOut


@dataclass
class Effects:
    """Packet-outs to send now; switches whose writer has rule work (it
    pulls ``Switches.step`` until the switch is in line); switches whose
    flow table must be read again (a resync, answered by
    ``Balancer.flows_read``); pools whose slot counters to read on a switch
    (``(dpid, pool uid)``, answered by ``Balancer.slots_counted``: did a
    moved slot carry packets?); switches whose handover zone to prepare
    over OVSDB (answered by ``Balancer.tracking_prepared``)."""

    packet_outs: list[tuple[int, PacketOut]] = field(default_factory=list)
    writes: set[int] = field(default_factory=set)
    reads: set[int] = field(default_factory=set)
    counts: set[tuple[int, int]] = field(default_factory=set)
    zones: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.packet_outs or self.writes or self.reads or self.counts or self.zones)
