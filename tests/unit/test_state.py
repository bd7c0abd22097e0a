"""Saved state, declared config and settings: every rule has its message."""

from __future__ import annotations

import json
import os

import pytest

from ryu_dsr.check import main as check_main
from ryu_dsr.core import Balancer
from ryu_dsr.model import InvalidInput, State
from ryu_dsr.settings import Settings
from ryu_dsr.store import StateFileError, Store, load_declared
from tests.conftest import make_rig
from tests.simulator import FakeSwitch

DECLARED = {
    "pools": [{"name": "web", "backends": [{"ip": "10.0.0.11"}, {"ip": "10.0.0.12", "weight": 10}]}],
    "vips": [{"name": "www", "ip": "10.0.0.100", "protocol": "tcp", "port": 80, "pool": "web"}],
}


def test_save_and_load_round_trip(tmp_path):
    store = Store(tmp_path / "state.json")
    state = load_declared(State(), None)
    state = state.with_pool(__import__("ryu_dsr.model", fromlist=["parse_pool"]).parse_pool(DECLARED["pools"][0]))
    store.save(state)
    loaded = store.load()
    assert loaded.to_saved() == state.to_saved()


def test_a_crash_while_saving_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    rig = make_rig(tmp_path)
    rig.balancer.create_pool({"name": "web"})
    before = path.read_bytes()

    def crash(*args):
        raise KeyboardInterrupt  # killed between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        rig.balancer.create_pool({"name": "other"})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left behind
    assert list(Store(path).load().pools) == ["web"]


def test_restart_restores_state_and_changes_no_flow(tmp_path):
    rig = make_rig(tmp_path)
    switch = rig.connect()
    rig.setup_web()
    rig.resolve_all()
    rig.learn("02:00:00:00:00:01", 1)
    before = switch.installed()
    sent = []
    restarted = Balancer(rig.balancer.settings, Store(tmp_path / "state.json"), lambda d, c: sent.extend(c))
    restarted.switch_connected(1, "ovs", switch.installed())
    assert [c for c in sent if type(c).__name__ in ("FlowAdd", "FlowDelete", "FlowDeleteByCookie")] == []
    assert switch.installed() == before
    assert restarted.backend_json("web", "10.0.0.11")["status"]["state"] == "up"


def test_declared_file_is_applied_at_start_with_the_rest_rules(tmp_path):
    path = tmp_path / "dsr.json"
    path.write_text(json.dumps(DECLARED))
    state = load_declared(State(), path)
    assert list(state.vips) == ["www"] and state.pools["web"].backends["10.0.0.12"].weight == 10
    again = load_declared(state, path)  # applying twice changes nothing
    assert again.to_saved() == state.to_saved()


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
        load_declared(State(), path)
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


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: d.update(version=2), "state.version"),
        (lambda d: d["pools"][0].update(uid="x"), "pools[0].uid"),
        (lambda d: d["pools"][0].update(slot_tables={"7": [None]}), "pools[0].slot_tables.7"),
        (lambda d: d["vips"][0].update(protocol="icmp"), "vips[0].protocol"),
        (lambda d: d.update(found={"10.0.0.11": {"mac": "bad"}}), "state.found.10.0.0.11.mac"),
        (lambda d: d["pools"][0]["backends"][0].update(uid=d["pools"][0]["uid"]), "uids must be unique"),
    ],
)
def test_a_broken_state_file_is_refused_naming_the_field(tmp_path, edit, words):
    rig = make_rig(tmp_path)
    rig.setup_web()
    path = tmp_path / "state.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(StateFileError) as error:
        Store(path).load()
    assert words in str(error.value)


def test_an_unreadable_state_file_is_refused(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{"version": 1, "pools": [')
    with pytest.raises(StateFileError, match="cannot read JSON"):
        Store(path).load()


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"l2_mode": "hub"}, "dsr.l2_mode: must be one of: learning, normal"),
        ({"hash_mode": "random"}, "dsr.hash_mode: must be one of"),
        ({"table_size": 0}, "dsr.table_size: must be an integer from 1 to 65536"),
        ({"table_size": 70000}, "dsr.table_size"),
        ({"plain_slot_bits": 17}, "dsr.plain_slot_bits"),
        ({"pin_idle_timeout": 0}, "dsr.pin_idle_timeout"),
        ({"drain_timeout": -1}, "dsr.drain_timeout"),
        ({"probe_mac": "01:00:00:00:00:01"}, "dsr.probe_mac"),
        ({"resolve_interval": 0.0}, "dsr.resolve_interval"),
        ({"max_hosts": 1}, "dsr.max_hosts"),
        ({"colour": "red"}, "dsr.colour: unknown option"),
    ],
)
def test_settings_rules(values, words):
    with pytest.raises(InvalidInput) as error:
        Settings.from_mapping(values)
    assert words in str(error.value)


def test_settings_defaults_are_valid():
    defaults = Settings()
    assert Settings.from_mapping(defaults.as_dict()) == defaults


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


def test_a_change_that_moves_slots_writes_the_state_file_once(tmp_path, monkeypatch):
    rig = make_rig(tmp_path)
    rig.connect()
    rig.setup_web()
    rig.resolve_all()
    saves = []
    original = rig.balancer.store.save
    monkeypatch.setattr(rig.balancer.store, "save", lambda state: (saves.append(1), original(state)))
    rig.balancer.patch_backend("web", "10.0.0.12", {"weight": 50})
    assert len(saves) == 1
    assert Store(tmp_path / "state.json").load().pools["web"].slot_tables == rig.balancer.state.pools["web"].slot_tables
