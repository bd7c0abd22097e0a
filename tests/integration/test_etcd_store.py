"""The etcd store against a real etcd (Debian's etcd-server on loopback):
compare-and-swap between two writers, changes too large for one
transaction, runtime data written by the master only, the watch, and
compaction."""

from __future__ import annotations

import threading

import pytest

from ryu_dsr.etcd import Compacted, Etcd, put
from ryu_dsr.etcd_store import EtcdStore
from ryu_dsr.lab import Lab
from ryu_dsr.model import Change, Conflict, parse_pool, parse_vip

PORT = 12479


@pytest.fixture(scope="module")
def etcd():
    lab = Lab("es")
    lab.clear_leftovers()
    lab.run_dir.mkdir(parents=True, exist_ok=True)
    lab.start_etcd(PORT)
    yield Etcd([f"http://127.0.0.1:{PORT}"])
    lab.destroy()


_prefixes = iter(range(1000))


@pytest.fixture
def prefix():
    return f"/test{next(_prefixes)}"


def pool_change(config, name: str, *ips: str) -> Change:
    return config.plan_pool(parse_pool({"name": name, "backends": [{"ip": ip} for ip in ips]}))


def test_a_writer_that_missed_a_change_is_refused_and_writes_nothing(etcd, prefix):
    a, b = EtcdStore(etcd, prefix), EtcdStore(etcd, prefix)
    seen_a, seen_b = a.load(), b.load()
    a.write(pool_change(seen_a.config, "web", "10.0.0.11"))
    stale = pool_change(seen_b.config, "api", "10.0.0.21")  # b has not seen "web"
    with pytest.raises(Conflict, match="changed meanwhile"):
        b.write(stale)
    again = EtcdStore(etcd, prefix).load()
    assert set(again.config.pools) == {"web"}
    fresh = b.load()  # b catches up: its change goes in, with uids after a's
    b.write(pool_change(fresh.config, "api", "10.0.0.21"))
    final = EtcdStore(etcd, prefix).load().config
    assert set(final.pools) == {"web", "api"} and final.pools["api"].uid > final.pools["web"].uid


def test_a_change_larger_than_one_transaction_is_written_in_steps(etcd, prefix):
    store = EtcdStore(etcd, prefix, max_txn_ops=8)
    config = store.load().config
    change = pool_change(config, "web", "10.0.0.11")
    config.apply(change)
    document = {
        "pools": [{"name": "web", "backends": [{"ip": "10.0.0.11"}]}],
        "vips": [
            {"name": f"v{i}", "ip": f"10.1.0.{i}", "protocol": "tcp", "port": 80, "pool": "web"} for i in range(1, 31)
        ],
    }
    store.write(change)
    bulk = config.plan_document(document)
    store.write(bulk)
    loaded = EtcdStore(etcd, prefix).load().config
    assert len(loaded.vips) == 30 and loaded.next_uid == bulk.next_uid
    assert store.transactions == 1 + 5  # the pool, then 30 VIPs at 6 per step (with next_uid and writer: 8 ops)


def test_runtime_data_is_written_by_the_master_only_and_a_lost_lease_deposes_it(etcd, prefix):
    store = EtcdStore(etcd, prefix)
    store.load()
    store.write(slots={"web": {"size": 64}})
    assert etcd.range_prefix(f"{prefix}/runtime/")[1] == []  # not master: nothing written
    lease = etcd.grant(10)
    key = f"{prefix}/members/{lease:x}"
    _ok, created, _ = etcd.txn([], [put(key, "{}", lease)])
    store.leader = (key, created)
    deposed = []
    store.on_deposed = deposed.append
    store.write(slots={"web": {"size": 64}}, health={7: "timeout"})
    assert {kv.key for kv in etcd.range_prefix(f"{prefix}/runtime/")[1]} == {
        f"{prefix}/runtime/slots/web",
        f"{prefix}/runtime/health/7",
    }
    assert EtcdStore(etcd, prefix).load().health == {7: "timeout"}
    etcd.revoke(lease)
    store.write(slots={"web": {"size": 128}})
    assert deposed and store.leader is None
    kept = [kv.value for kv in etcd.range_prefix(f"{prefix}/runtime/slots/")[1]]
    assert kept == ['{"size": 64}']  # the deposed master wrote nothing


def test_the_watch_reads_another_writers_change_and_skips_its_own(etcd, prefix):
    a, b = EtcdStore(etcd, prefix), EtcdStore(etcd, prefix)
    config_a = a.load().config
    b.load()
    changes = []

    def follow(store):
        def handle(revision, events):
            change, _members = store.changed(revision, events)
            if change is not None:
                changes.append((store, change))

        etcd.watch(prefix + "/", store.loaded_revision + 1, handle, idle=1.5)

    watchers = [threading.Thread(target=follow, args=(s,)) for s in (a, b)]
    for watcher in watchers:
        watcher.start()
    first = pool_change(config_a, "web", "10.0.0.11")
    a.write(first)
    config_a.apply(first)
    vip = config_a.plan_vip(
        parse_vip({"name": "www", "ip": "10.0.0.100", "protocol": "tcp", "port": 80, "pool": "web"})
    )
    a.write(vip)
    for watcher in watchers:
        watcher.join()
    assert [store for store, _ in changes] == [b, b]  # a wrote both: it skips them
    assert set(changes[0][1].pools) == {"web"} and changes[0][1].pools["web"].uid == first.pools["web"].uid
    assert set(changes[1][1].vips) == {"www"} and changes[1][1].next_uid == vip.next_uid


def test_a_watch_from_a_compacted_revision_says_so(etcd, prefix):
    store = EtcdStore(etcd, prefix)
    config = store.load().config
    for name in ("a", "b"):
        change = pool_change(config, name, "10.0.0.11")
        store.write(change)
        config.apply(change)
    revision, _ = etcd.range_prefix(prefix)
    etcd.call("kv/compaction", {"revision": revision, "physical": True})
    with pytest.raises(Compacted):
        etcd.watch(prefix + "/", 1, lambda revision, events: None, idle=1.0)


def test_a_pool_deleted_through_any_controller_takes_its_slot_tables_with_it(etcd, prefix):
    master, other = EtcdStore(etcd, prefix), EtcdStore(etcd, prefix)
    config = master.load().config
    lease = etcd.grant(10)
    key = f"{prefix}/members/{lease:x}"
    _ok, created, _ = etcd.txn([], [put(key, "{}", lease)])
    master.leader = (key, created)
    change = pool_change(config, "web", "10.0.0.11")
    master.write(change, slots={"web": {"size": 64}})
    assert [kv.key for kv in etcd.range_prefix(f"{prefix}/runtime/slots/")[1]] == [f"{prefix}/runtime/slots/web"]
    seen = other.load().config  # not master: it may change the desired state only
    other.write(seen.plan_pool_delete("web"))
    assert etcd.range_prefix(f"{prefix}/runtime/slots/")[1] == []
    assert "web" not in EtcdStore(etcd, prefix).load().config.pools
