"""Slow start (issue 30, in part): a backend that begins to take
connections beside others ramps from 1/8 of its weight to all of it over
the pool's ``slow_start``, each step a move of slots through the handover;
its effective weight and the reason are shown."""

from __future__ import annotations

import pytest
from ryu_dsr.rest import views

from ryu_dsr.model import InvalidInput
from tests.conftest import BACKENDS, make_rig


def slots_of(rig, ip: str) -> int:
    return rig.balancer.desired.planner.table("web").count(ip)


def serving(rig, slow_start: float):
    """Pool "web" of two backends, found, serving a VIP; a third one to add."""
    rig.connect()
    first_two = list(BACKENDS)[:2]
    pool = {"name": "web", "backends": [{"ip": ip} for ip in first_two], "slow_start": slow_start}
    rig.service.create_pool(pool)
    rig.service.create_vip({"name": "www", "ip": "10.0.0.100", "protocol": "tcp", "port": 80, "pool": "web"})
    rig.resolve_all()
    rig.settle()


def test_a_new_backend_ramps_to_its_weight_in_eighths(tmp_path):
    rig = make_rig(tmp_path)
    serving(rig, slow_start=40)
    rig.service.add_backend("web", {"ip": "10.0.0.13"})
    rig.resolve_all()
    shares = []
    for _ in range(10):
        status = views.backend_json(rig.status, "web", "10.0.0.13")["status"]
        shares.append((slots_of(rig, "10.0.0.13"), status["effective_weight"], status["effective_reason"]))
        rig.clock.now += 5
        rig.resolve_all()
        rig.balancer.tick()
        rig.balancer.tick()  # the move's check answered: the next step may go
    counts = [count for count, _weight, _why in shares]
    size = len(rig.balancer.desired.planner.table("web"))  # three backends: the table grew
    # 12 of 212 to begin with (1/8 of its weight beside two of 100), growing step by step to a third
    assert abs(counts[0] - size * 12 / 212) <= 2 and counts == sorted(counts) and len(set(counts)) >= 7, counts
    assert abs(counts[-1] - size / 3) <= 2, counts
    assert shares[0][1] == 12 and "slow start: 1/8 of its weight (0 s of 40 s)" == shares[0][2]
    assert shares[-1][1:] == (100, None)
    from ryu_dsr.rest.metrics import render

    assert 'ryu_dsr_backend_effective_weight{backend="10.0.0.13",pool="web"} 100' in render(rig.status).decode()


def test_a_backend_back_from_failing_its_checks_ramps_too(tmp_path):
    rig = make_rig(tmp_path)
    serving(rig, slow_start=20)
    rig.service.add_backend("web", {"ip": "10.0.0.13"})
    rig.resolve_all()
    rig.clock.now += 25
    rig.resolve_all()
    for _ in range(3):
        rig.balancer.tick()
    full = slots_of(rig, "10.0.0.13")
    # the link of its port goes down and comes back: it leaves the hash, then ramps again
    rig.balancer.port_changed(1, BACKENDS["10.0.0.13"][1], False)
    assert slots_of(rig, "10.0.0.13") == 0
    rig.balancer.port_changed(1, BACKENDS["10.0.0.13"][1], True)
    rig.resolve_all()
    assert 0 < slots_of(rig, "10.0.0.13") < full / 4
    why = views.backend_json(rig.status, "web", "10.0.0.13")["status"]["effective_reason"]
    assert why.startswith("slow start: 1/8")


def test_without_slow_start_or_on_a_new_service_nothing_ramps(tmp_path):
    rig = make_rig(tmp_path)
    serving(rig, slow_start=0)
    rig.service.add_backend("web", {"ip": "10.0.0.13"})
    rig.resolve_all()
    assert views.backend_json(rig.status, "web", "10.0.0.13")["status"]["effective_reason"] is None
    # a new service: the backends found one after another all take their share at once
    rig2 = make_rig(tmp_path / "new")
    rig2.connect()
    rig2.service.create_pool({"name": "web", "backends": [{"ip": ip} for ip in BACKENDS], "slow_start": 60})
    rig2.resolve_all()
    rig2.service.create_vip({"name": "www", "ip": "10.0.0.100", "protocol": "tcp", "port": 80, "pool": "web"})
    assert all(views.backend_json(rig2.status, "web", ip)["status"]["effective_reason"] is None for ip in BACKENDS)


def test_slow_start_is_checked_naming_the_field(tmp_path):
    rig = make_rig(tmp_path)
    with pytest.raises(InvalidInput) as refused:
        rig.service.create_pool({"name": "web", "slow_start": -1})
    assert refused.value.field == "slow_start" and "web" not in rig.core.config.pools
    rig.service.create_pool({"name": "web"})
    rig.service.patch_pool("web", {"slow_start": 30})
    assert views.pool_json(rig.status, "web")["slow_start"] == 30


def test_dsrctl_shows_a_ramping_backend_s_effective_weight(tmp_path):
    from ryu_dsr import ctl

    rig = make_rig(tmp_path)
    serving(rig, slow_start=40)
    rig.service.add_backend("web", {"ip": "10.0.0.13"})
    rig.resolve_all()
    rows = {row[0]: row[1] for row in ctl._backend_rows(views.pool_json(rig.status, "web"))}
    assert rows == {"10.0.0.11": 100, "10.0.0.12": 100, "10.0.0.13": "12 of 100"}
