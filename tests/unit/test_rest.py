"""The REST API in-process: webob requests against the WSGI application."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from ryu_dsr.rest.api import DsrApi, openapi_document
from webob import Request

from tests.conftest import make_rig


@pytest.fixture
def api(tmp_path):
    rig = make_rig(tmp_path)
    rig.connect()
    app = DsrApi(rig.service, rig.status)
    app.rig = rig
    app.state_file = tmp_path / "state.db"
    return app


def call(app, method, path, body=None, raw=None):
    request = Request.blank(path, method=method)
    if body is not None or raw is not None:
        request.body = raw if raw is not None else json.dumps(body).encode()
        request.content_type = "application/json"
    response = request.get_response(app)
    payload = json.loads(response.body) if response.body else None
    return response.status_int, payload


def populate(app):
    assert call(app, "POST", "/v1/pools", {"name": "web", "backends": [{"ip": "10.0.0.11"}]})[0] == 201
    assert call(app, "POST", "/v1/pools/web/backends", {"ip": "10.0.0.12", "weight": 50})[0] == 201
    status, vip = call(
        app, "POST", "/v1/vips", {"name": "www", "ip": "10.0.0.100", "protocol": "tcp", "port": 80, "pool": "web"}
    )
    assert status == 201
    return vip


def saved_rows(path) -> list[str]:
    """Everything the store holds, as SQL text."""
    with sqlite3.connect(str(path)) as db:
        return list(db.iterdump())


def snapshot(app):
    return (
        saved_rows(app.state_file),
        json.dumps(call(app, "GET", "/v1/pools")[1]),
        json.dumps(call(app, "GET", "/v1/vips")[1]),
    )


def test_pools_backends_vips_round_trip(api):
    vip = populate(api)
    assert vip["mac"] == "02:d5:0a:00:00:64" and vip["hash"] == "source_ip"
    status, pool = call(api, "GET", "/v1/pools/web")
    assert status == 200
    assert [(b["ip"], b["weight"]) for b in pool["backends"]] == [("10.0.0.11", 100), ("10.0.0.12", 50)]
    assert pool["backends"][0]["status"]["state"] == "unresolved"
    assert call(api, "GET", "/v1/pools/web/backends")[1][1]["ip"] == "10.0.0.12"
    assert call(api, "GET", "/v1/pools/web/backends/10.0.0.12")[1]["weight"] == 50
    assert call(api, "PATCH", "/v1/pools/web/backends/10.0.0.12", {"weight": 0})[1]["weight"] == 0
    assert call(api, "PATCH", "/v1/pools/web", {"description": "front"})[1]["description"] == "front"
    status, changed = call(api, "PATCH", "/v1/vips/www", {"port": None, "hash": "5tuple"})
    assert status == 200 and changed["port"] is None and changed["hash"] == "5tuple"
    assert [v["name"] for v in call(api, "GET", "/v1/vips")[1]] == ["www"]
    assert call(api, "GET", "/v1/vips/www")[1]["status"] == {"backends_up": 0, "backends": 2}
    assert call(api, "GET", "/v1/switches")[1][0]["dpid"] == 1
    assert call(api, "DELETE", "/v1/pools/web/backends/10.0.0.11") == (204, None)
    assert call(api, "DELETE", "/v1/vips/www") == (204, None)
    assert call(api, "DELETE", "/v1/pools/web") == (204, None)
    assert call(api, "GET", "/v1/pools") == (200, [])


def test_backend_status_shows_where_arp_found_it(api):
    populate(api)
    api.rig.answer_arp("10.0.0.11", "02:00:00:00:00:0b", 2)
    status = call(api, "GET", "/v1/pools/web/backends/10.0.0.11")[1]["status"]
    assert status["state"] == "up" and status["resolved"] and status["mac"] == "02:00:00:00:00:0b"
    assert status["location"] == {"dpid": 1, "port": 2}
    assert status["slots"] == 128  # the only backend up holds every slot of a 2-backend table


INVALID = [
    ("POST", "/v1/pools", None, b"{not json", "body"),
    ("POST", "/v1/pools", None, b"", "body"),
    ("POST", "/v1/pools", ["web"], None, "body"),
    ("POST", "/v1/pools", {"name": "bad name!"}, None, "name"),
    ("POST", "/v1/pools", {"name": "p", "colour": "red"}, None, "colour"),
    ("POST", "/v1/pools", {"name": "p", "backends": [{"ip": "10.0.0.300"}]}, None, "backends[0].ip"),
    ("POST", "/v1/pools/web/backends", {"ip": "10.0.0.20", "mac": "zz:00:00:00:00:01"}, None, "mac"),
    ("POST", "/v1/pools/web/backends", {"ip": "10.0.0.20", "weight": -1}, None, "weight"),
    ("POST", "/v1/pools/web/backends", {"ip": "10.0.0.20", "weight": 1001}, None, "weight"),
    ("POST", "/v1/pools/web/backends", {"ip": "10.0.0.20", "weight": True}, None, "weight"),
    ("POST", "/v1/pools/web/backends", {"ip": "224.0.0.1"}, None, "ip"),
    ("POST", "/v1/pools/web/backends", {"ip": "10.0.0.20", "location": {"dpid": 1}}, None, "location"),
    (
        "POST",
        "/v1/pools/web/backends",
        {"ip": "10.0.0.20", "location": {"dpid": "0x0", "port": 1}},
        None,
        "location.dpid",
    ),
    ("POST", "/v1/pools/web/backends", {"ip": "10.0.0.20", "status": {}}, None, "status"),
    ("POST", "/v1/pools/web/backends", {"weight": 3}, None, "ip"),
    ("POST", "/v1/vips", {"name": "v2", "ip": "10.0.0.101", "protocol": "sctp", "pool": "web"}, None, "protocol"),
    ("POST", "/v1/vips", {"name": "v2", "ip": "10.0.0.101", "protocol": "tcp", "port": 0, "pool": "web"}, None, "port"),
    (
        "POST",
        "/v1/vips",
        {"name": "v2", "ip": "10.0.0.101", "protocol": "tcp", "port": 65536, "pool": "web"},
        None,
        "port",
    ),
    ("POST", "/v1/vips", {"name": "v2", "ip": "10.0.0.101", "protocol": "tcp", "pool": "nope"}, None, "pool"),
    (
        "POST",
        "/v1/vips",
        {"name": "v2", "ip": "10.0.0.101", "protocol": "tcp", "pool": "web", "hash": "md5"},
        None,
        "hash",
    ),
    (
        "POST",
        "/v1/vips",
        {"name": "v2", "ip": "10.0.0.101", "protocol": "tcp", "pool": "web", "mac": "01:00:5e:00:00:01"},
        None,
        "mac",
    ),
    ("POST", "/v1/vips", {"name": "v2", "ip": "10.0.0.101", "pool": "web"}, None, "protocol"),
    ("PATCH", "/v1/vips/www", {"name": "other"}, None, "name"),
    ("PATCH", "/v1/vips/www", {"port": "80"}, None, "port"),
    ("PATCH", "/v1/pools/web", {"name": "x"}, None, "name"),
    ("PATCH", "/v1/pools/web", {"backends": []}, None, "backends"),
    ("PATCH", "/v1/pools/web/backends/10.0.0.11", {"ip": "10.0.0.99"}, None, "ip"),
]


@pytest.mark.parametrize(("method", "path", "body", "raw", "field"), INVALID)
def test_invalid_input_is_400_naming_the_field_and_changes_nothing(api, method, path, body, raw, field):
    populate(api)
    before = snapshot(api)
    status, error = call(api, method, path, body, raw)
    assert status == 400, error
    assert error["error"] == "invalid" and error["field"] == field
    assert error["message"].startswith(f"{field}:") and len(error["message"]) > len(field) + 5
    assert snapshot(api) == before


CONFLICTS = [
    ("POST", "/v1/pools", {"name": "web"}, "exists"),
    ("POST", "/v1/pools/web/backends", {"ip": "10.0.0.11"}, "already"),
    ("POST", "/v1/pools/web/backends", {"ip": "10.0.0.100"}, "is a backend"),
    ("POST", "/v1/vips", {"name": "www", "ip": "10.0.0.102", "protocol": "tcp", "pool": "web"}, "exists"),
    ("POST", "/v1/vips", {"name": "v2", "ip": "10.0.0.100", "protocol": "tcp", "port": 80, "pool": "web"}, "overlaps"),
    ("POST", "/v1/vips", {"name": "v2", "ip": "10.0.0.100", "protocol": "tcp", "pool": "web"}, "overlaps"),
    (
        "POST",
        "/v1/vips",
        {"name": "v2", "ip": "10.0.0.11", "protocol": "tcp", "port": 80, "pool": "web"},
        "is a backend",
    ),
    (
        "POST",
        "/v1/vips",
        {"name": "v2", "ip": "10.0.0.100", "protocol": "tcp", "port": 443, "pool": "web", "mac": "02:00:00:00:99:99"},
        "answer ARP",
    ),
    ("DELETE", "/v1/pools/web", None, "used by"),
]


@pytest.mark.parametrize(("method", "path", "body", "words"), CONFLICTS)
def test_conflicts_are_409_and_change_nothing(api, method, path, body, words):
    populate(api)
    before = snapshot(api)
    status, error = call(api, method, path, body)
    assert status == 409, error
    assert error["error"] == "conflict" and words in error["message"]
    assert snapshot(api) == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/pools/nope", None),
        ("PATCH", "/v1/pools/nope", {"description": "x"}),
        ("DELETE", "/v1/pools/nope", None),
        ("GET", "/v1/pools/nope/backends", None),
        ("POST", "/v1/pools/nope/backends", {"ip": "10.0.0.30"}),
        ("GET", "/v1/pools/web/backends/10.0.0.99", None),
        ("PATCH", "/v1/pools/web/backends/10.0.0.99", {"weight": 1}),
        ("DELETE", "/v1/pools/web/backends/10.0.0.99", None),
        ("GET", "/v1/vips/nope", None),
        ("PATCH", "/v1/vips/nope", {"port": 1}),
        ("DELETE", "/v1/vips/nope", None),
        ("GET", "/v2/other", None),
    ],
)
def test_unknown_ids_are_404_and_change_nothing(api, method, path, body):
    populate(api)
    before = snapshot(api)
    status, error = call(api, method, path, body)
    assert status == 404 and error["error"] == "not_found"
    assert snapshot(api) == before


def test_wrong_method_is_405_with_allow(api):
    request = Request.blank("/v1/pools", method="PUT")
    response = request.get_response(api)
    assert response.status_int == 405
    assert set(response.allow) == {"GET", "POST"}


def test_a_failed_save_is_500_and_changes_nothing(api, monkeypatch):
    populate(api)
    before = snapshot(api)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(api.rig.balancer.store, "write", broken)
    status, error = call(api, "POST", "/v1/pools", {"name": "other"})
    assert status == 500 and "disk full" in error["message"]
    monkeypatch.undo()
    assert snapshot(api) == before


def test_openapi_document_is_served_and_lists_every_route(api):
    status, document = call(api, "GET", "/v1/openapi.json")
    assert status == 200 and document == openapi_document()
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops if m != "parameters"}
    routed = {(method, pattern) for method, pattern, _regex, _handler in api.routes}
    assert documented == routed


def test_openapi_document_is_valid():
    from openapi_spec_validator import validate

    validate(openapi_document())


def test_every_documented_error_field_rule_exists():
    """Each schema's enum in the document matches the code's own rules."""
    from ryu_dsr import model

    schemas = openapi_document()["components"]["schemas"]
    assert schemas["VipInput"]["properties"]["protocol"]["enum"] == list(model.PROTOCOLS)
    assert schemas["VipInput"]["properties"]["hash"]["enum"] == list(model.HASH_FIELDS)
    assert schemas["BackendInput"]["properties"]["weight"]["maximum"] == model.MAX_WEIGHT
    assert re.fullmatch(schemas["Name"]["pattern"], "web-1.a_b")


def test_a_name_or_mac_with_a_line_break_is_refused(api):
    populate(api)
    before = snapshot(api)
    status, error = call(api, "POST", "/v1/pools", {"name": "web\n"})
    assert status == 400 and error["field"] == "name"
    status, error = call(api, "POST", "/v1/pools/web/backends", {"ip": "10.0.0.40", "mac": "02:00:00:00:00:01\n"})
    assert status == 400 and error["field"] == "mac"
    assert snapshot(api) == before


def test_a_write_that_is_not_json_is_415_and_changes_nothing(api):
    """A web page can POST text/plain cross-site without a preflight."""
    populate(api)
    before = snapshot(api)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        request = Request.blank("/v1/pools", method="POST", body=b'{"name": "evil"}')
        if content_type:
            request.content_type = content_type
        else:
            request.environ.pop("CONTENT_TYPE", None)
        response = request.get_response(api)
        assert response.status_int == 415 and response.json["field"] == "Content-Type"
    assert snapshot(api) == before


def test_deep_json_and_bad_path_encoding_are_400_without_a_traceback(api):
    populate(api)
    status, error = call(api, "POST", "/v1/pools", raw=b"[" * 100000 + b"]" * 100000)
    assert status == 400 and error["field"] == "body" and "nested" in error["message"]
    response = Request.blank("/v1/pools/%ff").get_response(api)
    assert response.status_int == 400 and response.json["field"] == "path"
    assert b"Traceback" not in response.body


def test_an_unexpected_error_is_500_with_an_id_in_the_log(api, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(api.rig.service, "create_pool", broken)
    status, error = call(api, "POST", "/v1/pools", {"name": "web"})
    assert status == 500 and error["error"] == "internal"
    incident = error["message"].rsplit(" ", 1)[1]
    assert "Traceback" not in json.dumps(error) and "a bug" not in json.dumps(error)
    assert incident in caplog.text and "RuntimeError: a bug" in caplog.text


def test_changes_need_a_bearer_token_and_the_audit_names_it(tmp_path, caplog):
    import logging
    import os
    import stat

    from ryu_dsr.auth import load_tokens, read_token

    token_file = tmp_path / "api-token"
    tokens = load_tokens(token_file)  # first start: made, root only
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    token = read_token(token_file)
    assert tokens == {"admin": token} and len(token) >= 32 and token not in caplog.text
    rig = make_rig(tmp_path)
    app = DsrApi(rig.service, rig.status, tokens=tokens, token_file=str(token_file))
    app.state_file = tmp_path / "state.db"
    rig.service.create_pool({"name": "web"})
    before = snapshot(app)
    for header in (None, "Bearer wrong-token-of-some-length", f"Basic {token}", f"Bearer {token}x"):
        request = Request.blank("/v1/pools/web", method="DELETE")
        if header:
            request.headers["Authorization"] = header
        response = request.get_response(app)
        assert response.status_int == 401 and "Authorization: Bearer" in response.json["message"]
        assert response.www_authenticate
    assert snapshot(app) == before
    assert Request.blank("/v1/pools").get_response(app).status_int == 200  # reading needs no token
    caplog.set_level(logging.INFO, logger="ryu_dsr")
    request = Request.blank("/v1/pools", method="POST", body=b'{"name": "api"}', content_type="application/json")
    request.headers["Authorization"] = f"Bearer {token}"
    assert request.get_response(app).status_int == 201
    assert "change by token admin from" in caplog.text and token not in caplog.text


def test_metrics_in_prometheus_text_say_what_the_controller_knows(api):
    """/metrics: every metric declared once with help and labels, values
    that follow the state (backends found or not, slots, weights)."""
    from prometheus_client.parser import text_string_to_metric_families
    from ryu_dsr.rest.metrics import METRICS, PREFIX

    populate(api)
    api.rig.resolve_all()
    response = Request.blank("/metrics").get_response(api)
    assert response.status_int == 200 and response.content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.body.decode())}
    for name, (kind, text, _labels) in METRICS.items():
        assert families[PREFIX + name].documentation == text and families[PREFIX + name].type == kind

    def values(name, **labels):
        return [
            s.value
            for s in families[PREFIX + name].samples
            if s.name in (PREFIX + name, PREFIX + name + "_total")
            and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    assert values("switch_connected", switch="0000000000000001") == [1.0]
    assert values("backend_state", pool="web", backend="10.0.0.11", state="up") == [1.0]
    assert values("backend_state", pool="web", backend="10.0.0.11", state="unhealthy") == [0.0]
    assert values("backend_weight", pool="web", backend="10.0.0.12") == [50.0]
    slots = values("backend_slots", pool="web")
    assert sum(slots) == values("pool_slots", pool="web")[0] and slots[0] > slots[1] > 0  # weights 100 and 50
    assert values("vip_backends_up", vip="www", pool="web") == [2.0]
    assert values("changes")[0] >= 3 and values("vips") == [1.0]
    assert values("switch_packet_ins", switch="0000000000000001", reason="health_probe")[0] >= 2  # the ARP answers
    assert Request.blank("/metrics", method="POST").get_response(api).status_int == 405


def test_status_view_and_stats_are_paged_by_pool_with_their_vips(api):
    populate(api)
    assert call(api, "POST", "/v1/pools", {"name": "api", "backends": [{"ip": "10.0.0.21"}]})[0] == 201
    api.rig.resolve_all()
    response = Request.blank("/v1/status?limit=1").get_response(api)
    status = json.loads(response.body)
    assert (status["pools_total"], status["vips_total"], len(status["switches"])) == (2, 1, 1)
    assert [p["name"] for p in status["pools"]] == ["api"] and status["pools"][0]["vips"] == []
    after = response.headers["X-Next-Cursor"]
    web = json.loads(Request.blank(f"/v1/status?limit=1&cursor={after}").get_response(api).body)["pools"][0]
    assert [v["name"] for v in web["vips"]] == ["www"] and "new_connections" in web["vips"][0]["traffic"]
    assert {b["ip"]: b["status"]["state"] for b in web["backends"]} == {"10.0.0.11": "up", "10.0.0.12": "up"}
    assert all("pinned_connections" in b["traffic"] for b in web["backends"])
    stats = Request.blank("/v1/stats?limit=1").get_response(api)
    assert list(json.loads(stats.body)["pools"]) == ["api"] and json.loads(stats.body)["vips"] == {}
    assert stats.headers["X-Next-Cursor"] == "api"
    assert call(api, "GET", "/v1/status?limit=0")[0] == 400
    assert call(api, "GET", "/v1/status?nope=1")[1]["field"] == "nope"


def test_the_status_page_is_one_self_contained_html_page(api):
    response = Request.blank("/status").get_response(api)
    assert response.status_int == 200 and response.content_type == "text/html"
    page = response.body.decode()
    assert "/v1/status" in page and "setInterval" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing from outside the machine
    assert "connect-src 'self'" in response.headers["Content-Security-Policy"]
    assert Request.blank("/status", method="POST").get_response(api).status_int == 405


def _fleet(n_vips: int, n_pools: int = 4) -> dict:
    """A document of ``n_vips`` VIPs over pools of three backends placed by hand."""
    pools = [
        {
            "name": f"p{p}",
            "health_check": {"kind": "none"},
            "backends": [
                {"ip": f"10.9.{p}.{b}", "mac": f"02:0b:00:00:{p:02x}:{b:02x}", "location": {"dpid": 1, "port": 10 + b}}
                for b in range(1, 4)
            ],
        }
        for p in range(n_pools)
    ]
    vips = [
        {"name": f"v{i}", "ip": f"172.16.{i // 250}.{i % 250 + 1}", "protocol": "tcp", "port": 80, "pool": f"p{i % 4}"}
        for i in range(n_vips)
    ]
    return {"pools": pools, "vips": vips}


def test_a_scrape_costs_lines_per_object_and_lets_other_work_run(tmp_path):
    """/metrics at 10 and at 1,200 VIPs: the same lines per VIP (five), so a
    scrape grows with what it reports and nothing else; it can stop to let
    other work run after every object (``Pacer``: once its slice of time is
    used), and what that work changes (a VIP deleted meanwhile) does not
    break the scrape."""
    from prometheus_client.parser import text_string_to_metric_families
    from ryu_dsr.rest.metrics import render

    from ryu_dsr.pacing import Pacer

    rig = make_rig(tmp_path)
    rig.connect()
    rig.service.apply_document(_fleet(10))
    small = render(rig.status).decode().count("\n")
    rig.service.apply_document(_fleet(1200))
    pauses = []

    def pause() -> None:
        pauses.append(1)
        if len(pauses) == 1:
            rig.service.apply_document(_fleet(1199))  # the last VIP goes while the scrape waits

    text = render(rig.status, pause=Pacer(pause, slice=0.0)).decode()  # a pause after every object
    assert len(pauses) >= 1200
    samples = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert "ryu_dsr_vip_new_connections_total" in samples
    # the first pause came before the VIPs were reached: the scrape shows the 1,199 left, five lines each
    assert text.count("\n") - small == (1199 - 10) * 5
    rig.service.apply_document(_fleet(1200))
    assert render(rig.status).decode().count("\n") - small == (1200 - 10) * 5  # whatever the size
    for line in text.splitlines():  # label names in order, as prometheus_client wrote them before
        if "{" in line and not line.startswith("#"):
            names = [pair.split("=")[0] for pair in line[line.index("{") + 1 : line.index("}")].split(",")]
            assert names == sorted(names), line


def test_the_controllers_own_lateness_is_kept_per_window_and_shown(tmp_path):
    """How late the controller's loop woke up: the longest over the last one
    to two windows (an old stall ages out), stalls over 20 ms counted, and
    both in /metrics."""
    from ryu_dsr.rest.metrics import render

    from ryu_dsr.pacing import Lateness

    lateness = Lateness(window=10.0)
    lateness.woke(0.002, now=1.0)
    lateness.woke(0.120, now=2.0)  # something held the loop for 120 ms
    lateness.woke(0.001, now=3.0)
    assert lateness.recent() == 0.120 and lateness.stalls == 1
    lateness.woke(0.003, now=12.0)  # the next window: the stall is still within the last two
    assert lateness.recent() == 0.120
    lateness.woke(0.004, now=22.5)
    assert lateness.recent() == 0.004 and lateness.stalls == 1  # aged out
    lateness.woke(0.002, now=60.0)  # a window passed with no wake-up at all: nothing carried over
    assert lateness.recent() == 0.002
    # late 30 ms while the controller worked 4 ms of it (another process had the core): 4 ms its own
    lateness.woke(0.030, now=61.0, working=0.004)
    lateness.woke(0.012, now=62.0, working=0.015)  # worked 15 ms, late 12: 12 ms its own
    assert lateness.recent() == 0.030 and lateness.recent_working() == 0.012 and lateness.stalls == 2
    rig = make_rig(tmp_path)
    text = render(rig.status, lateness=lateness).decode()
    assert "ryu_dsr_loop_late_seconds 0.03\n" in text and "ryu_dsr_loop_stalls_total 2.0\n" in text
    assert "ryu_dsr_loop_late_working_seconds 0.012\n" in text


def test_ipv6_addresses_in_bodies_and_filters_are_written_one_way(api):
    """A dual-stack service over REST: any spelling of an IPv6 address
    names the same object, and answers write it in its canonical form."""
    assert call(api, "POST", "/v1/pools", {"name": "web", "backends": [{"ip": "2001:DB8:0::11"}]})[0] == 201
    vip = {"name": "www6", "ip": "2001:db8:0:0::100", "protocol": "tcp", "port": 80, "pool": "web"}
    status, created = call(api, "POST", "/v1/vips", vip)
    assert status == 201 and created["ip"] == "2001:db8::100" and created["mac"] == "02:d6:00:00:01:00"
    four = {"name": "www", "ip": "10.0.0.100", "protocol": "tcp", "port": 80, "pool": "web"}
    assert call(api, "POST", "/v1/vips", four)[0] == 201  # the same pool serves both families
    assert [v["name"] for v in call(api, "GET", "/v1/vips?ip=2001:DB8::100")[1]] == ["www6"]
    assert [p["name"] for p in call(api, "GET", "/v1/pools?backend=2001:db8::0:11")[1]] == ["web"]
    status, backend = call(api, "GET", "/v1/pools/web/backends/2001:db8::11")
    assert status == 200 and backend["ip"] == "2001:db8::11"
    status, error = call(api, "POST", "/v1/pools/web/backends", {"ip": "fe80::11"})
    assert status == 400 and error["field"] == "ip" and "link-local" in error["message"]
