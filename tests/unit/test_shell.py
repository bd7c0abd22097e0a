"""The Ryu shell (``ryu_dsr.shell.Shell``, ryu-manager's ``ryu_dsr.DsrApp``) with a switch that speaks OpenFlow
messages but is not a socket: when a REST change counts as confirmed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ryu.ofproto import ofproto_v1_3_parser
from ryu_dsr.flows.pipeline import Kind, kind_of

from ryu_dsr import ofp, shell
from tests.connection import FakeDatapath

VIP = {"name": "www", "ip": "10.0.0.100", "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"}


Switch = FakeDatapath


def event(datapath, **fields):
    return SimpleNamespace(msg=SimpleNamespace(datapath=datapath, **fields))


@pytest.fixture
def app(tmp_path, monkeypatch):
    config = tmp_path / "ryu_dsr.conf"
    config.write_text(f"[dsr]\nauth = none\nstate_file = {tmp_path / 'state.db'}\nstats_interval = 0\novsdb_remote =\n")
    monkeypatch.setattr(shell, "register_options", lambda: SimpleNamespace(config_file=[str(config)]))
    app = shell.Shell(wsgi=SimpleNamespace(register=lambda *args: None))
    app.service.create_pool({"name": "web", "backends": [{"ip": "10.0.0.11", "mac": "02:00:00:00:00:0b"}]})
    yield app
    app.ticker.kill()
    for session in app.sessions.values():
        session.close()


def connect(app, switch: Switch, held: dict | None = None) -> None:
    """The switch's answers to what the shell asks when it connects: an
    Open vSwitch, one port, and the flows it ``held`` (rule key -> cookie)."""
    desc = SimpleNamespace(mfr_desc=b"Nicira, Inc.", hw_desc=b"Open vSwitch", sw_desc=b"3.1.0")
    app._desc(event(switch, body=desc))
    port = SimpleNamespace(port_no=1, state=0, config=0, hw_addr="aa:00:00:00:00:01", name=b"s1-eth1")
    app._ports(event(switch, body=[port]))
    flows = [
        SimpleNamespace(table_id=table, priority=priority, cookie=cookie, match=SimpleNamespace(_fields2=list(match)))
        for (table, priority, match), cookie in (held or {}).items()
    ]
    request = switch.sent(ofproto_v1_3_parser.OFPFlowStatsRequest)[-1]
    app._flows(event(switch, xid=request.xid, body=flows, flags=0))


def answer_barriers(app, switch: Switch) -> None:
    for barrier in switch.sent(ofproto_v1_3_parser.OFPBarrierRequest):
        app._barrier_reply(event(switch, xid=barrier.xid))


def test_a_change_made_while_a_switch_is_being_read_is_confirmed_only_once_the_switch_holds_it(app):
    """A switch that just connected (or a controller that just became
    master) is read before anything is written to it. A REST change made
    meanwhile must not be answered as confirmed before that switch holds
    it: it waits for the first write after the read."""
    switch = Switch(1)
    app._features(event(switch))  # the shell now reads the switch's flows
    assert app.sessions[1].connecting is not None
    app.service.create_vip(VIP)  # a REST change, while the switch is read
    waiting = ofp.hub.spawn(app.writers.wait_confirmed, 5.0)
    ofp.hub.sleep(0.1)
    assert not waiting.dead, "answered before the switch was even read"
    assert switch.flow_adds == 0

    connect(app, switch)
    ofp.hub.sleep(0.1)  # the writer sends every rule the switch lacks, then a barrier
    assert not waiting.dead and switch.flow_adds > 0
    answer_barriers(app, switch)
    assert waiting.wait() == {}
    held = {kind_of(cookie) for cookie in app.balancer.switches[1].rules.installed.values()}
    assert Kind.VIP in held  # the change was among what was written


def test_a_switch_that_already_holds_everything_still_confirms_a_change_made_while_it_was_read(app):
    """A switch that reconnects holding every rule: a change made while it
    is read that touches no rule is confirmed once the write after the read
    (the switch's set-up only: config, hash group, meter) is, not answered
    503 after the settle timeout."""
    switch = Switch(1)
    app._features(event(switch))
    connect(app, switch)
    ofp.hub.sleep(0.1)
    answer_barriers(app, switch)
    held = dict(app.balancer.switches[1].rules.installed)
    assert held and app.writers.wait_confirmed(1.0) == {}

    again = Switch(1)  # the same switch, connected again
    app._features(event(again))
    app.service.patch_pool("web", {"description": "front ends"})  # touches no rule
    waiting = ofp.hub.spawn(app.writers.wait_confirmed, 1.0)
    connect(app, again, held)
    ofp.hub.sleep(0.1)
    assert again.flow_adds == 0  # no rule differed
    answer_barriers(app, again)
    assert waiting.wait() == {}


def test_only_the_shell_loads_ryu_and_ryu_manager_finds_the_app():
    """``dsrctl``, the config checker, the core and the REST API import no
    Ryu and no eventlet; ``ryu-manager ryu_dsr`` (Ryu's own loader) finds
    the application class in ``ryu_dsr`` itself."""
    import json
    import subprocess
    import sys

    pure = (
        "import sys, json, ryu_dsr.ctl, ryu_dsr.check, ryu_dsr.core, ryu_dsr.service, ryu_dsr.rest.api; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('ryu', 'eventlet'))))"
    )
    done = subprocess.run([sys.executable, "-c", pure], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []
    loader = (
        "from ryu.base.app_manager import AppManager; import ryu_dsr.shell; "
        "cls = AppManager().load_app('ryu_dsr'); print(cls.__module__, cls.__name__, issubclass(cls, ryu_dsr.shell.Shell))"
    )
    done = subprocess.run([sys.executable, "-c", loader], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["ryu_dsr", "DsrApp", "True"]
