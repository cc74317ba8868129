"""ble_bridge: Bluetooth health devices onto the gateway, as a process of its own.

    device --GATT (bonded)--> central (bleak on BlueZ; bumble: an HCI dongle or, in the
    tests, virtual controllers) --> bridge --MQTT, QoS 1, each device's own credential-->
    broker --> gateway (edge_twin/ingest/gatt.py decodes; bad values are quarantined)

profiles   what to read from each kind of device (standard SIG services)
central    the BLE seam: scan, connect (pairing and bonding), read, subscribe, write
bleak_central, bumble_central   its two adapters
publisher  one MQTT client per device; a value counts as delivered at its PUBACK
state      per device: the last stored-record sequence number delivered (for backfill)
bridge     one session per device: connect, read, backfill, publish; again and again
cli        edge-twin-ble scan | run
"""
