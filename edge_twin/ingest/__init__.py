"""Stage 1, ingest: MQTT messages -> validated, deduplicated readings in the store.

mqtt.MqttIngest (paho, QoS 1, manual ack)
    -> writer.IngestWriter.commit (one transaction per batch)
        -> decode.Decoder (SenML, units, ranges, provisioning) -> Reading | Rejection
contract: topics and vocabulary shared with device firmware (docs/wire-contract.md)
"""
