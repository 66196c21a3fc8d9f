"""mqtts://: the broker verified against a CA file, client certificates required (a throw-away PKI per test)."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pat_runtime.devices.errors import DeviceConnectionError
from pat_runtime.edge.service import NodeService
from pat_runtime.testing import sim_device
from pat_runtime.testing.core import free_port
from pat_runtime.testing.tls import make_pki
from pat_runtime.transport.mqtt import MqttCoordinator, MqttEdgeTransport
from pat_runtime.transport.mqtt.acl import TlsFiles

from .conftest import secure_broker


def _creds(path, **kw):
    path.write_text("".join(f'{k} = "{v}"\n' for k, v in kw.items()))
    path.chmod(0o600)
    return path


async def test_mqtt_tls_with_client_certificates(tmp_path):
    pki = make_pki(tmp_path / "pki", ["coordinator", "node-1"])
    other = make_pki(tmp_path / "other", ["coordinator"], ca_name="someone-else")
    port = free_port()
    tls = TlsFiles(pki.ca, pki.server_cert, pki.server_key, port)
    async with secure_broker(tmp_path, port=port, tls=tls, client_tls=pki.clients) as sb:
        url = f"mqtts://127.0.0.1:{port}"
        coord = await MqttCoordinator(f"{url}?credentials={sb.creds['coordinator']}").start()
        stop = asyncio.Event()
        service = NodeService(await sim_device("circuit", noise=0.0), "node-1")
        edge = asyncio.create_task(MqttEdgeTransport(f"{url}?credentials={sb.creds['node-1']}", "node-1",
                                                     heartbeat=0.2).serve(service, stop))
        try:
            await coord.wait_for_node("node-1", timeout=10)
            x = np.zeros((1, 16), np.float32)
            _, (y,) = await coord.request("node-1", "apply", [x, np.zeros(16, np.float32)])
            assert y.shape == (1, 16)
            pw = sb.password("coordinator")
            # no client certificate / a certificate from another CA / not trusting the broker's CA: refused
            bad = [_creds(tmp_path / "nocert.toml", username="coordinator", password=pw, ca=pki.ca),
                   _creds(tmp_path / "othercert.toml", username="coordinator", password=pw, ca=pki.ca,
                          cert=other.clients["coordinator"][0], key=other.clients["coordinator"][1]),
                   _creds(tmp_path / "otherca.toml", username="coordinator", password=pw, ca=other.ca,
                          cert=pki.clients["coordinator"][0], key=pki.clients["coordinator"][1])]
            for c in bad:
                with pytest.raises(DeviceConnectionError):
                    await MqttCoordinator(f"{url}?credentials={c}", connect_timeout=2).start()
            # plain MQTT on the TLS port does not get in either
            with pytest.raises(DeviceConnectionError):
                await MqttCoordinator(f"mqtt://127.0.0.1:{port}?credentials={sb.creds['coordinator']}",
                                      connect_timeout=2).start()
            assert coord.alive_nodes() == ["node-1"]
        finally:
            stop.set()
            await asyncio.wait_for(edge, 10)
            await coord.close()
