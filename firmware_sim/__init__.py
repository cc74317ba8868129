"""firmware_sim: virtual patients, their sensor firmware, and the faults of home networks.

physiology/  true state of each patient over time (seeded)
devices/     what each sensor measures and when (noise, drift, gaps), with sequence numbers
wire         SenML packs and topics per docs/wire-contract.md
home         a household of patients and devices -> time-ordered messages
publisher    publishes a home over MQTT at 1x or accelerated time
"""
