"""Saved state, declared config and settings: every rule has its message."""

from __future__ import annotations

import ast
import dataclasses
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from ryu_dsr.flows.pipeline import Kind, Table
from ryu_dsr.flows.rules import FlowAdd, FlowDelete
from ryu_dsr.rest import views

from ryu_dsr.check import main as check_main
from ryu_dsr.core import Balancer
from ryu_dsr.model import Config, InvalidInput
from ryu_dsr.rulesource import SERVICES_PLAN, SLOT_PLAN
from ryu_dsr.settings import Settings
from ryu_dsr.store import SqliteStore, StateFileError, plan_declared
from tests.conftest import BACKENDS, Rig, make_rig
from tests.simulator import FakeSwitch

DECLARED = {
    "pools": [{"name": "web", "backends": [{"ip": "10.0.0.11"}, {"ip": "10.0.0.12", "weight": 10}]}],
    "vips": [{"name": "www", "ip": "10.0.0.100", "protocol": "tcp", "port": 80, "pool": "web"}],
}


def test_save_and_load_round_trip(tmp_path):
    rig = make_rig(tmp_path)
    rig.setup_web()
    rig.service.patch_backend("web", "10.0.0.12", {"weight": 7})
    loaded = SqliteStore(tmp_path / "state.db").load()
    assert loaded.config.document() == rig.balancer.config.document()
    assert [p.uid for p in loaded.config.pools.values()] == [p.uid for p in rig.balancer.config.pools.values()]
    assert loaded.config.next_uid == rig.balancer.config.next_uid


def test_a_crash_in_the_middle_of_a_write_leaves_the_last_commit(tmp_path, monkeypatch):
    """A failure at any statement of a transaction leaves what was committed
    before it, readable."""
    rig = make_rig(tmp_path)
    rig.service.create_pool({"name": "web"})
    store = rig.balancer.store
    real = store.db
    calls = []

    class Dying:
        def execute(self, sql, *args):
            calls.append(sql)
            if sql.startswith("INSERT OR REPLACE INTO meta"):
                raise KeyboardInterrupt  # killed after the pool row, before the commit
            return real.execute(sql, *args)

    monkeypatch.setattr(store, "db", Dying())
    with pytest.raises(KeyboardInterrupt):
        rig.service.create_pool({"name": "other"})
    monkeypatch.undo()
    assert any(sql.startswith("INSERT OR REPLACE INTO pools") for sql in calls)
    assert list(rig.balancer.config.pools) == ["web"]  # nothing applied either
    assert list(SqliteStore(tmp_path / "state.db").load().config.pools) == ["web"]


def test_an_acknowledged_change_survives_kill_9(tmp_path):
    """A child process commits and is killed at once; the change is there."""
    path = tmp_path / "state.db"
    code = (
        "import os, signal, sys; from ryu_dsr.store import SqliteStore; from ryu_dsr.model import Config, parse_pool;"
        f"store = SqliteStore({str(path)!r}); config = Config();"
        "change = config.plan_pool(parse_pool({'name': 'web', 'backends': [{'ip': '10.0.0.11'}]}));"
        "store.write(change); print('acknowledged', flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "acknowledged" and result.returncode == -9
    assert list(SqliteStore(path).load().config.pools["web"].backends) == ["10.0.0.11"]


def test_a_state_file_of_version_0_1_is_imported(tmp_path):
    path = tmp_path / "state.db"
    legacy = {
        "version": 1,
        "next_uid": 4,
        "pools": [
            {
                "name": "web",
                "uid": 1,
                "description": "",
                "backends": [{"ip": "10.0.0.11", "weight": 100, "mac": None, "location": None, "uid": 2}],
                "slot_tables": {"4099": ["10.0.0.11"] * 4099},
            }
        ],
        "vips": [{"name": "www", "ip": "10.0.0.100", "protocol": "tcp", "port": 80, "pool": "web", "uid": 3}],
        "found": {"10.0.0.11": {"mac": "02:00:00:00:00:0b", "dpid": 1, "port": 2}},
    }
    path.write_text(json.dumps(legacy))
    saved = SqliteStore(path).load()
    assert saved.config.vips["www"].uid == 3 and saved.config.pools["web"].backends["10.0.0.11"].uid == 2
    assert saved.slots["web"]["size"] == 4099  # kept: no flow moves on upgrade
    assert saved.found["10.0.0.11"]["port"] == 2
    assert json.loads((tmp_path / "state.db.v1.json").read_text()) == legacy


def test_restart_restores_state_and_changes_no_flow(tmp_path):
    rig = make_rig(tmp_path)
    switch = rig.connect()
    rig.setup_web()
    rig.answer_arp("10.0.0.11", *BACKENDS["10.0.0.11"])
    rig.in_use()  # the first backend served traffic
    rig.resolve_all()
    rig.learn("02:00:00:00:00:01", 1)
    before = switch.installed()
    rig.balancer.store.close()
    assert rig.balancer.desired.planner.moves["web"]  # backends found one by one in use: slots in handover
    restarted = Rig(Balancer(rig.balancer.settings, SqliteStore(tmp_path / "state.db"), wall=rig.clock), rig.clock)
    restarted.balancer.switch_connected(1, "ovs", switch.installed())
    sent = [c for _dpid, commands in restarted.sent for c in commands]
    assert (
        restarted.balancer.desired.planner.moves == rig.balancer.desired.planner.moves
    )  # handovers go on where they were
    assert [c for c in sent if type(c).__name__ in ("FlowAdd", "FlowDelete", "FlowDeleteByCookie")] == []
    assert switch.installed() == before
    assert views.backend_json(restarted.status, "web", "10.0.0.11")["status"]["state"] == "up"


def restarted_on(rig, tmp_path, switch) -> tuple[Rig, list]:
    """The controller restarted on the same state file and switch; the
    owners whose rules it computed as the switch connected."""
    rig.balancer.store.close()
    again = Rig(Balancer(rig.balancer.settings, SqliteStore(tmp_path / "state.db"), wall=rig.clock), rig.clock)
    again.switches[1] = switch
    computed, rules_of = [], again.core.rules.rules_of
    again.core.rules.rules_of = lambda on, who: computed.append(who) or rules_of(on, who)
    again.balancer.switch_connected(1, "ovs", switch.installed())
    return again, computed


def slot_owners(computed: list) -> list:
    return [who for who in computed if who[0] == Kind.POOL]


def test_a_restart_computes_no_rule_a_pool_mark_vouches_for(tmp_path):
    """Issue 28: a pool's marks digest what its slot flows, and its VIPs',
    their addresses' and its guard's, were made from and the cookies the
    switch holds of them; a restart that finds them the same computes none
    of these rules (only the hosts') and sends nothing."""
    rig = make_rig(tmp_path)
    switch = rig.connect()
    rig.setup_web()
    rig.service.create_vip({"name": "dns", "ip": "10.0.0.101", "protocol": "udp", "port": 53, "pool": "web"})
    rig.settle()
    before = switch.installed()
    assert len([key for key in before if key[0] == Table.MARKS]) == 2  # the pool's slots, its services
    again, computed = restarted_on(rig, tmp_path, switch)
    assert {who[0] for who in computed} == {Kind.HOST, Kind.MARK}  # (computing the marks is the check)
    assert [c for _dpid, commands in again.sent for c in commands if isinstance(c, (FlowAdd, FlowDelete))] == []
    assert switch.installed() == before


def test_a_change_saved_but_not_written_before_a_crash_is_written_at_the_restart(tmp_path):
    """The services mark digests each VIP's plan (and the addresses' VIPs,
    where the backends are): a change saved, the controller gone before the
    switch had it, makes the restart compute the VIP's rules again, and the
    switch gets the change."""
    rig = make_rig(tmp_path)
    switch = rig.connect()
    rig.setup_web()
    rig.settle()
    as_before = {table: dict(rules) for table, rules in switch.tables.items()}
    rig.service.patch_vip("web", {"port": 8080})
    changed = switch.installed()
    switch.tables = as_before  # the crash: saved, not written
    assert switch.installed() != changed
    again, computed = restarted_on(rig, tmp_path, switch)
    assert Kind.VIP in {who[0] for who in computed} and slot_owners(computed) == []
    assert switch.installed() == changed


def plan_fields_read(function: str, module: str = "flows/compute.py") -> set[str]:
    """The fields of the switch's plan (``switch.x``) a function of
    ``flows.compute`` reads, itself or through the module's functions it calls."""
    tree = ast.parse((Path(__file__).parents[2] / module).read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    seen, fields, todo = set(), set(), [function]
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        for node in ast.walk(functions[name]):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "switch":
                fields.add(node.attr)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                todo.append(node.func.id)
    return fields


def test_the_marks_digest_every_field_of_the_switch_plan_their_rules_read():
    """A field a vouched-for rule reads and its mark does not digest would
    let a restart keep flows made with its old value."""
    assert plan_fields_read("slot_rules") == set(SLOT_PLAN)
    services = plan_fields_read("vip_rules") | plan_fields_read("vip_address_rules") | plan_fields_read("guard_rules")
    assert services == set(SERVICES_PLAN)


def test_a_slot_flow_changed_behind_the_controllers_back_is_put_right_at_a_restart(tmp_path):
    """The mark vouches for the cookies the switch holds: a slot flow gone
    or replaced while the controller was down makes the pool's rules
    computed again, and the switch is put right."""
    rig = make_rig(tmp_path)
    switch = rig.connect()
    rig.setup_web()
    rig.settle()
    before = switch.installed()
    slots = sorted(key for key in before if key[0] == Table.SLOTS)
    del switch.tables[Table.SLOTS][slots[0]]  # gone
    other = switch.tables[Table.SLOTS][slots[-1]]
    switch.tables[Table.SLOTS][slots[-1]] = dataclasses.replace(
        other, actions=switch.tables[Table.SLOTS][slots[1]].actions
    )
    assert switch.installed() != before
    again, computed = restarted_on(rig, tmp_path, switch)
    assert len(slot_owners(computed)) == len(rig.balancer.desired.planner.table("web"))
    assert switch.installed() == before


def test_a_handover_that_ended_while_the_controller_was_down_is_cleared_as_it_connects(tmp_path):
    """The mark digests the handovers of moved slots: after their window,
    the restarted controller computes the pool again and removes them."""
    rig = make_rig(tmp_path)
    switch = rig.connect()
    rig.setup_web()
    rig.settle()
    rig.in_use()
    rig.service.patch_backend("web", "10.0.0.13", {"weight": 50})
    assert switch.handover_rules()
    rig.clock.now += max(rig.balancer.settings.handover_window, rig.balancer.settings.udp_handover_window) + 1
    again, computed = restarted_on(rig, tmp_path, switch)
    assert slot_owners(computed)
    assert not switch.handover_rules()


def declared(config, path):
    change = plan_declared(config, path)
    config.apply(change)
    return change


def test_declared_file_is_applied_at_start_with_the_rest_rules(tmp_path):
    path = tmp_path / "dsr.json"
    path.write_text(json.dumps(DECLARED))
    config = Config()
    declared(config, path)
    assert list(config.vips) == ["www"] and config.pools["web"].backends["10.0.0.12"].weight == 10
    assert not declared(config, path)  # applying twice changes nothing


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"pools": [{"name": "web", "backends": [{"ip": "nope"}]}]}, "pools[0].backends[0].ip:"),
        ({"vips": [{"name": "v", "ip": "10.0.0.1", "protocol": "tcp", "pool": "missing"}]}, "vips[0].pool:"),
        ({"pools": [], "extra": 1}, "extra: unknown field"),
        (
            {
                "vips": [{"name": "v", "ip": "10.0.0.1", "protocol": "tcp", "port": 99999, "pool": "p"}],
                "pools": [{"name": "p"}],
            },
            "vips[0].port: must be an integer from 1 to 65535",
        ),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_declared_file_errors_name_the_field(tmp_path, document, words):
    path = tmp_path / "dsr.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(StateFileError) as error:
        plan_declared(Config(), path)
    assert words in str(error.value) and str(path) in str(error.value)


def test_check_command(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(DECLARED))
    assert check_main([str(good)]) == 0
    assert "ok: 1 pools, 1 VIPs" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pools": [{"name": "web", "backends": [{"ip": "10.0.0.11", "weight": -5}]}]}))
    assert check_main([str(bad)]) == 1
    assert "pools[0].backends[0].weight: must be an integer from 0 to 1000" in capsys.readouterr().out


def test_check_command_with_a_config_file(tmp_path, capsys):
    """What the service unit runs before ryu-manager: the [dsr] settings,
    the state file and declared file they name, the token file."""
    declared = tmp_path / "dsr.json"
    declared.write_text(json.dumps(DECLARED))
    conf = tmp_path / "ryu_dsr.conf"

    def settings(**values) -> str:
        base = {"state_file": str(tmp_path / "state.db"), "token_file": str(tmp_path / "token")}
        lines = ["[DEFAULT]", "wsapi_port = 8080", "[dsr]"] + [f"{k} = {v}" for k, v in {**base, **values}.items()]
        conf.write_text("\n".join(lines) + "\n")
        return str(conf)

    assert check_main(["--config-file", settings(declared_file=str(declared))]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 pools, 1 VIPs (settings of ")
    assert not (tmp_path / "state.db").exists() and not (tmp_path / "token").exists()  # a check makes nothing
    for values, words in (
        ({"table_size": "4000"}, "invalid: dsr.table_size: must be a power of two"),
        ({"tabel_size": "4096"}, "invalid: dsr.tabel_size: unknown option"),
        ({"declared_file": str(tmp_path / "none.json")}, "cannot read"),
        ({"state_file": str(declared / "state.db")}, f"invalid: dsr.state_file: cannot make {declared / 'state.db'}"),
    ):
        assert check_main(["--config-file", settings(**values)]) == 1
        assert words in capsys.readouterr().out
    (tmp_path / "token").write_text("admin:short\n")
    assert check_main(["--config-file", settings()]) == 1
    assert "dsr.token_file: " in capsys.readouterr().out
    (tmp_path / "token").write_text("admin:" + "x" * 32 + "\n")
    store = SqliteStore(tmp_path / "state.db")
    store.write(plan_declared(Config(), declared))
    store.close()
    assert check_main(["--config-file", settings()]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 1 pools, 1 VIPs") and f"state {tmp_path / 'state.db'}" in out


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("UPDATE pools SET body = json_set(body, '$.uid', 'x')", "pools[0].uid"),
        ('UPDATE slot_tables SET body = \'{"size": 7, "tables": {"7": [null]}}\'', None),
        ("UPDATE vips SET body = json_set(body, '$.protocol', 'icmp')", "vips[0].protocol"),
        ("INSERT OR REPLACE INTO found VALUES ('10.0.0.11', '{\"mac\": \"bad\"}')", "state.found.10.0.0.11.mac"),
        ("UPDATE vips SET body = json_set(body, '$.uid', 1)", "uid 1 is used twice"),
        ("UPDATE pools SET body = 'not json'", "pools row 'web' is not JSON"),
        ("UPDATE meta SET value = '9' WHERE key = 'schema'", "schema 9"),
    ],
)
def test_a_broken_state_file_is_refused_naming_the_field(tmp_path, sql, words):
    rig = make_rig(tmp_path)
    rig.connect()
    rig.setup_web()
    rig.resolve_all()
    rig.balancer.store.close()
    path = tmp_path / "state.db"
    with sqlite3.connect(str(path)) as db:
        db.execute(sql)
    if words is None:  # a broken slot table is rebuilt, not fatal: the desired state is intact
        restarted = Balancer(rig.balancer.settings, SqliteStore(path))
        assert len(restarted.desired.planner.table("web")) == 256
        return
    with pytest.raises(StateFileError) as error:
        SqliteStore(path).load()
    assert words in str(error.value)


def test_an_unreadable_state_file_is_refused(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"SQLite format 3\x00" + bytes(200))
    with pytest.raises(StateFileError, match="state file"):
        SqliteStore(path).load()
    path.write_text('{"version": 1, "pools": [')
    with pytest.raises(StateFileError, match="cannot read JSON"):
        SqliteStore(path)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"l2_mode": "hub"}, "dsr.l2_mode: must be one of: learning, normal"),
        ({"hash_mode": "random"}, "dsr.hash_mode: must be one of"),
        ({"table_size": 0}, "dsr.table_size: must be an integer from 1 to 65536"),
        ({"table_size": 70000}, "dsr.table_size"),
        ({"table_size": 3000}, "dsr.table_size: must be a power of two"),
        ({"pin_limit": -1}, "dsr.pin_limit"),
        ({"udp_handover_window": "10"}, "dsr.udp_handover_window: must be an integer"),
        ({"plain_slot_bits": 17}, "dsr.plain_slot_bits"),
        ({"pin_idle_timeout": 0}, "dsr.pin_idle_timeout"),
        ({"drain_timeout": -1}, "dsr.drain_timeout"),
        ({"probe_mac": "01:00:00:00:00:01"}, "dsr.probe_mac"),
        ({"resolve_interval": 0.0}, "dsr.resolve_interval"),
        ({"max_hosts": 1}, "dsr.max_hosts"),
        ({"colour": "red"}, "dsr.colour: unknown option"),
        ({"switches": "1, br0"}, "dsr.switches: 'br0' is not a datapath id"),
        ({"switches": "0x11112222333344445"}, "dsr.switches"),
        ({"etcd_endpoints": "etcd:2379"}, "dsr.etcd_endpoints: 'etcd:2379' is not an etcd client URL"),
        ({"etcd_ca_cert": "/nonexistent/ca.pem"}, "dsr.etcd_ca_cert: cannot read '/nonexistent/ca.pem'"),
        ({"etcd_endpoints": "https://e:2379", "etcd_cert": __file__}, "dsr.etcd_key: etcd_cert and etcd_key go"),
        ({"etcd_endpoints": "https://e:2379", "etcd_key": __file__}, "dsr.etcd_cert: etcd_cert and etcd_key go"),
        (
            {"etcd_endpoints": "https://e:2379,http://f:2379", "etcd_ca_cert": __file__},
            "dsr.etcd_ca_cert: needs every etcd_endpoints URL to be https://",
        ),
        ({"etcd_cert": __file__, "etcd_key": __file__}, "dsr.etcd_cert: needs every etcd_endpoints URL"),
    ],
)
def test_settings_rules(values, words):
    with pytest.raises(InvalidInput) as error:
        Settings.from_mapping(values)
    assert words in str(error.value)


def test_settings_defaults_are_valid():
    defaults = Settings()
    assert Settings.from_mapping(defaults.as_dict()) == defaults


def test_etcd_over_tls_with_a_client_certificate_is_a_valid_setting():
    values = {"etcd_endpoints": "https://e:2379", "etcd_ca_cert": __file__, "etcd_cert": __file__, "etcd_key": __file__}
    assert Settings.from_mapping(values).etcd_cert == __file__


def test_only_the_switches_the_operator_allows_are_taken(tmp_path, caplog):
    """dsr.switches names datapath ids the way Open vSwitch shows them; a
    switch not named is refused (counted, logged once a minute)."""
    settings = Settings.from_mapping({"switches": "0000000000000001, 0x2,00:00:00:00:00:00:00:0a"})
    assert settings.switches == "0000000000000001,0000000000000002,000000000000000a"
    rig = make_rig(tmp_path, switches="1,a")
    assert rig.balancer.admits(1) and rig.balancer.admits(10)
    for _ in range(5):
        assert not rig.balancer.admits(2)
    assert rig.balancer.counters["switches_refused"] == 5
    assert caplog.text.count("switch 0000000000000002 refused: not in dsr.switches") == 1
    rig.clock.now += 61
    assert not rig.balancer.admits(2)
    assert caplog.text.count("refused: not in dsr.switches") == 2
    assert make_rig(tmp_path / "any").balancer.admits(12345)  # empty: every switch


def test_hosts_learned_on_a_switch_are_bounded(tmp_path):
    rig = make_rig(tmp_path, max_hosts=16)
    switch = rig.connect()
    for i in range(40):
        rig.learn(f"02:00:00:00:01:{i:02x}", 1 + i % 4)
    assert len(rig.balancer.switches[1].hosts) == 16
    assert len([r for r in switch.rules(5) if r.priority == 100]) == 16
    assert isinstance(switch, FakeSwitch)


def test_the_shipped_example_config_is_valid(capsys):
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "conf" / "dsr.example.json"
    assert check_main([str(example)]) == 0
    assert "ok: 1 pools, 1 VIPs" in capsys.readouterr().out


def test_a_change_that_moves_slots_is_one_transaction_of_the_rows_it_touches(tmp_path, monkeypatch):
    rig = make_rig(tmp_path)
    rig.connect()
    rig.setup_web()
    rig.resolve_all()
    for i in range(20):  # other pools, which the change must not rewrite
        rig.service.create_pool({"name": f"other{i}", "backends": [{"ip": f"10.0.1.{i + 1}"}]})
    writes = []
    original = rig.balancer.store.write
    monkeypatch.setattr(rig.balancer.store, "write", lambda *a, **k: (writes.append((a, k)), original(*a, **k)))
    rig.service.patch_backend("web", "10.0.0.12", {"weight": 50})
    # the change, then what the check of its moved slots decided: web's rows only
    assert len(writes) == 2
    (change, slots), _ = writes[0]
    assert list(change.pools) == ["web"] and not change.vips and list(slots) == ["web"]
    assert writes[1][0] == () and list(writes[1][1]) == ["slots"] and list(writes[1][1]["slots"]) == ["web"]
    saved = SqliteStore(tmp_path / "state.db").load()
    assert saved.slots["web"]["tables"]["256"] == rig.balancer.desired.planner.table("web")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("tabel_size = 100", "dsr.tabel_size: unknown option"),
        ("table_size = abc", "dsr.table_size: must be an integer from 1 to 65536, not 'abc'"),
        ("resolve_interval = soon", "dsr.resolve_interval: must be a number"),
        ("hash_mode = fast", "dsr.hash_mode: must be one of: auto, ovs, plain"),
    ],
)
def test_a_config_file_with_a_bad_option_is_refused_naming_it(tmp_path, text, words):
    path = tmp_path / "ryu_dsr.conf"
    path.write_text(f"[DEFAULT]\nwsapi_port = 8080\n\n[dsr]\nstate_file =\n{text}\n")
    with pytest.raises(InvalidInput) as error:
        Settings.from_files([str(path)])
    assert words in str(error.value)


def test_the_shipped_config_file_is_read_with_its_values(tmp_path):
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[2] / "conf" / "ryu_dsr.conf"
    settings = Settings.from_files([str(shipped)])
    assert settings.table_size == 4096 and settings.state_file == "/var/lib/ryu_dsr/state.db"


def test_a_start_without_the_state_file_deletes_no_vip_rule_until_adopted(tmp_path):
    from ryu_dsr.flows.pipeline import Table
    from ryu_dsr.flows.rules import FlowDelete, FlowDeleteByCookie

    from ryu_dsr.store import SqliteStore as Sqlite
    from tests.simulator import tcp

    first = make_rig(tmp_path / "first")
    switch = first.connect()
    first.setup_web()
    first.resolve_all()
    first.learn("02:00:00:00:00:01", 1)
    vip_packet = tcp("10.0.0.1", "10.0.0.100", 4000, 80, "02:00:00:00:00:01", "02:d5:0a:00:00:64")
    reached = switch.send(vip_packet, in_port=1)[0].packet["eth_dst"]
    old_uids = {c >> 32 & 0xFFFFFF for c in switch.installed().values()}
    # a second controller, its state file lost: same switch
    lost = tmp_path / "lost"
    lost.mkdir()
    second = Rig(Balancer(first.balancer.settings, Sqlite(lost / "state.db")), first.clock, {1: switch})
    second.balancer.switch_connected(1, "ovs", switch.installed())
    sent = [c for _dpid, commands in second.sent for c in commands]
    # (only the counters of backends it does not know go: forwarding does not use them)
    deleted = [c for c in sent if isinstance(c, (FlowDelete, FlowDeleteByCookie))]
    assert all(isinstance(c, FlowDelete) and c.table in (Table.CHOSEN, Table.REPLIES) for c in deleted), deleted
    assert switch.send(vip_packet, in_port=1)[0].packet["eth_dst"] == reached  # the VIP is still served
    assert views.switches_json(second.status)[0]["kept_owners"] > 0
    # new objects do not take the ids of the kept rules
    second.service.create_pool({"name": "new", "backends": [{"ip": "10.0.0.61", "mac": "02:00:00:00:00:61"}]})
    assert second.balancer.config.pools["new"].uid > max(old_uids)
    # still kept after a restart of the second controller (not yet adopted)
    second.balancer.store.close()
    third = Rig(Balancer(first.balancer.settings, Sqlite(lost / "state.db")), first.clock, {1: switch})
    third.balancer.switch_connected(1, "ovs", switch.installed())
    assert switch.send(vip_packet, in_port=1)[0].packet["eth_dst"] == reached
    # the operator adopts: the unknown VIP's rules go
    assert third.service.adopt_state({})["owners_removed"] > 0
    assert not any(r.match_dict().get("ipv4_dst") == "10.0.0.100" for r in switch.rules(0))


def test_pins_of_the_previous_pipeline_are_deleted_at_connect(tmp_path):
    """0.1 learned pins into table 1, which is DECIDE now: left there, a pin
    would match a VIP's packets in DECIDE and drop them."""
    from ryu_dsr.flows.pipeline import Kind, Table, kind_of, owner
    from ryu_dsr.flows.rules import FlowDelete, Rule, match_items

    rig = make_rig(tmp_path)
    switch = FakeSwitch()
    old_pin = Rule(
        Table.DECIDE,
        100,
        match_items(eth_type=0x800, ip_proto=6, ipv4_src="10.0.0.1", ipv4_dst="10.0.0.100", tcp_src=4000, tcp_dst=80),
    )
    object.__setattr__(old_pin, "cookie", owner(Kind.PIN, 7) << 32)
    switch.tables[Table.DECIDE] = {old_pin.key: old_pin}
    rig.switches[1] = switch
    rig.connect()
    deletes = [c for _, cs in rig.sent for c in cs if isinstance(c, FlowDelete)]
    assert [(d.table, d.match) for d in deletes] == [(Table.DECIDE, old_pin.match)]
    assert not [r for r in switch.rules() if kind_of(r.cookie) == Kind.PIN]


def test_a_forged_arp_claim_for_a_backend_is_refused_while_the_backend_answers(tmp_path, caplog):
    import logging

    from tests.conftest import BACKENDS

    caplog.set_level(logging.WARNING, logger="ryu_dsr")
    rig = make_rig(tmp_path)
    rig.connect()
    rig.setup_web()
    rig.resolve_all()
    real_mac, real_port = BACKENDS["10.0.0.12"]
    where = lambda: rig.balancer.backends.locator.found["10.0.0.12"]  # noqa: E731
    # a host on port 5 claims 10.0.0.12; the real one keeps answering
    for _ in range(4):
        rig.answer_arp("10.0.0.12", "02:00:00:00:00:66", 5)
        rig.answer_arp("10.0.0.12", real_mac, real_port)
        rig.clock.now += 1.0
    rig.answer_arp("10.0.0.12", "02:00:00:00:00:66", 5)
    assert (where().mac, where().port) == (real_mac, real_port)
    assert "claimed by 02:00:00:00:00:66" in caplog.text and "refused" in caplog.text
    claim = rig.status.backend_status("web", "10.0.0.12")["claim"]
    assert claim["mac"] == "02:00:00:00:00:66" and claim["port"] == 5 and claim["state"] in ("pending", "refused")
    # a backend that really moved (the old place silent) is found at its new place
    for _ in range(4):
        rig.answer_arp("10.0.0.12", "02:00:00:00:00:77", 5)
        rig.clock.now += 1.0
    assert (where().mac, where().port) == ("02:00:00:00:00:77", 5)
    assert rig.status.backend_status("web", "10.0.0.12")["claim"] is None
    # and when that port goes down, the first place is believed again (its claim confirmed)
    rig.balancer.port_changed(1, 5, up=False)
    for _ in range(3):
        rig.answer_arp("10.0.0.12", real_mac, real_port)
        rig.clock.now += 1.0
    assert (where().mac, where().port) == (real_mac, real_port)
