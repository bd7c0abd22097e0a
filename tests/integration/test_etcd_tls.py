"""etcd over TLS with client certificates (etcd's --client-cert-auth), as
a production cluster runs it: the store and a controller reach it with the
CA and a client certificate; a client without one, or with one from another
CA, is refused with a reason that says so."""

from __future__ import annotations

import pytest

from ryu_dsr.etcd import Etcd
from ryu_dsr.etcd_store import EtcdStore
from ryu_dsr.lab import Lab, rest
from ryu_dsr.model import parse_pool
from ryu_dsr.store import StateFileError

PORT = 12489
URL = f"https://127.0.0.1:{PORT}"
REST_PORT, OF_PORT = 18102, 16702
BASE = f"http://127.0.0.1:{REST_PORT}"


@pytest.fixture(scope="module")
def secured():
    lab = Lab("et")
    lab.clear_leftovers()
    lab.run_dir.mkdir(parents=True, exist_ok=True)
    lab.start_etcd(PORT, tls=True)
    yield lab, lab.etcd_pki()
    lab.destroy()


def test_a_store_with_the_ca_and_a_client_certificate_reads_and_writes(secured):
    _lab, pki = secured
    etcd = Etcd([URL], ca_cert=pki["ca"], cert=pki["client"], key=pki["client_key"])
    store = EtcdStore(etcd, "/tls")
    config = store.load().config
    store.write(config.plan_pool(parse_pool({"name": "web", "backends": [{"ip": "10.0.0.11"}]})))
    assert list(EtcdStore(etcd, "/tls").load().config.pools) == ["web"]


@pytest.mark.parametrize(
    "client, why",
    [
        ({"ca_cert": "ca"}, "TLS"),  # no client certificate
        ({"ca_cert": "ca", "cert": "stranger", "key": "stranger_key"}, "TLS"),  # another CA's
        ({"cert": "client", "key": "client_key"}, "certificate verify failed"),  # etcd's CA not trusted
    ],
)
def test_a_client_etcd_does_not_trust_or_that_does_not_trust_etcd_is_refused(secured, client, why):
    _lab, pki = secured
    etcd = Etcd([URL], **{name: pki[file] for name, file in client.items()})
    with pytest.raises(StateFileError, match=why):
        EtcdStore(etcd, "/tls").load()


def test_a_controller_configured_with_the_certificates_keeps_its_state_in_etcd(secured):
    lab, pki = secured
    settings = {
        "etcd_endpoints": URL,
        "etcd_prefix": "/tls-controller",
        "etcd_ca_cert": pki["ca"],
        "etcd_cert": pki["client"],
        "etcd_key": pki["client_key"],
        "node_name": "alpha",
    }
    lab.start_controller(settings, rest_port=REST_PORT, of_port=OF_PORT)
    status, body = rest(BASE, "POST", "/v1/pools", {"name": "web", "backends": [{"ip": "10.0.0.11"}]})
    assert status == 201, body
    assert rest(BASE, "GET", "/v1/cluster")[1]["etcd"]["healthy"] is True
    etcd = Etcd([URL], ca_cert=pki["ca"], cert=pki["client"], key=pki["client_key"])
    assert list(EtcdStore(etcd, "/tls-controller").load().config.pools) == ["web"]
