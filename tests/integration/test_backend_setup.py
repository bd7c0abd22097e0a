"""The backend set-up tool (tools/dsr_backend.py) in a namespace: apply,
check, apply twice, undo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOL = str(Path(__file__).resolve().parents[2] / "tools" / "dsr_backend.py")
NS = "dsrbk-host"


@pytest.fixture
def namespace(tmp_path):
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    yield tmp_path
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def tool(state_dir, *args):
    env_cmd = ["env", f"DSR_BACKEND_STATE={state_dir}", sys.executable, TOOL, *args]
    return subprocess.run(["ip", "netns", "exec", NS, *env_cmd], capture_output=True, text=True)


def sysctl(name):
    path = "/proc/sys/" + name.replace(".", "/")
    return subprocess.run(["ip", "netns", "exec", NS, "cat", path], capture_output=True, text=True).stdout.strip()


def test_apply_check_apply_again_undo(namespace):
    vips = ["--vip", "10.0.0.100", "--vip", "10.0.0.101"]
    before = tool(namespace, "check", *vips)
    assert before.returncode == 1
    assert (
        "missing: 10.0.0.100/32 on lo" in before.stdout and "missing: net.ipv4.conf.all.arp_ignore = 1" in before.stdout
    )

    applied = tool(namespace, "apply", *vips)
    assert applied.returncode == 0, applied.stderr
    assert "changed: 10.0.0.101/32 added to lo" in applied.stdout
    assert (sysctl("net.ipv4.conf.all.arp_ignore"), sysctl("net.ipv4.conf.all.arp_announce")) == ("1", "2")
    check = tool(namespace, "check", *vips)
    assert check.returncode == 0 and "ready" in check.stdout

    again = tool(namespace, "apply", *vips)
    assert again.returncode == 0 and "changed" not in again.stdout
    addresses = subprocess.run(
        ["ip", "netns", "exec", NS, "ip", "-4", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True
    ).stdout
    assert addresses.count("10.0.0.100/32") == 1

    undone = tool(namespace, "undo", *vips)
    assert undone.returncode == 0
    assert (sysctl("net.ipv4.conf.all.arp_ignore"), sysctl("net.ipv4.conf.all.arp_announce")) == ("0", "0")
    assert tool(namespace, "check", *vips).returncode == 1
    assert (
        "10.0.0.100"
        not in subprocess.run(
            ["ip", "netns", "exec", NS, "ip", "addr", "show", "dev", "lo"], capture_output=True, text=True
        ).stdout
    )


def test_rp_filter_loose_and_bad_input(namespace):
    applied = tool(namespace, "apply", "--vip", "10.0.0.100", "--rp-filter", "loose")
    assert applied.returncode == 0 and sysctl("net.ipv4.conf.all.rp_filter") == "2"
    bad = tool(namespace, "apply", "--vip", "10.0.0.300")
    assert bad.returncode == 2 and "--vip: '10.0.0.300' is not an IPv4 or IPv6 address" in bad.stderr
    link_local = tool(namespace, "apply", "--vip", "fe80::1")
    assert link_local.returncode == 2 and "--vip: fe80::1 is not a unicast host address" in link_local.stderr


def test_an_ipv6_vip_goes_on_lo_as_a_host_route_and_needs_no_sysctl(namespace):
    vips = ["--vip", "2001:db8::100", "--vip", "10.0.0.100"]
    assert "missing: 2001:db8::100/128 on lo" in tool(namespace, "check", *vips).stdout
    applied = tool(namespace, "apply", *vips)
    assert applied.returncode == 0 and "changed: 2001:db8::100/128 added to lo" in applied.stdout
    assert tool(namespace, "check", *vips).returncode == 0
    addresses = subprocess.run(
        ["ip", "netns", "exec", NS, "ip", "-6", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True
    ).stdout
    assert "2001:db8::100/128" in addresses
    assert tool(namespace, "undo", *vips).returncode == 0
    assert (
        "2001:db8::100"
        not in subprocess.run(
            ["ip", "netns", "exec", NS, "ip", "addr", "show", "dev", "lo"], capture_output=True, text=True
        ).stdout
    )


def test_l3dsr_rules_are_applied_checked_moved_and_undone(namespace):
    pairs = ["--dscp", "10.0.0.100=1", "--dscp", "2001:db8::100=2"]
    before = tool(namespace, "check", *pairs)
    assert before.returncode == 1 and "missing: nft rule DSCP 1 -> 10.0.0.100" in before.stdout
    applied = tool(namespace, "apply", *pairs)
    assert applied.returncode == 0, applied.stderr
    assert "changed: nft rule DSCP 2 -> 2001:db8::100 added" in applied.stdout
    ruleset = subprocess.run(["ip", "netns", "exec", NS, "nft", "list", "ruleset"], capture_output=True, text=True)
    assert "ip daddr set 10.0.0.100" in ruleset.stdout and "ip6 daddr set 2001:db8::100" in ruleset.stdout
    assert tool(namespace, "check", *pairs).returncode == 0
    again = tool(namespace, "apply", *pairs)
    assert "changed" not in again.stdout
    moved = tool(namespace, "apply", "--dscp", "10.0.0.100=3")  # the VIP's value moved: the old rule goes
    assert "changed: nft rule DSCP 3 -> 10.0.0.100 added" in moved.stdout
    ruleset = subprocess.run(["ip", "netns", "exec", NS, "nft", "list", "ruleset"], capture_output=True, text=True)
    assert ruleset.stdout.count("ip daddr set 10.0.0.100") == 1
    undone = tool(namespace, "undo", "--dscp", "10.0.0.100=3", "--dscp", "2001:db8::100=2")
    assert undone.returncode == 0 and "removed" in undone.stdout
    ruleset = subprocess.run(["ip", "netns", "exec", NS, "nft", "list", "ruleset"], capture_output=True, text=True)
    assert "daddr set" not in ruleset.stdout
    bad = tool(namespace, "apply", "--dscp", "10.0.0.100=64")
    assert bad.returncode == 2 and "is not VIP=N with N from 1 to 63" in bad.stderr


def test_gre_needs_gre0_and_the_advertised_mss_goes_on_the_default_route_and_back(namespace):
    def run(*args):
        return subprocess.run(["ip", "netns", "exec", NS, *args], capture_output=True, text=True, check=True).stdout

    run("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    run("ip", "addr", "add", "192.168.9.2/24", "dev", "v0")
    run("ip", "link", "set", "v0", "up")
    run("ip", "route", "add", "default", "via", "192.168.9.1")
    before = tool(namespace, "check", "--gre", "--vip", "10.0.0.100", "--advmss", "1436")
    assert before.returncode == 1
    assert "missing: gre0 up (now absent: ip_gre not loaded)" in before.stdout, before.stdout
    assert "missing: advmss 1436 on the default route" in before.stdout
    applied = tool(namespace, "apply", "--gre", "--vip", "10.0.0.100", "--advmss", "1436")
    loadable = subprocess.run(["modprobe", "-n", "ip_gre"], capture_output=True).returncode == 0
    if loadable:  # a kernel with ip_gre: gre0 up, reverse path filtering off for it
        assert applied.returncode == 0 and "ok: gre0 up" in applied.stdout, applied
        assert sysctl("net.ipv4.conf.gre0.rp_filter") == "0"
    else:  # this machine's: refused, saying why, and nothing changed
        assert applied.returncode == 1 and "the kernel's ip_gre module cannot be loaded" in applied.stderr, applied
        assert "10.0.0.100" not in run("ip", "addr", "show", "dev", "lo")
        assert "advmss" not in run("ip", "route", "show", "default")
    # the advertised MSS alone (where the kernel cannot take GRE, as for a dscp backend): set, checked, undone
    applied = tool(namespace, "apply", "--vip", "10.0.0.100", "--advmss", "1436")
    assert applied.returncode == 0 and "changed: advmss 1436 on default via 192.168.9.1" in applied.stdout, applied
    assert "advmss 1436" in run("ip", "route", "show", "default")
    assert tool(namespace, "check", "--vip", "10.0.0.100", "--advmss", "1436").returncode == 0
    assert "changed" not in tool(namespace, "apply", "--vip", "10.0.0.100", "--advmss", "1436").stdout
    undone = tool(namespace, "undo", "--vip", "10.0.0.100")
    assert undone.returncode == 0 and "advmss" not in run("ip", "route", "show", "default"), undone
    bad = tool(namespace, "apply", "--vip", "10.0.0.100", "--advmss", "20")
    assert bad.returncode == 2 and "is not an MSS from 536 to 9000" in bad.stderr
