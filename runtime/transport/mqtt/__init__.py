"""MQTT transport (aiomqtt 2.x through a broker such as Mosquitto).

* :class:`MqttCoordinator` (training side) — ``MqttCoordinator("mqtt://[user:pass@]127.0.0.1:1883", prefix="pat")``
* :class:`MqttEdgeTransport` (node side) — ``MqttEdgeTransport(url, node_id, heartbeat=0.5)``

Topic layout, payloads, Last Will and limits: :mod:`pat_runtime.transport.mqtt.common` and docs/protocol.md ("MQTT").
"""
from .common import (DEFAULT_MAX_PAYLOAD, MqttAuthError, MqttUrl, PayloadTooLargeError, Topics,
                     split_device_url)
from .coordinator import MqttCoordinator
from .edge import MqttEdgeTransport

__all__ = ["DEFAULT_MAX_PAYLOAD", "MqttAuthError", "MqttCoordinator", "MqttEdgeTransport", "MqttUrl",
           "PayloadTooLargeError", "Topics", "split_device_url"]
