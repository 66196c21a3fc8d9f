"""A device error during deploy/rollback becomes that node's DeployError (it raised TypeError before)."""
from __future__ import annotations

from pat_runtime.devices.errors import DeviceConnectionError, DeviceTimeoutError, RemoteDeviceError
from pat_runtime.deployer import DeployError, deploy_via, rollback_via


class Coord:
    """Answers per node: a reply header or an exception."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    async def request(self, node, kind, arrays, timeout=None, **fields):
        self.calls.append((node, kind))
        a = self.answers[node]
        if isinstance(a, Exception):
            raise a
        return a, []


async def test_device_errors_during_deploy_and_rollback_are_reported_per_node():
    coord = Coord({"ok": {"artifact_id": "abc", "model_version": "2", "previous": None},
                   "slow": DeviceTimeoutError("slow", "no reply within 30 s"),
                   "gone": DeviceConnectionError("gone", "node left"),
                   "refuses": RemoteDeviceError("refuses", "artifact refused", code="unsigned")})
    for res in (await deploy_via(coord, list(coord.answers), b"not checked", verify=False),
                await rollback_via(coord, list(coord.answers))):
        assert res["ok"]["model_version"] == "2"
        for node, code in (("slow", "DeviceTimeoutError"), ("gone", "DeviceConnectionError"), ("refuses", "unsigned")):
            assert isinstance(res[node], DeployError) and res[node].code == code and res[node].node == node
        assert "no reply within 30 s" in str(res["slow"])
    assert {k for _, k in coord.calls} == {"deploy", "rollback"}
