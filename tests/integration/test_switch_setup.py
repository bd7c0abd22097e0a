"""The switch set-up tool (tools/dsr_switch.py) against a real Open vSwitch:
a new bridge prepared, an existing one checked, an unsafe one reported and
mended, and a prepared bridge taken by the controller."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ryu_dsr.lab import Lab
from tests.integration.conftest import wait_for

TOOL = str(Path(__file__).resolve().parents[2] / "tools" / "dsr_switch.py")
OF_PORT, REST_PORT = 16702, 18102


@pytest.fixture(scope="module")
def lab():
    built = Lab("dsrsw")
    built.start_switch(controller_port=OF_PORT)
    yield built
    built.destroy()


def tool(lab: Lab, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, env=lab.env)


def test_new_bridge_prepared_then_checked_and_taken(lab):
    target = f"tcp:127.0.0.1:{OF_PORT}"
    before = tool(lab, "check", "dsrsw-none")
    assert "OVSDB managers: none (the controller cannot set the handover zone" in before.stdout
    made = tool(
        lab, "apply", "dsrsw-new", "--controller", target, "--dpid", "a1", "--datapath-type", "netdev",
        "--manager", "ptcp:16650:127.0.0.1", "--conntrack-limit", "5000",
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    assert "OVSDB managers: (none) -> ptcp:16650:127.0.0.1" in made.stdout
    assert "connection tracker: zone 1493 holds at most 5000 entries" in made.stdout
    assert "zone=1493,limit=5000" in lab.ovs("ovs-appctl", "dpctl/ct-get-limits", "zone=1493")
    for line in (
        "bridge dsrsw-new: made",
        "bridge dsrsw-new: protocols: (default) -> OpenFlow13",
        "bridge dsrsw-new: fail_mode: standalone (default) -> secure",
        "bridge dsrsw-new: datapath id: ",
        f"bridge dsrsw-new: controllers: (none) -> {target}",
        "ok: bridge dsrsw-new is ready",
    ):
        assert line in made.stdout, made.stdout
    assert lab.vsctl("get", "bridge", "dsrsw-new", "fail_mode").strip() == "secure"
    assert lab.vsctl("get", "bridge", "dsrsw-new", "datapath_id").strip() == '"00000000000000a1"'
    again = tool(lab, "apply", "dsrsw-new", "--controller", target, "--dpid", "a1")
    assert again.returncode == 0 and again.stdout.startswith("nothing to change"), again.stdout
    # a controller that takes it: the check shows it connected, as master
    controller = lab.start_controller(
        {"state_file": str(lab.run_dir / "state.db")}, rest_port=REST_PORT, of_port=OF_PORT
    )
    try:
        check = wait_for(
            lambda: (
                (done := tool(lab, "check", "dsrsw-new", "--controller", target))
                and f"controller {target}: connected" in done.stdout
                and done
            ),
            what="the prepared bridge connected",
        )
        assert check.returncode == 0 and "problem" not in check.stdout, check.stdout
    finally:
        Lab.stop(controller)


def test_existing_bridge_checked_unsafe_reported_and_mended(lab):
    lab.vsctl("add-br", "dsrsw-old", "--", "set", "bridge", "dsrsw-old", "datapath_type=netdev",
              "protocols=OpenFlow10")  # fmt: skip
    check = tool(lab, "check", "dsrsw-old", "--controller", "tcp:10.9.9.9:6653", "--dpid", "0xb2")
    assert check.returncode == 1
    problems = [line for line in check.stdout.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 4, check.stdout
    assert "protocols OpenFlow10 lack OpenFlow13" in problems[0]
    assert "fail_mode is standalone (the default): unsafe" in problems[1] and "NORMAL flow" in problems[1]
    assert "no controller" in problems[2]
    assert "datapath id is" in problems[3] and "not 00000000000000b2" in problems[3]
    assert lab.vsctl("get", "bridge", "dsrsw-old", "protocols").strip() == "[OpenFlow10]"  # check changed nothing

    mended = tool(lab, "apply", "dsrsw-old", "--controller", "tcp:10.9.9.9:6653", "--dpid", "b2")
    assert mended.returncode == 0, mended.stdout
    assert "protocols: OpenFlow10 -> OpenFlow10,OpenFlow13" in mended.stdout
    assert "fail_mode: standalone (default) -> secure" in mended.stdout
    assert "controller tcp:10.9.9.9:6653: not connected" in mended.stdout
    # a bridge made unsafe again is reported again
    lab.vsctl("set", "bridge", "dsrsw-old", "fail_mode=standalone")
    unsafe = tool(lab, "check", "dsrsw-old")
    assert unsafe.returncode == 1 and "problem: fail_mode is standalone: unsafe" in unsafe.stdout, unsafe.stdout


def test_missing_bridge_and_bad_arguments(lab):
    missing = tool(lab, "check", "dsrsw-none")
    assert missing.returncode == 1 and "problem: bridge dsrsw-none does not exist" in missing.stdout
    bad = tool(lab, "apply", "dsrsw-none", "--controller", "127.0.0.1:6653")
    assert bad.returncode == 2 and "must be tcp:HOST:PORT" in bad.stderr
    no_target = tool(lab, "apply", "dsrsw-none")
    assert no_target.returncode == 2 and "a new bridge needs --controller" in no_target.stderr
    assert "dsrsw-none" not in lab.vsctl("list-br")


def test_a_gre_port_for_gre_backends_is_checked_made_and_mended(lab):
    target = f"tcp:127.0.0.1:{OF_PORT}"
    tool(lab, "apply", "dsrsw-gre", "--controller", target, "--datapath-type", "netdev")
    missing = tool(lab, "check", "dsrsw-gre", "--gre-port", "dsrsw-gre0")
    assert missing.returncode == 1
    assert "problem: no GRE port dsrsw-gre0 on dsrsw-gre: gre backends get no connection" in missing.stdout
    made = tool(lab, "apply", "dsrsw-gre", "--gre-port", "dsrsw-gre0")
    assert made.returncode == 0, made.stdout + made.stderr
    assert "GRE port dsrsw-gre0: made (remote_ip=flow, packet_type=legacy_l3)" in made.stdout
    options = lab.vsctl("get", "interface", "dsrsw-gre0", "type", "options")
    assert "gre" in options and "remote_ip=flow" in options and "packet_type=legacy_l3" in options, options
    assert tool(lab, "check", "dsrsw-gre", "--gre-port", "dsrsw-gre0").returncode == 0
    lab.vsctl("set", "interface", "dsrsw-gre0", "options:packet_type=legacy_l2")  # as an L2 tunnel: wrong
    wrong = tool(lab, "check", "dsrsw-gre", "--gre-port", "dsrsw-gre0")
    assert wrong.returncode == 1 and "needs options packet_type=legacy_l3" in wrong.stdout, wrong.stdout
    mended = tool(lab, "apply", "dsrsw-gre", "--gre-port", "dsrsw-gre0")
    assert "GRE port dsrsw-gre0: type gre, remote_ip=flow, packet_type=legacy_l3" in mended.stdout
    assert tool(lab, "check", "dsrsw-gre", "--gre-port", "dsrsw-gre0").returncode == 0
