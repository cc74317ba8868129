"""Stage 4, alert: clinical and technical alarms (docs/alerts.md).

    twin (estimates, risks) + device reports -> conditions.py (Observation)
      -> engine.py (persistence, hysteresis, latching, pause, escalation, audit)
      -> store (alarms, alarm_events) -> delivery.py (MQTT, webhook) and the API

stage.py decides when: on new data for clinical alarms, on a tick for technical ones.
"""
