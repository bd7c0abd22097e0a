"""The Ryu shell: OpenFlow events and REST requests in, the balancer's
effects out to the switches. Nothing here decides a flow.

Each connected switch has one ``Session`` (``ryu_dsr.session``): its
datapath, the queue its writer thread reads, what it said while being
taken, its traffic poll, its role, the barriers that confirm REST changes.
An event handler looks the switch up, calls the balancer (``core``), and
carries out the ``Effects`` that come back: packet-outs now, writes queued
for the switch's writer, flow tables read for a resync. The writer pulls
the balancer's next step of commands for its switch until it is in line.
"""

from __future__ import annotations

import gc
import logging
import sys
import time

from ryu_dsr import ofp
from ryu_dsr.flows.pipeline import KIND_MASK, OWNER_MASK, Kind, Slots, Table, owner, pin_cookie
from ryu_dsr.flows.pipeline import REG_SLOT as SLOT_REGISTER
from ryu_dsr.handovers import WATCH_SECONDS
from ryu_dsr.ovsdb import OvsdbError, prepare_zone
from ryu_dsr.pacing import Lateness
from ryu_dsr.session import Connecting, Poll, Session
from ryu_dsr.writer import Writers

LOG = logging.getLogger("ryu_dsr")
SLOT_PRIORITY = Slots.SLOT  # a slot's own rule, whose counter says whether the slot carried packets
TICK_SECONDS = 0.05  # health probes are scheduled on this grain
STALL_SECONDS = 1.0  # a tick this late: the controller did not run (SIGSTOP, starved); probes out have no result
SETTLE_SECONDS = 5.0  # longest a REST change waits for the switches to confirm it
FREEZE_SECONDS = 10.0  # objects that lived this long leave the collector's full passes
COLLECT_SECONDS = 3600.0  # a full collection of everything (one pause) this often
LATENESS_NAP = 0.01  # the lateness watcher sleeps this long, again and again
READS_BETWEEN_YIELDS = 100  # requests of a poll made and sent before other green threads run


def register_options():
    """The [dsr] section of ryu-manager's config file, from ryu_dsr.settings."""
    from ryu_dsr.settings import OPTIONS

    cfg = ofp.cfg
    kinds = {str: cfg.StrOpt, int: cfg.IntOpt, float: cfg.FloatOpt}
    opts = [kinds[o.kind](o.name, default=o.default, help=o.help) for o in OPTIONS]
    cfg.CONF.register_opts(opts, group="dsr")  # registering the same options again is a no-op
    return cfg.CONF


# The REST API listens on loopback unless the operator says otherwise
# (ryu-manager's own default is every address).
ofp.cfg.CONF.set_default("wsapi_host", "127.0.0.1")


class _RestController(ofp.ControllerBase):
    """Hands every request under /v1 to the framework-free DsrApi."""

    def __init__(self, req, link, data, **config):
        super().__init__(req, link, data, **config)
        self.api = data["api"]

    @ofp.route("dsr", "/v1/{path}", requirements={"path": r"[\s\S]*"})  # any path, line breaks too
    def dispatch(self, req, **_kwargs):
        return self.api.handle(req)

    @ofp.route("dsr", "/status")
    def status(self, req, **_kwargs):
        return self.api.handle(req)

    @ofp.route("dsr", "/metrics")
    def metrics(self, req, **_kwargs):
        return self.api.handle(req)


class Shell(ofp.RyuApp):
    """The application; ``ryu_dsr.DsrApp`` is this class under the name
    ryu-manager looks for."""

    OFP_VERSIONS = [ofp.OF_VERSION]
    _CONTEXTS = {"wsgi": ofp.WSGIApplication}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from ryu_dsr.auth import load_tokens
        from ryu_dsr.core import Balancer
        from ryu_dsr.model import InvalidInput
        from ryu_dsr.rest.api import DsrApi
        from ryu_dsr.service import Service
        from ryu_dsr.settings import Settings
        from ryu_dsr.status import Status
        from ryu_dsr.store import StateFileError, open_store, plan_declared

        conf = register_options()
        self.cluster = None
        self.sessions: dict[int, Session] = {}
        self.writers = Writers(None, self.sessions, lambda: self.master, self.count_slots, self.prepare_zone)
        try:
            settings = Settings.from_files(list(conf.config_file or []))
            ofp.limit_rest_connections(settings.rest_idle_timeout, settings.rest_max_per_client)
            ofp.fix_openflow_tls()
            ofp.yield_between_messages()
            if settings.etcd_endpoints:
                store = self._cluster_store(settings, conf)
            else:
                store = open_store(settings.state_file or None)
            saved = store.load()
            if self.cluster is not None:
                self.cluster.reached()  # it answered: healthy from the first GET /v1/cluster
            declared = plan_declared(saved.config, settings.declared_file)
            self.balancer = self.writers.balancer = Balancer(settings, store, saved=saved)
            self.service = Service(self.balancer, self.writers.carry_out)
            self.lateness = Lateness()
            if declared:
                self.service.commit(declared, who="declared file")
        except (InvalidInput, StateFileError) as error:
            LOG.error("ryu_dsr cannot start: %s", error)
            sys.exit(f"ryu_dsr: {error}")
        LOG.info(
            "ryu_dsr: %d pools, %d VIPs; state in %s",
            len(self.balancer.config.pools),
            len(self.balancer.config.vips),
            f"etcd {settings.etcd_endpoints}" if self.cluster else settings.state_file or "(nowhere)",
        )
        tokens = None
        if settings.auth == "none":
            LOG.warning("auth = none: anyone who reaches the REST port can change or delete every VIP")
        else:
            try:
                tokens = load_tokens(settings.token_file)
            except InvalidInput as error:
                LOG.error("ryu_dsr cannot start: %s", error)
                sys.exit(f"ryu_dsr: {error}")
        api = DsrApi(
            self.service,
            Status(self.balancer),
            settle=lambda: self.writers.wait_confirmed(SETTLE_SECONDS),
            tokens=tokens,
            token_file=settings.token_file,
            cluster=self.cluster_status,
            pause=lambda: ofp.hub.sleep(0),  # a long scrape lets OpenFlow and other requests in
            lateness=self.lateness,
        )
        kwargs["wsgi"].register(_RestController, {"api": api})
        self.ticker = ofp.hub.spawn(self._tick_forever)
        self.late_watcher = ofp.hub.spawn(self._watch_lateness)
        if settings.stats_interval:
            self.poller = ofp.hub.spawn(self._poll_forever, settings.stats_interval)
        self.watcher_of_handovers = ofp.hub.spawn(self._watch_forever)
        if self.cluster is not None:
            self.campaigner = ofp.hub.spawn(self.cluster.campaign_forever)
            self.watcher = ofp.hub.spawn(self.cluster.watch_forever)

    # -- a cluster of controllers (etcd) --

    def _cluster_store(self, settings, conf):
        """The etcd store, and this controller's membership: a slave (it
        writes nothing to a switch) until the cluster makes it master."""
        import socket

        from ryu_dsr.cluster import Cluster, Roles
        from ryu_dsr.etcd import Etcd
        from ryu_dsr.etcd_store import EtcdStore

        etcd = Etcd(
            settings.etcd_endpoints.split(","),
            ca_cert=settings.etcd_ca_cert,
            cert=settings.etcd_cert,
            key=settings.etcd_key,
        )
        store = EtcdStore(etcd, settings.etcd_prefix, settings.etcd_max_txn_ops)
        node = settings.node_name or f"{socket.gethostname()}:{conf.wsapi_port}"
        roles = Roles(self._became_master, self._became_slave, self._remote_change, self._reload)
        rest_url = f"http://{conf.wsapi_host}:{conf.wsapi_port}"
        self.cluster = Cluster(etcd, store, node, settings.etcd_lease_ttl, roles, ofp.hub.sleep, rest_url)
        return store

    @property
    def master(self) -> bool:
        """Whether this controller programs the switches (always, alone)."""
        return self.cluster is None or self.cluster.master

    def _claim(self, datapath) -> None:
        """Tell a switch our role (a cluster only), before anything else."""
        if self.cluster is not None and (self.cluster.master or self.cluster.generation):
            datapath.send_msg(ofp.role_request(datapath, self.cluster.master, self.cluster.generation))

    def _became_master(self, generation: int) -> None:
        """Read everything from etcd, then connect every switch as a
        restarted controller does: read its flows, send what differs."""
        from ryu_dsr.store import StateFileError

        try:
            saved = self.balancer.store.load()
        except StateFileError as error:
            LOG.error("cluster: cannot take over: %s", error)
            self.cluster.step_down(f"cannot read etcd: {error}", resign=True)
            return
        self.balancer.restore(saved)
        for session in list(self.sessions.values()):
            self._claim(session.datapath)
            self._connect(session)
        LOG.warning("cluster: master of %d switches (generation %d)", len(self.sessions), generation)

    def _became_slave(self, generation: int, reason: str) -> None:
        for dpid in list(self.balancer.switches):
            self.balancer.switch_disconnected(dpid)  # a slave programs nothing: its effects are nobody's
        for session in self.sessions.values():
            session.connecting = session.reading = session.poll = session.watch = None
            session.counting.clear()
            self._claim(session.datapath)
        LOG.warning("cluster: slave (%s); switches are left to the master", reason)

    def _remote_change(self, change) -> None:
        self.writers.carry_out(self.balancer.commit(change, who="another controller (etcd)", remote=True))

    def _reload(self) -> None:
        if self.master:
            self._became_master(self.cluster.generation)
        else:
            self.balancer.restore(self.balancer.store.load())

    def cluster_status(self) -> dict:
        switches = [
            {"dpid": f"{dpid:016x}", "role": self.sessions[dpid].role or ("master" if self.master else "unknown")}
            for dpid in sorted(self.sessions)
        ]
        if self.cluster is None:
            return {"mode": "standalone", "role": "master", "switches": switches}
        return {"mode": "etcd", **self.cluster.to_json(), "switches": switches}

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPRoleReply, ofp.MAIN_DISPATCHER)
    def _role_reply(self, ev):
        session = self._session(ev.msg.datapath)
        if session is None:
            return
        if session.asked_generation:
            session.asked_generation = False
            try:
                self.cluster.switch_generation(ev.msg.generation_id)
            except OSError as error:
                LOG.warning("cluster: cannot compare switch %016x's generation id with etcd: %s", session.dpid, error)
        role = ofp.role_name(ev.msg.role)
        if session.role != role:
            LOG.info("switch %016x: we are %s (generation %d)", session.dpid, role, ev.msg.generation_id)
        session.role = role

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPBarrierReply, ofp.MAIN_DISPATCHER)
    def _barrier_reply(self, ev):
        session = self._session(ev.msg.datapath)
        if session is None:
            return
        if session.barrier is not None and ev.msg.xid >= session.barrier:
            session.barrier = None
        session.confirm.answered(ev.msg.xid)

    # -- periodic work --

    def _tick_forever(self):
        last = frozen = collected = time.monotonic()
        while True:
            ofp.hub.sleep(TICK_SECONDS)
            now = time.monotonic()
            try:
                if now - last > STALL_SECONDS:
                    self.balancer.stalled(now - last)
                    if self.cluster is not None and self.cluster.master:
                        # Stopped for a while: are we still master? The switches say first.
                        for session in list(self.sessions.values()):
                            self._claim(session.datapath)
                last = now
                self.writers.carry_out(self.balancer.tick())
                if now - frozen > FREEZE_SECONDS:
                    # The switches' flow indexes hold a few hundred thousand
                    # long-lived objects: a full collection walks them all
                    # (0.1-0.3 s with the loop stopped, seen as REST tails).
                    # Frozen, they are left out of it; they are still freed
                    # by reference counting, and once an hour everything is
                    # collected.
                    frozen = now
                    if now - collected > COLLECT_SECONDS:
                        collected = now
                        gc.unfreeze()
                        gc.collect()
                    gc.freeze()
            except Exception:  # keep ticking whatever one tick did
                LOG.exception("ryu_dsr: periodic work failed")

    def _watch_lateness(self):
        """Sleep a short while, again and again, and note how late each
        wake-up is: the longest stretch anything held the controller."""
        while True:
            started, cpu = time.monotonic(), time.process_time()
            ofp.hub.sleep(LATENESS_NAP)
            now = time.monotonic()
            self.lateness.woke(max(0.0, now - started - LATENESS_NAP), now, time.process_time() - cpu)

    def _poll_forever(self, interval: float):
        """Read the counting rules (tables DECIDE, CHOSEN and REPLIES) of
        every switch in Open vSwitch mode, every ``interval`` seconds, and
        count the pins of the backends that may have some (one aggregate
        request each: connections held in a handover)."""
        while True:
            ofp.hub.sleep(interval)
            for session in list(self.sessions.values()):
                last = session.poll
                if not self.balancer.switches.counts_traffic(session.dpid) or (
                    last and time.monotonic() - last.sent < 3 * interval
                ):
                    continue  # not taken yet, no counters, or the last poll is not back (yet)
                datapath = session.datapath
                poll = session.poll = Poll(time.monotonic())
                tables = [ofp.flow_stats_request(datapath, t) for t in (Table.DECIDE, Table.CHOSEN, Table.REPLIES)]
                self._send_reads(datapath, poll, tables, self.balancer.pin_holders())

    def _watch_forever(self):
        """While slots are in a handover, read every WATCH_SECONDS what still
        reaches their old backends (``handovers.py``): the handover rules of
        tables MOVED and TRACKED, and the old backends' pins."""
        pools, handovers = int(Kind.POOL) << 56, int(Kind.HANDOVER) << 56
        while True:
            ofp.hub.sleep(WATCH_SECONDS)
            try:
                backends = self.balancer.watched() if self.master else set()
            except Exception:  # keep watching whatever one round did
                LOG.exception("ryu_dsr: watching handovers failed")
                continue
            if not backends:
                continue
            for session in list(self.sessions.values()):
                if not self.balancer.switches.counts_traffic(session.dpid) or session.watch is not None:
                    continue
                datapath = session.datapath
                watch = session.watch = Poll(time.monotonic())
                tables = [
                    ofp.owned_flows_request(datapath, Table.TRACKED, pools, KIND_MASK),
                    ofp.owned_flows_request(datapath, Table.MOVED, handovers, KIND_MASK),
                ]
                self._send_reads(datapath, watch, tables, backends)

    @staticmethod
    def _send_reads(datapath, poll: Poll, tables: list, pin_holders) -> None:
        """Send a read of flow tables and one aggregate request per backend
        for its pins' packets; ``poll`` keeps what is awaited."""
        requests = [(request, None) for request in tables]
        for number, uid in enumerate(pin_holders, 1):  # made as it goes: a thousand holders are no long step
            requests.append((ofp.pin_count_request(datapath, Table.SLOTS, pin_cookie(uid)), uid))
            if number % READS_BETWEEN_YIELDS == 0:
                ofp.hub.sleep(0)
        for request, uid in requests:  # every reply awaited before the first request goes
            datapath.set_xid(request)
            poll.waiting.add(request.xid)
            if uid is not None:
                poll.pin_requests[request.xid] = uid
        for number, (request, _uid) in enumerate(requests, 1):
            datapath.send_msg(request)
            if number % READS_BETWEEN_YIELDS == 0:
                ofp.hub.sleep(0)

    def count_slots(self, session: Session, pool_uid: int) -> None:
        """Ask a switch for a pool's slot counters (a moved slot's check)."""
        request = ofp.owned_flows_request(session.datapath, Table.SLOTS, owner(Kind.POOL, pool_uid) << 32, OWNER_MASK)
        session.datapath.set_xid(request)
        session.counting[request.xid] = (pool_uid, {})
        session.datapath.send_msg(request)

    def prepare_zone(self, session: Session) -> None:
        """Give the switch's handover zone its timeout policy over OVSDB, in
        a green thread of its own; the balancer hears how it went."""
        settings = self.balancer.settings
        peer = getattr(session.datapath, "address", None)  # where its OpenFlow connection comes from
        address = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
        remote = settings.ovsdb_remote.replace("{address}", address)
        seconds = settings.handover_window + 60  # a label outlives the longest window

        def prepare() -> None:
            try:
                done, reason = True, prepare_zone(remote, session.dpid, settings.conntrack_zone, seconds)
            except (OvsdbError, OSError, ValueError, KeyError) as error:
                done, reason = False, f"its OVSDB ({remote}) did not take the zone's timeout policy: {error}"
            if self.sessions.get(session.dpid) is session:
                self.writers.carry_out(self.balancer.tracking_prepared(session.dpid, done, reason))

        ofp.hub.spawn(prepare)

    # -- connection: features, then desc, ports and flows, then hand over --

    def _session(self, datapath) -> Session | None:
        """The session of the switch this message came from, if it is ours."""
        session = self.sessions.get(datapath.id)
        return session if session is not None and session.datapath is datapath else None

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPSwitchFeatures, ofp.CONFIG_DISPATCHER)
    def _features(self, ev):
        datapath = ev.msg.datapath
        if not self.balancer.admits(datapath.id):
            datapath.close()
            return
        old = self.sessions.pop(datapath.id, None)
        if old is not None:
            old.close()
        session = self.sessions[datapath.id] = Session(datapath, ofp.hub.Queue())
        self.writers.start(session)
        self._claim(datapath)
        self._connect(session)

    def _connect(self, session: Session) -> None:
        """Read what a switch is and holds; the balancer takes it then (the master only)."""
        session.connecting = Connecting()
        for request in (ofp.desc_stats_request, ofp.port_desc_request, ofp.flow_stats_request):
            session.datapath.send_msg(request(session.datapath))

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPDescStatsReply, ofp.MAIN_DISPATCHER)
    def _desc(self, ev):
        session = self._session(ev.msg.datapath)
        if session is not None and session.connecting is not None:
            session.connecting.desc = ev.msg.body

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPPortDescStatsReply, ofp.MAIN_DISPATCHER)
    def _ports(self, ev):
        session = self._session(ev.msg.datapath)
        if session is not None and session.connecting is not None:
            session.connecting.ports_down.update(p.port_no for p in ev.msg.body if ofp.port_is_down(p))
            session.connecting.ports.update(p.port_no for p in ev.msg.body if ofp.is_switch_port(p.port_no))
            session.connecting.port_macs.update(
                (p.port_no, p.hw_addr) for p in ev.msg.body if ofp.is_switch_port(p.port_no)
            )
            session.connecting.port_names.update(
                (p.port_no, ofp.text(p.name).rstrip("\x00")) for p in ev.msg.body if ofp.is_switch_port(p.port_no)
            )

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPFlowStatsReply, ofp.MAIN_DISPATCHER)
    def _flows(self, ev):
        session = self._session(ev.msg.datapath)
        if session is None:
            return
        xid = ev.msg.xid
        read = session.awaiting(xid)
        if read is not None:  # a traffic poll reads counting rules; a handover watch, the rules' counters
            read.flows += len(ev.msg.body)
            if read is session.poll:  # counted reply by reply: a table of 25,000 flows is no single long step
                self.balancer.traffic_part(session.dpid, [ofp.counted(stat) for stat in ev.msg.body])
                ofp.hub.sleep(0)
            else:
                read.entries.extend(ofp.counter_entry(stat) for stat in ev.msg.body)
            if not ofp.more_replies(ev.msg):
                self._answered(session, read, xid)
            return
        if xid in session.counting:
            pool_uid, packets = session.counting[xid]
            for stat in ev.msg.body:
                _table, priority, _cookie, match, count = ofp.counter_entry(stat)
                if priority == SLOT_PRIORITY and SLOT_REGISTER in match:
                    packets[match[SLOT_REGISTER]] = count
            if not ofp.more_replies(ev.msg):
                del session.counting[xid]
                self.writers.carry_out(self.balancer.slots_counted(session.dpid, pool_uid, packets))
            return
        connecting = session.connecting
        installed = connecting.installed if connecting is not None else session.reading
        if installed is None:
            return
        parsing = time.monotonic()
        for stat in ev.msg.body:
            key, cookie = ofp.installed_key(stat)
            installed[key] = cookie
        if connecting is not None:
            connecting.parsing += time.monotonic() - parsing
        if ofp.more_replies(ev.msg):
            return
        if connecting is None:
            session.reading = None
            self.writers.carry_out(self.balancer.flows_read(session.dpid, installed))
            return
        session.connecting = None
        if not self.master:
            return  # a slave keeps the connection only; it connects the switch when it becomes master
        desc = connecting.desc
        ovs = desc is not None and ofp.is_ovs(desc)
        description = f"{ofp.text(desc.mfr_desc)} {ofp.text(desc.sw_desc)}" if desc is not None else ""
        mode = "ovs" if ovs else "plain"
        read = time.monotonic()
        self.writers.carry_out(
            self.balancer.switch_connected(
                session.dpid,
                mode,
                installed,
                description,
                connecting.ports_down,
                connecting.ports,
                connecting.port_macs,
                connecting.port_names,
            )
        )
        LOG.info(
            "switch %016x: %d flows read in %.2f s (%.2f s of it parsing), compared in %.2f s",
            *(session.dpid, len(installed), read - connecting.asked, connecting.parsing, time.monotonic() - read),
        )

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPAggregateStatsReply, ofp.MAIN_DISPATCHER)
    def _pin_count(self, ev):
        session = self._session(ev.msg.datapath)
        if session is None:
            return
        xid = ev.msg.xid
        read = session.awaiting(xid)
        if read is not None:  # a traffic poll counts a backend's pins; a handover watch, what they still carry
            body = ev.msg.body
            read.pins[read.pin_requests[xid]] = body.flow_count if read is session.poll else body.packet_count
            self._answered(session, read, xid)

    def _answered(self, session: Session, read: Poll, xid: int) -> None:
        """One reply of a poll or a watch is whole; when all are, the balancer reads them."""
        read.waiting.discard(xid)
        if read.waiting:
            return
        if read is session.poll:
            session.poll = None
            took = (time.monotonic() - read.sent, read.flows)
            effects = self.balancer.traffic_read(session.dpid, read.entries, read.pins, took)
        else:
            session.watch = None
            effects = self.balancer.handover_read(session.dpid, read.entries, read.pins)
        self.writers.carry_out(effects)

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPStateChange, [ofp.DEAD_DISPATCHER])
    def _gone(self, ev):
        session = self._session(ev.datapath) if ev.datapath.id is not None else None
        if session is not None:
            del self.sessions[session.dpid]
            session.close()
            self.writers.carry_out(self.balancer.switch_disconnected(session.dpid))

    # -- events --

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPPacketIn, ofp.MAIN_DISPATCHER)
    def _packet_in(self, ev):
        msg = ev.msg
        self.writers.carry_out(self.balancer.packet_in(msg.datapath.id, msg.match["in_port"], bytes(msg.data)))

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPPortStatus, ofp.MAIN_DISPATCHER)
    def _port_status(self, ev):
        msg = ev.msg
        if ofp.is_switch_port(msg.desc.port_no):
            up = not ofp.port_status_down(msg)
            self.writers.carry_out(self.balancer.port_changed(msg.datapath.id, msg.desc.port_no, up, msg.desc.hw_addr))

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPErrorMsg, ofp.MAIN_DISPATCHER)
    def _error(self, ev):
        msg = ev.msg
        session = self._session(msg.datapath)
        if session is None:
            return
        refusal = ofp.role_refusal(msg) if self.cluster is not None else None
        if refusal is not None:
            session.role = "slave"
            LOG.warning("cluster: switch %016x refused us: %s", session.dpid, refusal)
            if self.cluster.master:
                self.cluster.step_down(f"switch {session.dpid:016x} refused us: {refusal}", resign=True)
                session.asked_generation = True  # its generation id: from an earlier etcd cluster?
                msg.datapath.send_msg(ofp.role_query(msg.datapath))
            return
        what = session.sent.get(msg.xid, f"message xid {msg.xid}")
        if ofp.answers_neighbours(what):
            error = f"{ofp.describe(what)}: error type {msg.type} code {msg.code}"
            self.writers.carry_out(self.balancer.neighbour_answers_refused(session.dpid, error))
            return
        if isinstance(what, ofp.MeterSet):
            if ofp.meter_exists(msg):  # made before (a reconnect): change it in place
                msg.datapath.send_msg(ofp.meter_mod(what, msg.datapath, msg.datapath.ofproto.OFPMC_MODIFY))
                return
        if not isinstance(what, str):  # a command kept as it was (a bundle's): named now
            what = ofp.describe(what)
        self.writers.carry_out(
            self.balancer.openflow_error(session.dpid, f"{what}: error type {msg.type} code {msg.code}")
        )
