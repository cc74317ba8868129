"""Stage 1, ingest: MQTT messages -> validated, deduplicated readings in the store.

mqtt.MqttIngest (paho, QoS 1, manual ack; and inlet.Inlet: the API's Nightscout uploads,
committed on the same thread) or replay.replay (recorded messages)
    -> sink.Sink (the pipeline): commit, after_commit, on_idle
        -> writer.IngestWriter.commit (one transaction per batch)
            -> decode.Decoder (SenML, units, ranges, provisioning) -> Reading | Rejection
               (nightscout: the uploads' JSON; gatt: Bluetooth characteristic values)
contract: topics and vocabulary shared with device firmware (docs/wire-contract.md)
link: how long the gateway has gone without a lasting broker link (MqttIngest.down_for)

What the pipeline, the gateway and the CLI use is exported here.
"""

from edge_twin.ingest.contract import Channel, topic
from edge_twin.ingest.inlet import Inlet
from edge_twin.ingest.mqtt import MqttIngest, probe_broker
from edge_twin.ingest.replay import (
    ReplaySummary,
    count_messages,
    first_arrival,
    provision_from,
    read_capture,
    replay,
)
from edge_twin.ingest.sink import Sink
from edge_twin.ingest.writer import BatchResult, IngestTotals, IngestWriter, RawMessage

__all__ = [
    "BatchResult",
    "Channel",
    "IngestTotals",
    "IngestWriter",
    "Inlet",
    "MqttIngest",
    "RawMessage",
    "ReplaySummary",
    "Sink",
    "count_messages",
    "first_arrival",
    "probe_broker",
    "provision_from",
    "read_capture",
    "replay",
    "topic",
]
