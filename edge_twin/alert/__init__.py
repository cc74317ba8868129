"""Stage 4, alert: clinical and technical alarms (docs/alerts.md).

    twin (estimates, risks) + device reports -> conditions.py (Observation)
      -> engine.py (persistence, hysteresis, latching, pause, escalation, audit)
      -> store (alarms, alarm_events) -> delivery.py (MQTT, webhook: consumers of the
         alarm event log) and the API; payload.py is the one JSON shape of an alarm

stage.py decides when: on new data for clinical alarms, on a tick for technical ones.
What the pipeline, the API and the CLI use is exported here.
"""

from edge_twin.alert.catalog import CATALOG, AlarmSettings
from edge_twin.alert.conditions import storage_low
from edge_twin.alert.delivery import (
    MQTT_CONSUMER,
    AlarmBus,
    deliver_mqtt,
    delivery_channels,
    handle_command,
    register_channel,
)
from edge_twin.alert.engine import AlarmEngine
from edge_twin.alert.payload import alarm_json, event_json
from edge_twin.alert.stage import ALARM_SIGNALS, AlertStage
from edge_twin.alert.webhook import (
    WEBHOOK_CONSUMER,
    Redelivery,
    WebhookSender,
    redeliver_dead_letters,
)
from edge_twin.alert.webhook import read_secret as read_webhook_secret

__all__ = [
    "ALARM_SIGNALS",
    "CATALOG",
    "MQTT_CONSUMER",
    "WEBHOOK_CONSUMER",
    "AlarmBus",
    "AlarmEngine",
    "AlarmSettings",
    "AlertStage",
    "Redelivery",
    "WebhookSender",
    "alarm_json",
    "deliver_mqtt",
    "delivery_channels",
    "event_json",
    "handle_command",
    "read_webhook_secret",
    "redeliver_dead_letters",
    "register_channel",
    "storage_low",
]
