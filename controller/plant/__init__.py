"""The plant's view of the cell: publishers and servers that subscribe to the event outlet (MQTT, OPC UA).

`MqttConfig` is the cell config's `mqtt:` section; `MqttPublisher` sends the cell's events,
state and status to a broker under the topic and payload contract in `messages`. The OPC UA
server is `opcua_server.OpcUaServer` (its section `opcua_config.OpcUaConfig`), run in a process
of its own (`opcua_child`) that the cell feeds through `opcua_process.OpcUaProcess`;
`links.PlantLinks` starts, feeds and closes the enabled ones as one
(`controller.assembly.start_plant`).
"""

from controller.plant.config import MqttConfig, MqttSpool, MqttTls, SecretError
from controller.plant.messages import CONTRACT_VERSION, KINDS, Topics
from controller.plant.mqtt import MqttFigures, MqttPublisher

__all__ = [
    "CONTRACT_VERSION", "KINDS", "MqttConfig", "MqttFigures", "MqttPublisher", "MqttSpool", "MqttTls",
    "SecretError", "Topics",
]  # fmt: skip
