"""A change costs what it touches: counted rules, same switch state by bulk
and by single calls, a failing writer resynced and reported."""

from __future__ import annotations

import json
from collections import Counter

from ryu_dsr.flows.pipeline import Kind, Slots, Table
from ryu_dsr.flows.rules import Barrier, FlowAdd, FlowDelete
from ryu_dsr.rest.api import DsrApi
from webob import Request

from ryu_dsr.health import Health
from ryu_dsr.slots import size_for
from tests.conftest import BACKENDS, CLIENT_MAC, make_rig
from tests.simulator import tcp

VIP_MAC = "02:d5:0a:00:00:64"


def many_vips(rig, n_pools: int, per_pool: int = 4) -> None:
    """``n_pools`` pools of ``per_pool`` backends with configured MACs, one
    VIP each, made by one PUT of the config document."""
    rig.service.apply_document(document(n_pools, per_pool))


def document(n_pools: int, per_pool: int = 4, weight: int = 100) -> dict:
    pools, vips = [], []
    for p in range(n_pools):
        backends = [
            {
                "ip": f"10.{1 + p // 250}.{p % 250}.{b + 1}",
                "mac": f"02:01:00:{p // 250:02x}:{p % 250:02x}:{b + 1:02x}",
                "location": {"dpid": 1, "port": 2 + b},
                "weight": weight if b == 0 else 100,
            }
            for b in range(per_pool)
        ]
        pools.append({"name": f"pool{p}", "backends": backends, "health_check": {"kind": "none"}})
        vips.append(
            {
                "name": f"vip{p}",
                "ip": f"172.16.{p // 250}.{p % 250 + 1}",
                "protocol": "tcp",
                "port": 80,
                "pool": f"pool{p}",
            }
        )
    return {"pools": pools, "vips": vips}


def computed(rig) -> int:
    return rig.balancer.switches[1].rules.rules_computed


def test_a_change_computes_only_its_owners_rules(tmp_path):
    rig = make_rig(tmp_path)
    rig.connect()
    many_vips(rig, 200)
    flows = len(rig.switches[1].installed())
    assert flows > 200 * 256  # 256 slot rules per pool of 4, plus VIP rules
    base = computed(rig)
    table = list(rig.balancer.desired.planner.table("pool7"))
    rig.service.patch_backend("pool7", "10.1.7.2", {"weight": 50})
    moved = sum(1 for a, b in zip(table, rig.balancer.desired.planner.table("pool7")) if a != b)
    # the slots that moved (a rule each, counted with its owner), the
    # changed backend's other slots, nothing of the 199 other pools
    assert 0 < moved < 64 and computed(rig) - base <= 2 * 64 + 2 * 64
    base = computed(rig)
    rig.service.create_vip({"name": "extra", "ip": "172.31.0.1", "protocol": "udp", "port": 53, "pool": "pool9"})
    # the VIP (2 rules), its address (3) and pool9's 256 slots, now tcp and udp
    assert computed(rig) - base <= (2 + 1) + (3 + 1) + 256 * (2 + 1)
    base = computed(rig)
    rig.learn(CLIENT_MAC, 1)  # a learned host touches its own L2 rules
    assert computed(rig) - base == 2 + 1


def test_a_put_of_the_config_and_single_calls_reach_the_same_switch_state(tmp_path):
    bulk = make_rig(tmp_path / "bulk")
    bulk.connect()
    bulk.service.apply_document(document(30))
    single = make_rig(tmp_path / "single")
    single.connect()
    for pool in document(30)["pools"]:
        single.service.create_pool({"name": pool["name"], "health_check": pool["health_check"]})
        for backend in pool["backends"]:
            single.service.add_backend(pool["name"], backend)
    for vip in document(30)["vips"]:
        single.service.create_vip(vip)
    assert bulk.balancer.config.document() == single.balancer.config.document()
    bulk_flows, single_flows = bulk.switches[1].installed(), single.switches[1].installed()
    # The same flows, and every rule but the slot rules identical; a slot
    # table depends on its history (built whole, or grown a backend at a
    # time), so slots may map differently, each backend's share the same.
    # Slots that moved while a pool was filled, before any VIP used it,
    # hand nothing over: no connection can be on them.
    assert bulk_flows.keys() == single_flows.keys()
    assert not [k for k in single_flows if k[0] == Table.SLOTS and k[1] >= Slots.HANDOVER]
    # (a pool's mark digests its slot table: it differs as the table does)
    assert {k: c for k, c in bulk_flows.items() if k[0] not in (Table.SLOTS, Table.MARKS)} == {
        k: c for k, c in single_flows.items() if k[0] not in (Table.SLOTS, Table.MARKS)
    }
    for name in bulk.balancer.config.pools:
        shares = [Counter(rig.balancer.desired.planner.table(name)) for rig in (bulk, single)]
        assert shares[0] == shares[1]


def test_a_dry_run_says_what_changes_and_changes_nothing(tmp_path):
    rig = make_rig(tmp_path)
    rig.connect()
    rig.service.apply_document(document(3))
    flows = rig.switches[1].installed()
    new = document(4)
    new["pools"][0]["backends"][1]["weight"] = 10
    del new["vips"][2]
    answer = rig.service.apply_document(new, dry_run=True)
    assert answer["changes"]["pools"] == {"create": ["pool3"], "change": ["pool0"], "delete": []}
    assert answer["changes"]["vips"] == {"create": ["vip3"], "change": [], "delete": ["vip2"]}
    assert rig.switches[1].installed() == flows and sorted(rig.balancer.config.vips) == ["vip0", "vip1", "vip2"]
    rig.service.apply_document(new)
    assert sorted(rig.balancer.config.vips) == ["vip0", "vip1", "vip3"]
    assert rig.balancer.config.pools["pool0"].backends["10.1.0.2"].weight == 10
    again = rig.service.apply_document(rig.balancer.config.document(), dry_run=True)  # export, import: no change
    assert again["changes"]["pools"] == again["changes"]["vips"] == {"create": [], "change": [], "delete": []}


def test_an_invalid_document_changes_nothing_and_names_the_field(tmp_path):
    rig = make_rig(tmp_path)
    rig.connect()
    app = DsrApi(rig.service, rig.status)
    rig.service.apply_document(document(2))
    before = (rig.switches[1].installed(), rig.balancer.config.document())
    bad = document(3)
    bad["vips"][2]["ip"] = bad["vips"][0]["ip"]  # overlaps vip0
    request = Request.blank("/v1/config", method="PUT", body=json.dumps(bad).encode(), content_type="application/json")
    response = request.get_response(app)
    assert response.status_int == 409 and "vips[2]" in response.json["message"]
    bad = document(3)
    bad["pools"][1]["backends"][0]["weight"] = -1
    response = Request.blank(
        "/v1/config", method="PUT", body=json.dumps(bad).encode(), content_type="application/json"
    ).get_response(app)
    assert response.status_int == 400 and response.json["field"] == "pools[1].backends[0].weight"
    assert (rig.switches[1].installed(), rig.balancer.config.document()) == before
    exported = Request.blank("/v1/config").get_response(app).json
    assert [p["name"] for p in exported["pools"]] == ["pool0", "pool1"] and len(exported["vips"]) == 2


def test_lists_page_and_filter(tmp_path):
    rig = make_rig(tmp_path)
    app = DsrApi(rig.service, rig.status)
    rig.service.apply_document(document(25))
    seen, cursor = [], None
    while True:
        path = "/v1/vips?limit=10" + (f"&cursor={cursor}" if cursor else "")
        response = Request.blank(path).get_response(app)
        seen += [v["name"] for v in response.json]
        cursor = response.headers.get("X-Next-Cursor")
        if not cursor:
            break
        assert 'rel="next"' in response.headers["Link"]
    assert seen == sorted(f"vip{i}" for i in range(25))
    only = Request.blank("/v1/vips?pool=pool3").get_response(app).json
    assert [v["name"] for v in only] == ["vip3"]
    only = Request.blank("/v1/pools?backend=10.1.4.2").get_response(app).json
    assert [p["name"] for p in only] == ["pool4"]
    bad = Request.blank("/v1/vips?limit=0").get_response(app)
    assert bad.status_int == 400 and bad.json["field"] == "limit"


def test_tables_are_sized_to_the_pool_and_growth_moves_no_flow(tmp_path):
    assert [size_for(n, 4096) for n in (1, 2, 3, 4, 16, 64, 100)] == [64, 128, 256, 256, 1024, 4096, 4096]
    rig = make_rig(tmp_path)
    switch = rig.connect()
    rig.setup_web()
    rig.resolve_all()
    rig.learn(CLIENT_MAC, 1)
    assert len(rig.balancer.desired.planner.table("web")) == 256
    clients = [tcp(f"10.9.{i // 250}.{i % 250}", "10.0.0.100", 1000 + i, 80, CLIENT_MAC, VIP_MAC) for i in range(600)]
    before = [switch.send(p, in_port=1)[0].packet["eth_dst"] for p in clients]
    # a fifth backend with weight 0 (drained: takes nothing) grows the table
    for i in range(2):
        rig.service.add_backend("web", {"ip": f"10.0.0.{21 + i}", "weight": 0, "mac": f"02:00:00:00:01:{i:02x}"})
    assert len(rig.balancer.desired.planner.table("web")) == 512
    after = [switch.send(p, in_port=1)[0].packet["eth_dst"] for p in clients]
    assert after == before  # doubling the table moved no connection
    assert len([r for r in switch.rules(Table.SLOTS) if r.priority == Slots.SLOT]) == 512


def test_a_failing_switch_write_is_logged_counted_resynced_and_reported(tmp_path, caplog):
    rig = make_rig(tmp_path)
    switch = rig.connect()
    app = DsrApi(rig.service, rig.status, settle=rig.balancer.switches.unconfirmed)
    rig.write_fault = ConnectionResetError("switch went away mid-batch")
    body = json.dumps({"name": "web", "backends": [{"ip": "10.0.0.11", "mac": "02:00:00:00:00:0b"}]}).encode()
    Request.blank("/v1/pools", method="POST", body=body, content_type="application/json").get_response(app)
    body = json.dumps({"name": "www", "ip": "10.0.0.100", "protocol": "tcp", "port": 80, "pool": "web"}).encode()
    response = Request.blank("/v1/vips", method="POST", body=body, content_type="application/json").get_response(app)
    assert response.status_int == 503
    assert "switch 0000000000000001" in response.json["message"] and "ConnectionResetError" in response.json["message"]
    assert rig.reads == [1] and rig.balancer.counters["write_failures"] >= 1
    assert "write failed" in caplog.text
    assert "www" in rig.balancer.config.vips  # saved, applied when the switch is back
    # the switch answers the flow read: the resync brings it in line
    rig.write_fault = None
    rig.balancer.flows_read(1, switch.installed())
    assert rig.balancer.switches.unconfirmed() == {}
    assert any(r.match_dict().get("ipv4_dst") == "10.0.0.100" for r in switch.rules(0))


def test_an_openflow_error_resyncs_the_switch(tmp_path):
    rig = make_rig(tmp_path)
    switch = rig.connect()
    rig.setup_web()
    switch.tables.clear()  # the switch lost its flows (and refused a change)
    rig.balancer.openflow_error(1, "flow add table 3: error type 5 code 2")
    assert rig.reads == [1] and rig.balancer.switches[1].errors == 1
    rig.balancer.flows_read(1, switch.installed())
    assert any(r.match_dict().get("ipv4_dst") == "10.0.0.100" for r in switch.rules(0))
    assert rig.balancer.switches.unconfirmed() == {}


def test_an_unhealthy_backend_stays_out_across_a_port_flap(tmp_path):
    rig = make_rig(tmp_path)
    rig.connect()
    rig.setup_web()
    rig.resolve_all()
    health = rig.balancer.backends.health
    health.health[("web", "10.0.0.12")] = Health(healthy=False, last_result="failed: test")
    rig.balancer._mark(rig.balancer._refresh_pool("web"))
    assert "10.0.0.12" not in rig.balancer.desired.planner.table("web")
    port = BACKENDS["10.0.0.12"][1]
    rig.balancer.port_changed(1, port, up=False)
    rig.balancer.port_changed(1, port, up=True)
    rig.balancer.switch_disconnected(1)
    rig.connect()
    assert "10.0.0.12" not in rig.balancer.desired.planner.table("web")
    assert rig.balancer.backends.health.status("web", "10.0.0.12").healthy is False


def test_deleting_everything_leaves_only_base_rules(tmp_path):
    rig = make_rig(tmp_path)
    switch = rig.connect()
    many_vips(rig, 5)
    rig.service.apply_document({"pools": [], "vips": []})
    kinds = {c >> 56 for c in switch.installed().values()}
    assert kinds == {Kind.BASE}


def test_a_step_is_bounded_and_ends_with_a_barrier(tmp_path):
    rig = make_rig(tmp_path)
    rig.connect()
    many_vips(rig, 40)
    batches = [commands for _dpid, commands in rig.sent if any(isinstance(c, FlowAdd) for c in commands)]
    assert len(batches) > 2 and all(isinstance(b[-1], Barrier) for b in batches)
    assert max(sum(isinstance(c, (FlowAdd, FlowDelete)) for c in b) for b in batches) <= 4000 + 300


def test_deletes_are_strict_and_come_in_bounded_steps(tmp_path):
    rig = make_rig(tmp_path)
    switch = rig.connect()
    many_vips(rig, 40)  # 40 pools of 256 slot rules
    rig.sent.clear()
    rig.service.apply_document({"pools": [], "vips": []})
    batches = [[c for c in commands if isinstance(c, FlowDelete)] for _dpid, commands in rig.sent]
    batches = [b for b in batches if b]
    assert sum(map(len, batches)) > 40 * 256 and len(batches) > 2
    assert max(map(len, batches)) <= 4000
    assert {c >> 56 for c in switch.installed().values()} == {Kind.BASE}


def fleet(n_vips: int, n_pools: int, per_pool: int = 10) -> dict:
    """``n_vips`` VIPs spread over ``n_pools`` pools of ``per_pool`` backends."""
    shape = document(n_pools, per_pool)
    shape["vips"] = [
        {
            "name": f"vip{i}",
            "ip": f"172.{16 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}",
            "protocol": "tcp",
            "port": 80,
            "pool": f"pool{i % n_pools}",
        }
        for i in range(n_vips)
    ]
    return shape


def test_a_single_change_costs_the_same_at_10_and_at_10000_vips(tmp_path):
    """Issue 28: what one weight change computes and sends does not grow
    with the fleet. The same pool (10 backends) and the same change, beside
    9 other VIPs and beside 9,999 over ten pools: the rules computed and the
    flow changes sent are equal."""
    costs = {}
    for n_vips, n_pools in ((10, 1), (10000, 10)):
        rig = make_rig(tmp_path / str(n_vips))
        rig.connect()
        rig.service.apply_document(fleet(n_vips, n_pools))
        assert len(rig.core.config.vips) == n_vips
        before, sent = computed(rig), len(rig.sent)
        rig.service.patch_backend("pool0", "10.1.0.2", {"weight": 50})
        flow_changes = sum(len(commands) for _dpid, commands in rig.sent[sent:])
        costs[n_vips] = (computed(rig) - before, flow_changes)
    print(f"rules computed, flow changes sent by one weight change: {costs}")
    assert costs[10] == costs[10000] and costs[10][0] > 0, costs


def test_a_vip_made_on_a_pool_of_many_costs_what_it_does_on_a_pool_of_few(tmp_path):
    """Cost follows the change: a VIP made on a pool that has 999 VIPs
    plans no more VIPs than on a pool of 9 (the pool's services mark, which
    digests every VIP of its pool, is kept for pools of at most 256 VIPs:
    without that bound it planned 1,001)."""
    costs = {}
    for n_vips in (9, 999):
        rig = make_rig(tmp_path / str(n_vips))
        rig.connect()
        rig.service.apply_document(fleet(n_vips, 1))
        planned: list = []

        def counted(name, mode, planned=planned, vip_plan=rig.core.desired.vip_plan):
            planned.append(name)
            return vip_plan(name, mode)

        rig.core.desired.vip_plan = counted
        rig.service.create_vip({"name": "new", "ip": "10.77.0.1", "protocol": "tcp", "port": 80, "pool": "pool0"})
        costs[n_vips] = len(planned)
    assert 0 < costs[999] <= costs[9], costs
