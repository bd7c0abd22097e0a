"""What the balancer wants done, carried out on the switches: packet-outs,
the writer of each switch, flow tables read for a resync; and a REST
change's wait for the switches' confirmation.

Each connected switch has one green thread (``drain``) that writes to it:
woken with work, it pulls the balancer's next step of commands for its
switch until the switch is in line, then sends a barrier stamped with the
work queued so far (``session.Confirmations``). A REST change waits until
every switch confirmed the work queued when it was made.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

from ryu_dsr import ofp
from ryu_dsr.effects import Effects
from ryu_dsr.session import Session

LOG = logging.getLogger("ryu_dsr")
FLUSH = "flush"  # outbox marker: compute and send what the switch needs now
BULK_FLOW_MODS = 10000  # a write this large is followed by gc.freeze()
SEND_BYTES = 1 << 16  # a bundle's messages go to the connection in pieces this large


class Writers:
    def __init__(
        self,
        balancer: Any,
        sessions: dict[int, Session],
        master: Callable[[], bool],
        count_slots: Callable[[Session, int], None],
        prepare_zone: Callable[[Session], None],
    ) -> None:
        self.balancer = balancer
        self.sessions = sessions
        self.master = master  # whether this controller programs the switches now
        self.count_slots = count_slots  # ask a switch for a pool's slot counters (the shell's)
        self.prepare_zone = prepare_zone  # set the switch's handover zone over OVSDB (the shell's)

    def carry_out(self, effects: Effects) -> None:
        """Packet-outs now (probes and ARP answers do not wait behind a
        batch of flow changes: their timing is what health checks
        measure); rule work queued for each switch's writer; flow tables
        asked for a resync. A slave carries out nothing."""
        if not self.master():
            return
        for dpid, packet_out in effects.packet_outs:
            session = self.sessions.get(dpid)
            if session is not None:
                session.datapath.send_msg(ofp.to_message(packet_out, session.datapath))
        for dpid in sorted(effects.writes):
            session = self.sessions.get(dpid)
            if session is not None:
                self.wake(session)
        for dpid in sorted(effects.reads):
            session = self.sessions.get(dpid)
            if session is not None:
                session.reading = {}
                session.datapath.send_msg(ofp.flow_stats_request(session.datapath))
        for dpid, pool_uid in sorted(effects.counts):  # read after the writes queued with them (the hold)
            session = self.sessions.get(dpid)
            if session is not None:
                session.counts_due.add(pool_uid)
                self.wake(session)
        for dpid in sorted(effects.zones):
            session = self.sessions.get(dpid)
            if session is not None:
                self.prepare_zone(session)

    def start(self, session: Session) -> None:
        ofp.hub.spawn(self.drain, session)

    def wake(self, session: Session) -> None:
        """Rule work for the switch: counted for confirmation, and its writer woken."""
        session.confirm.queued()
        if not session.busy:
            session.outbox.put(FLUSH)

    def transmit(self, session: Session, command, bundle: bool = False) -> None:
        """Send one command of a step. With ``bundle``, a step's flow changes
        go into one bundle, committed before whatever is not a flow change
        (the step's barrier, a meter): the switch applies them at once, and
        in their order."""
        datapath = session.datapath
        if bundle and ofp.bundled(command):
            if session.bundle is None:
                session.bundle_ids = (session.bundle_ids + 1) & 0xFFFFFFFF
                session.bundle = session.bundle_ids
                self._send(session, ofp.bundle_control(datapath, session.bundle, ofp.ofp.ONF_BCT_OPEN_REQUEST))
            datapath.xid = xid = (datapath.xid + 1) & datapath.ofproto.MAX_XID
            session.outgoing += ofp.encode_bundle_add(command, session.bundle, xid, datapath)
            if len(session.outgoing) >= SEND_BYTES:
                self._flush(session)
            session.remember(xid, ofp.sent_form(command))
            return
        if session.bundle is not None:
            bundle, session.bundle = session.bundle, None
            self._flush(session)
            self._send(session, ofp.bundle_control(datapath, bundle, ofp.ofp.ONF_BCT_COMMIT_REQUEST))
            switch = self.balancer.switches.get(session.dpid)
            if switch is not None:
                switch.bundles += 1
        if isinstance(command, ofp.FlowAdd):  # most of every batch: encoded without Ryu's message objects
            datapath.xid = xid = (datapath.xid + 1) & datapath.ofproto.MAX_XID
            ok = datapath.send(ofp.encode_flow_add(command.rule, xid, command.reset))
        else:
            message = ofp.to_message(command, datapath)
            ok = datapath.send_msg(message)
            xid = message.xid
        if not ok:
            raise ConnectionError("the switch connection is closed")
        if isinstance(command, ofp.Barrier):
            session.barrier = xid
            ofp.hub.sleep(0)  # a step is written: let REST and events run
        else:
            kept = isinstance(command, ofp.MeterSet) or ofp.answers_neighbours(command)  # told apart if refused
            session.remember(xid, command if kept else ofp.describe(command))

    def _flush(self, session: Session) -> None:
        """Hand what is gathered of a bundle to the connection, in one piece."""
        if session.outgoing:
            data, session.outgoing = bytes(session.outgoing), bytearray()
            if not session.datapath.send(data):
                raise ConnectionError("the switch connection is closed")

    def _send(self, session: Session, message) -> None:
        if not session.datapath.send_msg(message):
            raise ConnectionError("the switch connection is closed")
        session.remember(message.xid, f"bundle {message.bundle_id} ({'open' if message.type == 0 else 'commit'})")

    def drain(self, session: Session) -> None:
        """The one green thread that writes to a switch: what the balancer
        has for it, step by step, until it is in line."""
        dpid = session.dpid
        switches = lambda: self.balancer.switches  # noqa: E731  (a new master's restore makes them anew)
        while True:
            commands = session.outbox.get()
            if commands is None:
                return
            if not self.master():
                continue  # stepped down: what was queued is the new master's to decide
            session.busy = True
            try:
                switch = switches().get(dpid)
                session.bundles = switch is not None and switch.mode == "ovs"
                session.bundle = None
                before = switches().flow_mods(dpid)
                while switches().pending(dpid):
                    for command in switches().step(dpid, self.balancer.rules.rules_of):
                        self.transmit(session, command, session.bundles)
                self.read_counts(session)
                if switches().flow_mods(dpid) - before > BULK_FLOW_MODS:
                    # A bulk load leaves a million long-lived objects (the
                    # switch's flow index): keep the collector from walking
                    # them again and again (single changes waited up to 0.5 s).
                    gc.freeze()
            except Exception as error:  # never end the writer: resync the switch instead
                if not isinstance(error, OSError):  # not the connection: a fault of ours, with its trace
                    LOG.exception("switch %016x: the writer failed", dpid)
                session.outgoing = bytearray()
                if session.bundle is not None:  # half a step: the switch drops it
                    discard = ofp.bundle_control(session.datapath, session.bundle, ofp.ofp.ONF_BCT_DISCARD_REQUEST)
                    session.bundle = None
                    session.datapath.send_msg(discard)
                self.carry_out(self.balancer.write_failed(dpid, f"{type(error).__name__}: {error}"))
            finally:
                session.busy = False
            if switches().pending(dpid):
                session.outbox.put(FLUSH)
            elif session.outbox.qsize() == 0 and self.sessions.get(dpid) is session:
                self.confirm(session)

    def read_counts(self, session: Session) -> None:
        """Ask for the slot counters of the pools whose moves are checked,
        now that the writes before them went: the switch handles a
        connection's messages in order, so the counters are read with the
        moving slots in their hold (a connection that comes after the read
        is pinned where it went, and cannot be moved away from its backend
        by a slot the read shows idle)."""
        for pool_uid in sorted(session.counts_due):
            self.count_slots(session, pool_uid)
        session.counts_due.clear()

    def confirm(self, session: Session) -> None:
        """Everything queued so far is written: a barrier stamped with the
        count of work queued; its reply confirms all of it."""
        count = session.confirm.due()
        if count is None or not self.balancer.switches.writable(session.dpid):
            return  # nothing new, or not written yet: the resync writes it, then confirms
        message = ofp.to_message(ofp.Barrier(), session.datapath)
        if session.datapath.send_msg(message):
            session.confirm.stamped(message.xid, count)

    def progress(self) -> tuple:
        return (
            self.balancer.switches.progress(),
            tuple((dpid, s.barrier) for dpid, s in self.sessions.items()),
            tuple(len(s.connecting.installed) for s in self.sessions.values() if s.connecting),  # flows read so far
        )

    def wait_confirmed(self, timeout: float) -> dict[int, str]:
        """Wait until every switch confirmed the work queued for it so far
        (a REST change calls this right after its commit); the switches that
        did not, and why. A large change (a PUT of thousands of VIPs) may
        take longer than ``timeout`` as long as the writers keep making
        progress; ``timeout`` without progress is a failure."""

        # A switch still being read (just connected, or this controller just
        # became master) holds none of the change yet: it waits for the
        # first write after the read, which sends all that differs.
        def ticket(session: Session) -> int:
            return session.confirm.ticket(reading=self.master() and session.connecting is not None)

        tickets = {dpid: (session, ticket(session)) for dpid, session in self.sessions.items()}

        def waiting() -> set[int]:
            late = set()
            for dpid, (session, count) in list(tickets.items()):
                current = self.sessions.get(dpid)
                if current is None:
                    continue  # gone: nothing to wait for
                if current is not session:  # connected again: its first write after the read holds it all
                    count = ticket(current)
                    tickets[dpid] = (current, count)
                if not current.confirm.holds(count):
                    late.add(dpid)
            return late

        idle = 0.0
        last = self.progress()
        while waiting() and idle < timeout:
            if any(self.balancer.switches.failing(dpid) for dpid in waiting()):
                break
            ofp.hub.sleep(0.002)
            now = self.progress()
            idle = 0.0 if now != last else idle + 0.002
            last = now
        late = waiting()
        if not late:
            return {}
        reasons = self.balancer.switches.unconfirmed()
        return {dpid: reasons.get(dpid, f"no confirmation within {timeout:g} s") for dpid in late}
