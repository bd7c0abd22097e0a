"""Controllers sharing one fabric through etcd: who is master.

Each controller is a candidate while it holds a key ``members/LEASE`` on a
lease it keeps alive. The candidate whose key was created first (the lowest
create_revision) is master of every switch; that revision is its OpenFlow
generation id, so a newer master always has a higher one and a switch
itself refuses an older master that comes back (OFPRRFC_STALE) and the flow
changes of any controller it has made slave (OFPBRC_IS_SLAVE). A
controller the switch refuses gives up its candidacy and stands again,
last in line.

A new etcd cluster numbers its revisions from 1 again, below what the
switches saw under the old one. So the generation id is the winner's
create_revision plus a floor kept in etcd (``cluster/generation_floor``,
0 at first); a master refused as stale asks the switch for its generation
id, and one higher than any this etcd could have given (the floor plus
etcd's current revision) raises the floor above it.

The etcd watch is read here too: changes of the desired state made through
another controller, and the candidacies, which are counted again at once
when one comes or goes (a dead master's key goes when its lease expires).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ryu_dsr.etcd import Compacted, Etcd, Event, compare, put
from ryu_dsr.etcd_store import EtcdStore
from ryu_dsr.model import Change

LOG = logging.getLogger("ryu_dsr.cluster")
RETRY_SECONDS = 0.5  # etcd unreachable: try again this often


@dataclass
class Roles:
    """What the shell does when the role changes or another controller
    changed the desired state."""

    master: Callable[[int], None]  # generation id
    slave: Callable[[int, str], None]  # generation id of the master (0: unknown), why
    change: Callable[[Change], None]
    reload: Callable[[], None]  # etcd's history was compacted past the watch: read everything again


class Cluster:
    def __init__(
        self,
        etcd: Etcd,
        store: EtcdStore,
        node: str,
        ttl: int,
        roles: Roles,
        sleep: Callable[[float], None],
        rest_url: str = "",
    ) -> None:
        self.etcd = etcd
        self.store = store
        self.node = node
        self.ttl = ttl
        self.roles = roles
        self.sleep = sleep
        self.rest_url = rest_url
        self.lease = 0
        self.key = ""
        self.created = 0  # create_revision of our candidacy key
        self.master = False
        self.generation = 0  # of the master, us or another
        self.floor = 0  # added to every create_revision (cluster/generation_floor)
        self.leader = ""  # node name of the master
        self.members: list[dict] = []
        self.etcd_ok = False
        self.etcd_error = ""
        self.history: deque[dict] = deque(maxlen=20)
        self.watched = 0  # the last revision the watch has seen (from the state read at start on)
        store.on_deposed = lambda reason: self.step_down(reason)

    # -- the candidacy --

    def stand(self) -> None:
        """Hold a lease and a candidacy key on it."""
        if self.lease:
            if self.etcd.keepalive(self.lease) > 0:
                return
            LOG.warning("cluster: our lease %x expired", self.lease)
            self.lease = 0
            if self.master:
                self.step_down("our lease expired")
        self.lease = self.etcd.grant(self.ttl)
        self.key = self.store.key("members", f"{self.lease:x}")
        body = json.dumps({"node": self.node, "rest": self.rest_url})
        _ok, revision, _ = self.etcd.txn([], [put(self.key, body, self.lease)])
        self.created = revision
        LOG.info("cluster: %s stands with lease %x (revision %d)", self.node, self.lease, revision)

    def elect(self) -> None:
        """Count the candidacies: the oldest is master."""
        _revision, self.floor, _version = self._floor()
        _revision, kvs = self.etcd.range_prefix(self.store.key("members") + "/", sort_by_create=True)
        self.members = []
        for kv in kvs:
            try:
                info = json.loads(kv.value)
            except ValueError:
                info = {}
            self.members.append(
                {"node": info.get("node", "?"), "rest": info.get("rest", ""), "since_revision": kv.create_revision}
            )
        if not kvs:
            return
        winner = kvs[0]
        before = self.generation
        self.generation = self.floor + winner.create_revision
        self.leader = self.members[0]["node"]
        if winner.key == self.key and not self.master:
            self.master = True
            self.store.leader = (self.key, self.created)
            self._note(f"master (generation {self.generation})")
            self.roles.master(self.generation)
        elif winner.key != self.key and self.master:
            self.step_down(f"{self.leader} is master")
        elif winner.key != self.key and before != self.generation:
            self.roles.slave(self.generation, f"{self.leader} is master")  # the switches hear it from us too

    def step_down(self, reason: str, resign: bool = False) -> None:
        """Stop acting as master; with ``resign`` (a switch refused us), stand
        again last in line."""
        was = self.master
        self.master = False
        self.store.leader = None
        if resign and self.lease:
            lease, self.lease = self.lease, 0
            try:
                self.etcd.revoke(lease)
            except OSError as error:
                LOG.warning("cluster: cannot give up lease %x (%s); it expires by itself", lease, error)
        if was:
            self._note(f"slave: {reason}")
            self.roles.slave(self.generation, reason)

    def switch_generation(self, generation: int) -> bool:
        """A switch that refused us says its generation id is
        ``generation``: if no controller of this etcd can have given it
        (an earlier etcd cluster did), raise the floor above it; True if
        it was raised (the caller stands again)."""
        revision, floor, version = self._floor()
        if generation <= floor + revision:
            return False  # a master of this cluster: the refusal stands
        key = self.store.key("cluster", "generation_floor")
        ok, _revision, _ = self.etcd.txn([compare(key, "MOD", version)], [put(key, str(generation))])
        if ok:
            self._note(f"slave: switches hold generation {generation} from an earlier etcd; generations start above it")
        return ok

    def _floor(self) -> tuple[int, int, int]:
        """(etcd's revision now, the generation floor, its key's mod_revision: 0 if none)."""
        revision, kvs = self.etcd.range_prefix(self.store.key("cluster", "generation_floor"))
        if not kvs or not kvs[0].value.isdigit():
            return revision, 0, kvs[0].mod_revision if kvs else 0
        return revision, int(kvs[0].value), kvs[0].mod_revision

    def _note(self, what: str) -> None:
        LOG.warning("cluster: %s is now %s", self.node, what)
        self.history.append({"at": time.time(), "role": what})

    # -- the loops (green threads of the shell) --

    def reached(self) -> None:
        """etcd answered (the state read at start, or a campaign round)."""
        if not self.etcd_ok:
            LOG.info("cluster: etcd answers at %s", self.etcd.endpoint)
        self.etcd_ok, self.etcd_error = True, ""

    def campaign_forever(self) -> None:
        while True:
            try:
                self.stand()
                self.elect()
                self.store.flush()
                self.reached()
            except OSError as error:
                if self.etcd_ok:
                    LOG.warning("cluster: etcd unreachable: %s", error)
                self.etcd_ok, self.etcd_error = False, str(error)
                self.sleep(RETRY_SECONDS)
                continue
            except Exception:  # noqa: BLE001  (keep standing whatever one round did)
                LOG.exception("cluster: campaign round failed")
            self.sleep(max(self.ttl / 3.0, 0.5))

    def watch_forever(self) -> None:
        self.watched = max(self.watched, self.store.loaded_revision)  # from the state read at start
        while True:
            try:
                self.watched = self.etcd.watch(self.store.prefix, self.watched + 1, self._seen) - 1
            except Compacted as error:
                LOG.warning("cluster: %s: reading everything again", error)
                self.roles.reload()
                self.watched = self.store.loaded_revision
            except OSError:
                self.sleep(RETRY_SECONDS)
            except Exception:  # noqa: BLE001  (a bad event must not end the watch)
                LOG.exception("cluster: watch failed; watching again")
                self.sleep(RETRY_SECONDS)

    def _seen(self, revision: int, events: list[Event]) -> None:
        change, members = self.store.changed(revision, events)
        self.watched = revision
        if change is not None:
            self.roles.change(change)
        if members:
            try:
                self.elect()
            except OSError as error:
                LOG.warning("cluster: cannot count the candidacies: %s", error)

    def to_json(self) -> dict:
        return {
            "node": self.node,
            "role": "master" if self.master else "slave",
            "master": self.leader or None,
            "generation": self.generation,
            "members": self.members,
            "etcd": {"endpoint": self.etcd.endpoint, "healthy": self.etcd_ok, "error": self.etcd_error or None},
            "history": list(self.history),
        }
