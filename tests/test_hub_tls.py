"""A hub served over HTTPS: a node that pins the hub's CA (``tls_ca_file``) logs in, recovers, pushes its ledger
and waits on its WebSocket channel (wss); with only the system CAs it cannot connect at all (TLS is never
unverified)."""

from __future__ import annotations

import ssl

import httpx
import pytest
import trustme

from nordfed.hub.app import create_app
from nordfed.hub.server import HubServer
from nordfed.node.channel import ChannelClosed, HubChannel
from nordfed.node.localnet import tiny_cdm
from nordfed.node.runtime import NodeRuntime
from nordfed.policy.node import NodeConfig
from test_hub_support import ROOT_PASSWORD

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def tls_hub(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(d / "ca.pem")
    cert.private_key_pem.write_to_path(d / "key.pem")
    cert.cert_chain_pems[0].write_to_path(d / "cert.pem")
    app = create_app(f"sqlite:///{d / 'hub.sqlite'}", root_password=ROOT_PASSWORD)
    with HubServer(app, ssl_certfile=str(d / "cert.pem"), ssl_keyfile=str(d / "key.pem")) as server:
        url = f"https://127.0.0.1:{server.port}"
        with httpx.Client(base_url=f"{url}/api", verify=ssl.create_default_context(cafile=d / "ca.pem")) as http:
            token = http.post("/token", json={"username": "root", "password": ROOT_PASSWORD}).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            org = http.post("/organizations", json={"name": "A", "country": "NO"}, headers=auth).json()["id"]
            collab = http.post("/collaborations", json={"name": "c", "organization_ids": [org]}, headers=auth).json()
            node = http.post("/nodes", headers=auth,
                             json={"name": "NO", "organization_id": org, "collaboration_id": collab["id"]}).json()
        yield url, d, node["api_key"]


def _config(url: str, d, api_key: str, ca: bool) -> NodeConfig:
    cdm = tiny_cdm(f"duckdb:///{d / f'cdm_{ca}.duckdb'}", 20)
    return NodeConfig(hub_url=url, api_key=api_key, name="NO", cdm_url=cdm, key_dir=d / f"keys_{ca}",
                      tls_ca_file=d / "ca.pem" if ca else None, poll_timeout_s=1)


def test_a_node_pinning_the_hub_ca_works_over_https_and_wss(tls_hub):
    url, d, api_key = tls_hub
    node = NodeRuntime(_config(url, d, api_key, ca=True))
    try:
        node.start()  # HTTPS login and crash recovery, then the ledger push over wss
        assert node.channel is not None
        assert node.next_run() is None  # waited on the channel: nothing to do
        assert node.replica.hub_head is not None and node.replica.hub_head >= 1  # the hub holds its ledger
    finally:
        node.stop()


def test_without_the_ca_nothing_connects(tls_hub):
    url, d, api_key = tls_hub
    node = NodeRuntime(_config(url, d, api_key, ca=False))
    try:
        with pytest.raises(httpx.ConnectError):
            node.login()
    finally:
        node.stop()
    with pytest.raises(ChannelClosed, match="certificate"):
        HubChannel.open(url, "any-token")
