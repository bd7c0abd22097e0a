"""ryu_dsr: Direct Server Return load balancing in OpenFlow switches.

``ryu-manager ryu_dsr`` loads the ``DsrApp`` below (ryu-manager only takes
RyuApp classes defined in the module it is named, hence here). It is a thin
shell: OpenFlow events and REST requests go to ``ryu_dsr.core.Balancer``,
whose commands go back to the switches through ``ryu_dsr.ofp``.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections import OrderedDict

from ryu_dsr import ofp

LOG = logging.getLogger("ryu_dsr")
TICK_SECONDS = 0.05  # health probes are scheduled on this grain
STALL_SECONDS = 1.0  # a tick this late: the controller did not run (SIGSTOP, starved); probes out have no result
SETTLE_SECONDS = 5.0  # longest a REST change waits for the switches to confirm it
_FLUSH = "flush"  # outbox marker: compute and send what the switch needs now
BULK_FLOW_MODS = 10000  # a write this large is followed by gc.freeze()
FREEZE_SECONDS = 10.0  # objects that lived this long leave the collector's full passes
COLLECT_SECONDS = 3600.0  # a full collection of everything (one pause) this often
SENT_REMEMBERED = 100000  # flow mods remembered by xid, to name what a switch refused


def _register_options():
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


class DsrApp(ofp.RyuApp):
    OFP_VERSIONS = [ofp.OF_VERSION]
    _CONTEXTS = {"wsgi": ofp.WSGIApplication}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from ryu_dsr.auth import load_tokens
        from ryu_dsr.core import Balancer
        from ryu_dsr.model import InvalidInput
        from ryu_dsr.rest.api import DsrApi
        from ryu_dsr.settings import Settings
        from ryu_dsr.store import StateFileError, open_store, plan_declared

        conf = _register_options()
        self.cluster = None
        self.switch_roles = {}  # dpid -> role the switch last confirmed for us
        self.asked = set()  # dpids asked for their generation id after refusing us
        try:
            settings = Settings.from_files(list(conf.config_file or []))
            ofp.limit_rest_connections(settings.rest_idle_timeout, settings.rest_max_per_client)
            ofp.fix_openflow_tls()
            if settings.etcd_endpoints:
                store = self._cluster_store(settings, conf)
            else:
                store = open_store(settings.state_file or None)
            saved = store.load()
            if self.cluster is not None:
                self.cluster.reached()  # it answered: healthy from the first GET /v1/cluster
            declared = plan_declared(saved.config, settings.declared_file)
            self.datapaths = {}
            self.outboxes = {}  # dpid -> queue of command lists, written by one green thread each
            self.connecting = {}  # dpid -> {"desc", "ports_down", "installed"}
            self.reading = {}  # dpid -> flows read so far for a resync
            self.sent = {}  # dpid -> OrderedDict xid -> what it was, to name what a switch refused
            self.balancer = Balancer(
                settings, store, self._send, saved=saved, wake=self._wake, read_flows=self._read_flows
            )
            if declared:
                self.balancer.commit(declared, who="declared file")
        except (InvalidInput, StateFileError) as error:
            LOG.error("ryu_dsr cannot start: %s", error)
            sys.exit(f"ryu_dsr: {error}")
        LOG.info(
            "ryu_dsr: %d pools, %d VIPs; state in %s",
            len(self.balancer.config.pools),
            len(self.balancer.config.vips),
            f"etcd {settings.etcd_endpoints}" if self.cluster else settings.state_file or "(nowhere)",
        )
        self.busy = set()  # dpids whose sender is writing
        self.barriers = {}  # dpid -> xid of the last barrier not yet answered
        # Confirmation of each REST change: work queued for a switch counts
        # up ``requested``; when the writer goes idle it sends a barrier
        # stamped with that count, and its reply raises ``confirmed``. A
        # change waits for its own count only, not for the switches to be
        # idle (which concurrent writers would keep from ever happening).
        self.requested = {}  # dpid -> count of work queued
        self.confirmed = {}  # dpid -> count the switch confirmed by a barrier
        self.stamps = {}  # dpid -> {barrier xid: count}
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
            self.balancer,
            settle=lambda: self.wait_confirmed(SETTLE_SECONDS),
            tokens=tokens,
            token_file=settings.token_file,
            cluster=self.cluster_status,
        )
        kwargs["wsgi"].register(_RestController, {"api": api})
        self.ticker = ofp.hub.spawn(self._tick_forever)
        # dpid -> (xids of a traffic poll not yet answered, entries read so far, when sent,
        #         pin count xid -> backend uid, backend uid -> pins counted)
        self.polls = {}
        if settings.stats_interval:
            self.poller = ofp.hub.spawn(self._poll_forever, settings.stats_interval)
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
        for datapath in list(self.datapaths.values()):
            self._claim(datapath)
            self._connect(datapath)
        LOG.warning("cluster: master of %d switches (generation %d)", len(self.datapaths), generation)

    def _became_slave(self, generation: int, reason: str) -> None:
        for dpid in list(self.balancer.switches):
            self.balancer.switch_disconnected(dpid)
        self.connecting.clear()
        self.reading.clear()
        self.polls.clear()
        for datapath in list(self.datapaths.values()):
            self._claim(datapath)
        LOG.warning("cluster: slave (%s); switches are left to the master", reason)

    def _remote_change(self, change) -> None:
        self.balancer.commit(change, who="another controller (etcd)", remote=True)

    def _reload(self) -> None:
        if self.master:
            self._became_master(self.cluster.generation)
        else:
            self.balancer.restore(self.balancer.store.load())

    def cluster_status(self) -> dict:
        switches = [
            {"dpid": f"{dpid:016x}", "role": self.switch_roles.get(dpid, "master" if self.master else "unknown")}
            for dpid in sorted(self.datapaths)
        ]
        if self.cluster is None:
            return {"mode": "standalone", "role": "master", "switches": switches}
        return {"mode": "etcd", **self.cluster.to_json(), "switches": switches}

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPRoleReply, ofp.MAIN_DISPATCHER)
    def _role_reply(self, ev):
        dpid = ev.msg.datapath.id
        if dpid in self.asked:
            self.asked.discard(dpid)
            try:
                self.cluster.switch_generation(ev.msg.generation_id)
            except OSError as error:
                LOG.warning("cluster: cannot compare switch %016x's generation id with etcd: %s", dpid, error)
        role = ofp.role_name(ev.msg.role)
        if self.switch_roles.get(dpid) != role:
            LOG.info("switch %016x: we are %s (generation %d)", dpid, role, ev.msg.generation_id)
        self.switch_roles[dpid] = role

    # -- output --

    def _send(self, dpid, commands):
        """Queue commands for a switch without yielding: the balancer computes
        a change and queues it in one step, so changes computed one after the
        other reach the switch in that order even while an earlier batch is
        still being written (Ryu's send queue blocks when full)."""
        datapath = self.datapaths.get(dpid)
        if not self.master:
            return
        if datapath is not None and all(isinstance(c, ofp.PacketOut) for c in commands):
            # Probes and ARP answers do not wait behind a batch of flow
            # changes: their timing is what health checks measure.
            for command in commands:
                datapath.send_msg(ofp.to_message(command, datapath))
            return
        outbox = self.outboxes.get(dpid)
        if outbox is not None:
            self.requested[dpid] = self.requested.get(dpid, 0) + 1
            outbox.put(list(commands))

    def _wake(self, dpid):
        outbox = self.outboxes.get(dpid)
        if outbox is not None:
            self.requested[dpid] = self.requested.get(dpid, 0) + 1
            if dpid not in self.busy:
                outbox.put(_FLUSH)

    def _transmit(self, datapath, command):
        if isinstance(command, ofp.FlowAdd):  # most of every batch: encoded without Ryu's message objects
            datapath.xid = xid = (datapath.xid + 1) & datapath.ofproto.MAX_XID
            ok = datapath.send(ofp.encode_flow_add(command.rule, xid))
        else:
            message = ofp.to_message(command, datapath)
            ok = datapath.send_msg(message)
            xid = message.xid
        if not ok:
            raise ConnectionError("the switch connection is closed")
        sent = self.sent.setdefault(datapath.id, OrderedDict())
        if isinstance(command, ofp.Barrier):
            self.barriers[datapath.id] = xid
            ofp.hub.sleep(0)  # a step is written: let REST and events run
        else:
            sent[xid] = command if isinstance(command, ofp.MeterSet) else ofp.describe(command)
            while len(sent) > SENT_REMEMBERED:
                sent.popitem(last=False)

    def _drain(self, datapath, outbox):
        """The one green thread that writes to a switch."""
        dpid = datapath.id
        while True:
            commands = outbox.get()
            if commands is None:
                return
            if not self.master:
                continue  # stepped down: what was queued is the new master's to decide
            self.busy.add(dpid)
            try:
                if commands is _FLUSH:
                    self._write(datapath)
                else:
                    for command in commands:
                        self._transmit(datapath, command)
            except Exception as error:  # never end the writer: resync the switch instead
                LOG.exception("switch %016x: write failed", dpid)
                self.balancer.write_failed(dpid, f"{type(error).__name__}: {error}")
            finally:
                self.busy.discard(dpid)
            if self.balancer.pending(dpid):
                outbox.put(_FLUSH)
            elif outbox.qsize() == 0 and self.datapaths.get(dpid) is datapath:
                self._confirm(datapath)

    def _confirm(self, datapath):
        """Everything queued so far is written: a barrier stamped with the
        count of work queued; its reply confirms all of it."""
        dpid = datapath.id
        count = self.requested.get(dpid, 0)
        if count <= self.confirmed.get(dpid, 0) or count in self.stamps.get(dpid, {}).values():
            return
        switch = self.balancer.switches.get(dpid)
        if switch is None or switch.resyncing or switch.failure:
            return  # not written yet: the resync writes it, then confirms
        message = ofp.to_message(ofp.Barrier(), datapath)
        if datapath.send_msg(message):
            stamps = self.stamps.setdefault(dpid, {})
            stamps[message.xid] = count
            while len(stamps) > SENT_REMEMBERED:
                stamps.pop(next(iter(stamps)))

    def _write(self, datapath):
        switch = self.balancer.switches.get(datapath.id)
        before = switch.flow_mods if switch else 0
        self.balancer.write(datapath.id, lambda command: self._transmit(datapath, command))
        if switch is not None and switch.flow_mods - before > BULK_FLOW_MODS:
            # A bulk load leaves a million long-lived objects (the switch's
            # flow index): keep the collector from walking them again and
            # again, which made single changes wait up to half a second.
            gc.freeze()

    def _read_flows(self, dpid):
        datapath = self.datapaths.get(dpid)
        if datapath is not None:
            self.reading[dpid] = {}
            datapath.send_msg(ofp.flow_stats_request(datapath))

    def _progress(self):
        return (
            tuple((sw.flow_mods, sw.rules.rules_computed) for sw in self.balancer.switches.values()),
            tuple(self.barriers.items()),
            tuple(len(pending["installed"]) for pending in self.connecting.values()),  # flows read so far
        )

    def wait_confirmed(self, timeout: float) -> dict:
        """Wait until every switch confirmed the work queued for it so far
        (a REST change calls this right after its commit); the switches that
        did not, and why. A large change (a PUT of thousands of VIPs) may
        take longer than ``timeout`` as long as the writers keep making
        progress; ``timeout`` without progress is a failure."""
        # A switch still being read (just connected, or this controller just
        # became master) holds none of the change yet: it waits for the
        # first write after the read, which sends all that differs.
        reading = set(self.connecting) if self.master else set()
        ticket = {dpid: self.requested.get(dpid, 0) + (dpid in reading) for dpid in self.datapaths}

        def waiting():
            return {
                dpid
                for dpid, count in ticket.items()
                if self.confirmed.get(dpid, 0) < count and self.datapaths.get(dpid) is not None
            }

        idle = 0.0
        last = self._progress()
        while waiting() and idle < timeout:
            if any(self.balancer.switches[d].failure for d in waiting() if d in self.balancer.switches):
                break
            ofp.hub.sleep(0.002)
            now = self._progress()
            idle = 0.0 if now != last else idle + 0.002
            last = now
        late = waiting()
        if not late:
            return {}
        reasons = self.balancer.unconfirmed()
        return {dpid: reasons.get(dpid, f"no confirmation within {timeout:g} s") for dpid in late}

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPBarrierReply, ofp.MAIN_DISPATCHER)
    def _barrier_reply(self, ev):
        dpid = ev.msg.datapath.id
        if self.barriers.get(dpid) is not None and ev.msg.xid >= self.barriers[dpid]:
            del self.barriers[dpid]
        count = self.stamps.get(dpid, {}).pop(ev.msg.xid, None)
        if count is not None and count > self.confirmed.get(dpid, 0):
            self.confirmed[dpid] = count

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
                        for datapath in list(self.datapaths.values()):
                            self._claim(datapath)
                last = now
                self.balancer.tick()
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

    def _poll_forever(self, interval: float):
        """Read the counting rules (tables DECIDE, CHOSEN and REPLIES) of
        every switch in Open vSwitch mode, every ``interval`` seconds, and
        count the pins of the backends that may have some (one aggregate
        request each: connections held in a handover)."""
        from ryu_dsr.flows.pipeline import Table, pin_cookie

        while True:
            ofp.hub.sleep(interval)
            for dpid, datapath in list(self.datapaths.items()):
                switch = self.balancer.switches.get(dpid)
                last = self.polls.get(dpid)
                if switch is None or switch.mode != "ovs" or (last and time.monotonic() - last[2] < 3 * interval):
                    continue  # not taken yet, no counters, or the last poll is not back (yet)
                waiting, _entries, _sent, pins, _counts = self.polls[dpid] = (set(), [], time.monotonic(), {}, {})
                tables = (Table.DECIDE, Table.CHOSEN, Table.REPLIES)
                requests = [(ofp.flow_stats_request(datapath, table), None) for table in tables]
                for uid in self.balancer.pin_holders():
                    requests.append((ofp.pin_count_request(datapath, Table.SLOTS, pin_cookie(uid)), uid))
                for request, uid in requests:
                    datapath.set_xid(request)
                    waiting.add(request.xid)
                    if uid is not None:
                        pins[request.xid] = uid
                    datapath.send_msg(request)

    # -- connection: features, then desc, ports and flows, then hand over --

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPSwitchFeatures, ofp.CONFIG_DISPATCHER)
    def _features(self, ev):
        datapath = ev.msg.datapath
        if not self.balancer.admits(datapath.id):
            datapath.close()
            return
        self.datapaths[datapath.id] = datapath
        old = self.outboxes.pop(datapath.id, None)
        if old is not None:
            old.put(None)
        outbox = self.outboxes[datapath.id] = ofp.hub.Queue()
        ofp.hub.spawn(self._drain, datapath, outbox)
        self._claim(datapath)
        self._connect(datapath)

    def _connect(self, datapath):
        """Read what a switch is and holds; the balancer takes it then (the master only)."""
        self.connecting[datapath.id] = {"desc": None, "ports_down": set(), "ports": set(), "installed": {}}
        for request in (ofp.desc_stats_request, ofp.port_desc_request, ofp.flow_stats_request):
            datapath.send_msg(request(datapath))

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPDescStatsReply, ofp.MAIN_DISPATCHER)
    def _desc(self, ev):
        pending = self.connecting.get(ev.msg.datapath.id)
        if pending is not None:
            pending["desc"] = ev.msg.body

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPPortDescStatsReply, ofp.MAIN_DISPATCHER)
    def _ports(self, ev):
        pending = self.connecting.get(ev.msg.datapath.id)
        if pending is not None:
            pending["ports_down"].update(p.port_no for p in ev.msg.body if ofp.port_is_down(p))
            pending["ports"].update(p.port_no for p in ev.msg.body if ofp.is_switch_port(p.port_no))

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPFlowStatsReply, ofp.MAIN_DISPATCHER)
    def _flows(self, ev):
        dpid = ev.msg.datapath.id
        poll = self.polls.get(dpid)
        if poll and ev.msg.xid in poll[0]:
            poll[1].extend(ofp.counted(stat) for stat in ev.msg.body)
            if not ofp.more_replies(ev.msg):
                self._polled(dpid, ev.msg.xid)
            return
        pending = self.connecting.get(dpid)
        installed = pending["installed"] if pending is not None else self.reading.get(dpid)
        if installed is None:
            return
        for stat in ev.msg.body:
            key, cookie = ofp.installed_key(stat)
            installed[key] = cookie
        if ofp.more_replies(ev.msg):
            return
        if pending is None:
            del self.reading[dpid]
            self.balancer.flows_read(dpid, installed)
            return
        del self.connecting[dpid]
        if not self.master:
            return  # a slave keeps the connection only; it connects the switch when it becomes master
        desc = pending["desc"]
        ovs = desc is not None and ofp.is_ovs(desc)
        description = f"{ofp.text(desc.mfr_desc)} {ofp.text(desc.sw_desc)}" if desc is not None else ""
        self.balancer.switch_connected(
            dpid, "ovs" if ovs else "plain", pending["installed"], description, pending["ports_down"], pending["ports"]
        )

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPAggregateStatsReply, ofp.MAIN_DISPATCHER)
    def _pin_count(self, ev):
        dpid = ev.msg.datapath.id
        poll = self.polls.get(dpid)
        if poll and ev.msg.xid in poll[0]:
            poll[4][poll[3][ev.msg.xid]] = ev.msg.body.flow_count
            self._polled(dpid, ev.msg.xid)

    def _polled(self, dpid: int, xid: int) -> None:
        """One reply of a poll is whole; when all are, the core reads them."""
        waiting, entries, sent, _pins, counts = self.polls[dpid]
        waiting.discard(xid)
        if not waiting:
            del self.polls[dpid]
            self.balancer.traffic_read(dpid, entries, counts)
            self.balancer.traffic.took[dpid] = (time.monotonic() - sent, len(entries))

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPStateChange, [ofp.DEAD_DISPATCHER])
    def _gone(self, ev):
        datapath = ev.datapath
        if datapath.id is not None and self.datapaths.get(datapath.id) is datapath:
            del self.datapaths[datapath.id]
            self.connecting.pop(datapath.id, None)
            self.reading.pop(datapath.id, None)
            self.sent.pop(datapath.id, None)
            outbox = self.outboxes.pop(datapath.id, None)
            if outbox is not None:
                outbox.put(None)
            self.barriers.pop(datapath.id, None)
            self.stamps.pop(datapath.id, None)
            self.polls.pop(datapath.id, None)
            self.switch_roles.pop(datapath.id, None)
            self.busy.discard(datapath.id)
            self.balancer.switch_disconnected(datapath.id)

    # -- events --

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPPacketIn, ofp.MAIN_DISPATCHER)
    def _packet_in(self, ev):
        msg = ev.msg
        self.balancer.packet_in(msg.datapath.id, msg.match["in_port"], bytes(msg.data))

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPPortStatus, ofp.MAIN_DISPATCHER)
    def _port_status(self, ev):
        msg = ev.msg
        if ofp.is_switch_port(msg.desc.port_no):
            self.balancer.port_changed(msg.datapath.id, msg.desc.port_no, not ofp.port_status_down(msg))

    @ofp.set_ev_cls(ofp.ofp_event.EventOFPErrorMsg, ofp.MAIN_DISPATCHER)
    def _error(self, ev):
        msg = ev.msg
        dpid = msg.datapath.id
        refusal = ofp.role_refusal(msg) if self.cluster is not None else None
        if refusal is not None:
            self.switch_roles[dpid] = "slave"
            LOG.warning("cluster: switch %016x refused us: %s", dpid, refusal)
            if self.cluster.master:
                self.cluster.step_down(f"switch {dpid:016x} refused us: {refusal}", resign=True)
                self.asked.add(dpid)  # its generation id: from an earlier etcd cluster?
                msg.datapath.send_msg(ofp.role_query(msg.datapath))
            return
        what = self.sent.get(dpid, {}).get(msg.xid, f"message xid {msg.xid}")
        if isinstance(what, ofp.MeterSet):
            if ofp.meter_exists(msg):  # made before (a reconnect): change it in place
                msg.datapath.send_msg(ofp.meter_mod(what, msg.datapath, msg.datapath.ofproto.OFPMC_MODIFY))
                return
            what = ofp.describe(what)
        self.balancer.openflow_error(dpid, f"{what}: error type {msg.type} code {msg.code}")
