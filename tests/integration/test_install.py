"""Installing the way operators do: the project's own virtual environment
(nothing pip-installed into Debian's Python), the systemd unit, and the
controller started as the unit starts it, by its user, with its command
lines and environment, serving a real switch."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from ryu_dsr.lab import TOKENS, Lab, rest
from tests.integration.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
USER = "ryu_dsr"
REST_PORT, OF_PORT = 18101, 16701


def test_nothing_is_installed_into_debians_python():
    # the tests themselves run from a virtual environment made from Debian's python3
    assert sys.prefix != sys.base_prefix, "tests must run from the project's .venv"
    assert Path(sys.prefix) == ROOT / ".venv"
    assert os.path.realpath(sys._base_executable) == os.path.realpath(SYSTEM_PYTHON)
    assert (ROOT / ".venv" / "bin" / "ryu-manager").exists() and (ROOT / ".venv" / "bin" / "dsrctl").exists()
    # and Debian's python3 holds none of what the set-up installs
    probe = (
        "import importlib.util, site, sysconfig, glob, json; "
        "dirs = set(site.getsitepackages()) | {sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']}; "
        "print(json.dumps({'modules': [m for m in ('ryu', 'ryu_dsr', 'ryu_dsr_compat', 'etcd3gw', "
        "'prometheus_client') if importlib.util.find_spec(m)], "
        "'pth': [p for d in dirs for p in glob.glob(d + '/*ryu*')]}))"
    )
    done = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, cwd="/")  # not from the checkout
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == '{"modules": [], "pth": []}'
    assert sysconfig.get_paths()["purelib"].startswith(str(ROOT / ".venv"))


def _unit(dest: Path) -> dict[str, list[str]]:
    """The [Service] section of the installed unit, every value of each key."""
    parser = configparser.RawConfigParser(strict=False, dict_type=_MultiDict)
    parser.optionxform = str
    parser.read(dest / "etc/systemd/system/ryu_dsr.service")
    return {key: value.split("\n") for key, value in parser["Service"].items()}


class _MultiDict(dict):
    """Repeated keys (Environment=, SystemCallFilter=) kept, one per line."""

    def __setitem__(self, key, value):
        if key in self and isinstance(value, list) and isinstance(self[key], list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """tools/install-service into a scratch root: the unit and the config."""
    dest = tmp_path_factory.mktemp("root")
    done = subprocess.run([str(ROOT / "tools/install-service")], env={**os.environ, "DESTDIR": str(dest)}, text=True,
                          capture_output=True)  # fmt: skip
    return dest, done


def _reachable() -> bool:
    return subprocess.run(["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups", "test", "-x",
                           str(ROOT / ".venv/bin/ryu-manager")]).returncode == 0  # fmt: skip


def test_unit_is_installed_and_verified(installed):
    dest, done = installed
    if not _reachable():  # a checkout the service user cannot read is refused, with the reason
        assert done.returncode == 1 and "put the checkout where every user may read it" in done.stderr
        return
    assert done.returncode == 0, done.stdout + done.stderr
    assert "systemd-analyze verify: ok" in done.stdout
    unit = (dest / "etc/systemd/system/ryu_dsr.service").read_text()
    assert f"ExecStart={ROOT}/.venv/bin/ryu-manager --config-file /etc/ryu_dsr/ryu_dsr.conf ryu_dsr" in unit
    verify = subprocess.run(["systemd-analyze", "verify", str(dest / "etc/systemd/system/ryu_dsr.service")],
                            capture_output=True, text=True)  # fmt: skip
    assert verify.returncode == 0 and verify.stdout + verify.stderr == ""
    conf = dest / "etc/ryu_dsr/ryu_dsr.conf"
    assert conf.read_text() == (ROOT / "conf/ryu_dsr.conf").read_text()
    assert oct(conf.stat().st_mode & 0o777) == "0o640"
    # a second run keeps the operator's config
    conf.write_text(conf.read_text() + "# edited\n")
    again = subprocess.run([str(ROOT / "tools/install-service")], env={**os.environ, "DESTDIR": str(dest)},
                           capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 0 and "exists, kept" in again.stdout and conf.read_text().endswith("# edited\n")


@pytest.fixture
def etc_and_state():
    """A directory every user may enter, as /etc and /var/lib are (pytest's
    own temporary directories are root's alone)."""
    place = Path("/run/ryu_dsr-service-test")
    shutil.rmtree(place, ignore_errors=True)
    place.mkdir(mode=0o755)
    yield place
    shutil.rmtree(place, ignore_errors=True)


def test_controller_starts_as_the_unit_says(installed, etc_and_state):
    """ExecStartPre, then ExecStart, with the unit's user, group, environment
    and working directory; the state directory made as systemd makes it. A
    bad setting stops ExecStartPre with the option named."""
    dest, _done = installed
    shutil.copytree(ROOT / "conf", dest / "conf-src", dirs_exist_ok=True)
    if not (dest / "etc/systemd/system/ryu_dsr.service").exists():  # refused (unreachable checkout): the unit as-is
        (dest / "etc/systemd/system").mkdir(parents=True, exist_ok=True)
        (dest / "etc/systemd/system/ryu_dsr.service").write_text(
            (ROOT / "conf/ryu_dsr.service").read_text().replace("/opt/ryu_dsr", str(ROOT))
        )
    service = _unit(dest)
    state = etc_and_state / "state"  # StateDirectory=, owned by the user, StateDirectoryMode=
    state.mkdir(mode=int(service["StateDirectoryMode"][0], 8))
    shutil.chown(state, USER, USER)
    conf = etc_and_state / "ryu_dsr.conf"  # as tools/install-service writes it: root:ryu_dsr 0640
    text = (ROOT / "conf/ryu_dsr.conf").read_text().replace("/var/lib/ryu_dsr", str(state))
    text = text.replace("wsapi_port = 8080", f"wsapi_port = {REST_PORT}")
    conf.write_text(text.replace("ofp_tcp_listen_port = 6653", f"ofp_tcp_listen_port = {OF_PORT}"))
    conf.chmod(0o640)
    shutil.chown(conf, "root", USER)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    for line in service.get("Environment", []):
        for pair in shlex.split(line):
            key, _, value = pair.partition("=")
            env[key] = value
    # Where the checkout is not readable by the user (CI's own path), the
    # process is given read access to it only, and still runs as the user.
    reach = [] if _reachable() else ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    as_user = ["setpriv", f"--reuid={service['User'][0]}", f"--regid={service['Group'][0]}", "--clear-groups", *reach]

    def command(key: str, config: Path) -> list[str]:
        line = service[key][0].replace("/etc/ryu_dsr/ryu_dsr.conf", str(config))
        return [*as_user, *shlex.split(line)]

    workdir = service["WorkingDirectory"][0].replace("/var/lib/ryu_dsr", str(state))
    bad = etc_and_state / "bad.conf"
    bad.write_text(conf.read_text().replace("table_size = 4096", "table_size = 4000"))
    shutil.chown(bad, "root", USER)
    refused = subprocess.run(command("ExecStartPre", bad), cwd=workdir, env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "dsr.table_size: must be a power of two" in refused.stdout, refused
    check = subprocess.run(command("ExecStartPre", conf), cwd=workdir, env=env, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.startswith("ok: 0 pools, 0 VIPs"), check

    lab = Lab("dsrsvc")
    lab.start_switch(controller_port=OF_PORT)
    lab.add_host("c1", 1)
    lab.add_host("b11", 11)
    log = open(etc_and_state / "journal.log", "wb")
    controller = subprocess.Popen(command("ExecStart", conf), cwd=workdir, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{REST_PORT}"
        wait_for(lambda: _answers(base), timeout=30, what="the REST API of the unit's controller")
        lab.wait_connected()
        # its state directory holds what it made, owned by its user
        token = (state / "api-token").read_text().strip().rpartition(":")[2]
        assert (state / "api-token").stat().st_uid == int(subprocess.check_output(["id", "-u", USER]))
        TOKENS[base] = token
        pool = {"name": "web", "backends": [{"ip": "10.0.0.11"}]}
        assert rest(base, "POST", "/v1/pools", pool)[0] == 201
        vip = {"name": "www", "ip": "10.0.0.100", "protocol": "tcp", "port": 80, "pool": "web"}
        assert rest(base, "POST", "/v1/vips", vip)[0] == 201
        # the switch answers ARP for the VIP: the client learns the VIP's MAC
        lab.run("c1", "ping", "-c", "1", "-W", "1", "10.0.0.100", check=False)
        neighbours = lab.run("c1", "ip", "neigh", "show", "10.0.0.100")
        assert "02:d5:0a:00:00:64" in neighbours, neighbours
        assert (state / "state.db").stat().st_uid == int(subprocess.check_output(["id", "-u", USER]))
    finally:
        Lab.stop(controller)
        lab.destroy()
        TOKENS.pop(f"http://127.0.0.1:{REST_PORT}", None)
    assert controller.returncode is not None


def _answers(base: str) -> bool:
    try:
        return rest(base, "GET", "/v1/vips", timeout=2)[0] == 200
    except OSError:
        time.sleep(0.2)
        return False
