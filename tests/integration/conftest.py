"""Integration tests: real Open vSwitch (userspace datapath), hosts in network
namespaces, ryu-manager as a separate process. They need root and the Debian
packages tools/setup installs; on a machine without them they fail, loudly."""

from __future__ import annotations

import os
import time

import pytest

from ryu_dsr.lab import Lab, rest, wait_no_hold

VIP = "10.0.0.100"
PROBE_IP = "10.0.0.250"  # source of the controller's TCP/HTTP health probes
BACKENDS = {"b11": 11, "b12": 12, "b13": 13}


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _root():
    assert os.geteuid() == 0, "integration tests need root (network namespaces, Open vSwitch)"


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.1, what="condition"):
    """Wait for ``predicate`` to be true; ``what`` names it (or a callable
    that says, at the timeout, what was seen)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")


def fabric_fixture(prefix: str, rest_port: int, of_port: int, **options):
    """A module-scoped fixture with its own fabric, destroyed after the module."""

    @pytest.fixture(scope="module")
    def fabric():
        built = Fabric(prefix, rest_port=rest_port, of_port=of_port, **options)
        yield built
        built.lab.destroy()

    return fabric


class Fabric:
    """One switch, clients and DSR backends serving VIP, and the controller."""

    def __init__(
        self,
        prefix: str,
        rest_port: int,
        of_port: int,
        clients=("c1",),
        settings=None,
        tls=False,
        ovsdb_port=None,
        vips6=(),
    ):
        self.lab = Lab(prefix)
        self.rest_port, self.of_port = rest_port, of_port
        self.base = f"http://127.0.0.1:{rest_port}"
        self.settings = {"state_file": str(self.lab.run_dir / "state.db"), "probe_ip": PROBE_IP}
        self.settings.update(settings or {})
        self.servers = {}
        self.lab.start_switch(controller_port=of_port)
        if ovsdb_port:  # the switch lets the controller set its handover zone over OVSDB
            self.settings["ovsdb_remote"] = self.lab.serve_ovsdb(ovsdb_port)
        self.ryu_options = self.lab.use_tls(of_port) if tls else {}
        ip6 = bool(vips6)  # every host dual-stack, each backend serving both families on one socket
        for i, name in enumerate(clients):
            self.lab.add_host(name, 1 + i, ip6=ip6)
        for name, last in BACKENDS.items():
            self.lab.add_host(name, last, ip6=ip6)
            self.lab.make_backend(name, [VIP, *vips6])
            self.servers[name] = self.lab.serve_http(name, bind="::" if ip6 else "0.0.0.0")
        self.controller = self.start_controller()

    def start_controller(self):
        proc = self.start_controller_unwaited()
        self.lab.wait_connected()
        return proc

    def start_controller_unwaited(self):
        """The controller, its REST API answering; the switch may not connect."""
        return self.lab.start_controller(
            self.settings, rest_port=self.rest_port, of_port=self.of_port, ryu_options=self.ryu_options
        )

    def api(self, method, path, body=None):
        return rest(self.base, method, path, body)

    def create_web(self, backends=(11, 12, 13), hash_fields="5tuple", health_check=None):
        """Pool "web" of the given backends (by IP only) and VIP "www" on
        VIP:80; returns once every backend is up and no slot is held (a
        backend found after the VIP exists holds its slots' new
        connections on the first backend for 2 s)."""
        pool = {"name": "web", "backends": [{"ip": f"10.0.0.{n}"} for n in backends]}
        if health_check is not None:
            pool["health_check"] = health_check
        assert self.api("POST", "/v1/pools", pool)[0] == 201
        vip = {"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": hash_fields}
        assert self.api("POST", "/v1/vips", vip)[0] == 201
        self.wait_backends_up(count=len(backends))
        wait_no_hold(self.base)

    def wait_backends_up(self, pool="web", count=3, timeout=15):
        def up():
            status, pool_json = self.api("GET", f"/v1/pools/{pool}")
            states = [b["status"]["state"] for b in pool_json["backends"]]
            return states.count("up") == count

        wait_for(up, timeout, what=f"{count} backends up")

    def mac_of(self, name):
        return self.lab.hosts[name].mac

    def log(self) -> str:
        return (self.lab.run_dir / "ryu-manager.log").read_text(errors="replace")
