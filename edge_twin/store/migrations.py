"""Schema migrations. The schema changes only here, by appending a migration.

Each migration runs in a transaction together with its record in ``_sqlite_migrations``
(sqlite-utils' migration runner). Never edit an applied migration: add a new one.
``docs/schema.md`` describes the resulting tables.
"""

from __future__ import annotations

import hashlib

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

MIGRATIONS = Migrations("edge_twin")


@MIGRATIONS(name="0001_initial")
def _initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE patients (
            patient_id TEXT PRIMARY KEY,
            created_at REAL NOT NULL
        );
        CREATE TABLE devices (
            device_id TEXT PRIMARY KEY,
            patient_id TEXT NOT NULL REFERENCES patients(patient_id),
            device_type TEXT NOT NULL,
            provisioned_at REAL NOT NULL
        );
        -- The log of accepted readings. id order is commit order: downstream stages
        -- consume it through a cursor. UNIQUE makes redelivery and resends idempotent.
        CREATE TABLE readings (
            id INTEGER PRIMARY KEY,
            patient_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            signal TEXT NOT NULL,
            t REAL NOT NULL,
            value REAL NOT NULL,
            seq INTEGER,
            received_at REAL NOT NULL,
            flags INTEGER NOT NULL DEFAULT 0,
            UNIQUE (device_id, signal, t)
        );
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            received_at REAL NOT NULL,
            topic TEXT NOT NULL,
            payload BLOB NOT NULL,
            reason TEXT NOT NULL,
            detail TEXT NOT NULL,
            record_index INTEGER,
            device_id TEXT
        );
        CREATE INDEX quarantine_reason ON quarantine (reason);
        CREATE TABLE twin_state (
            patient_id TEXT NOT NULL,
            signal TEXT NOT NULL,
            model TEXT NOT NULL,
            model_version TEXT NOT NULL,
            t REAL NOT NULL,
            x TEXT NOT NULL,
            p TEXT NOT NULL,
            last_measured_at REAL NOT NULL,
            n_measurements INTEGER NOT NULL,
            device_ids TEXT NOT NULL,
            through_reading_id INTEGER NOT NULL,
            PRIMARY KEY (patient_id, signal)
        );
        -- How far each downstream consumer has read the readings log.
        CREATE TABLE cursors (
            name TEXT PRIMARY KEY,
            position INTEGER NOT NULL
        );
        CREATE TABLE device_status (
            device_id TEXT PRIMARY KEY,
            online INTEGER,
            battery_pct REAL,
            firmware TEXT,
            updated_at REAL NOT NULL
        );
        """
    )


@MIGRATIONS(name="0002_device_clock_offset")
def _device_clock_offset(db: Database) -> None:
    db.execute("ALTER TABLE device_status ADD COLUMN clock_offset_s REAL")


@MIGRATIONS(name="0003_twin_state_gating")
def _twin_state_gating(db: Database) -> None:
    db.execute("ALTER TABLE twin_state ADD COLUMN n_gated INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE twin_state ADD COLUMN gated_since REAL")


@MIGRATIONS(name="0004_day_starts_and_risk")
def _day_starts_and_risk(db: Database) -> None:
    db.executescript(
        """
        -- Each filter's state at every UTC midnight it passed: the twin's trajectory,
        -- which the risk model reads (assess/features.py).
        CREATE TABLE twin_day_start (
            patient_id TEXT NOT NULL,
            signal TEXT NOT NULL,
            day_start REAL NOT NULL,
            model TEXT NOT NULL,
            model_version TEXT NOT NULL,
            x TEXT NOT NULL,
            p TEXT NOT NULL,
            n_measurements INTEGER NOT NULL,
            last_measured_at REAL NOT NULL,
            PRIMARY KEY (patient_id, signal, day_start)
        );
        -- Every risk the gateway computed, with what it was computed from.
        CREATE TABLE risk_assessments (
            id INTEGER PRIMARY KEY,
            patient_id TEXT NOT NULL,
            t REAL NOT NULL,
            kind TEXT NOT NULL,
            probability REAL NOT NULL,
            confidence TEXT NOT NULL,
            model TEXT NOT NULL,
            model_version TEXT NOT NULL,
            model_sha256 TEXT NOT NULL,
            details TEXT NOT NULL,
            computed_at REAL NOT NULL
        );
        CREATE INDEX risk_assessments_patient ON risk_assessments (patient_id, kind, t);
        """
    )


@MIGRATIONS(name="0005_alarms")
def _alarms(db: Database) -> None:
    db.executescript(
        """
        -- One row per alarm episode (raised -> ... -> resolved).
        CREATE TABLE alarms (
            id INTEGER PRIMARY KEY,
            patient_id TEXT NOT NULL,
            alarm_type TEXT NOT NULL,
            priority TEXT NOT NULL,
            technical INTEGER NOT NULL,
            state TEXT NOT NULL,
            raised_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            condition_present INTEGER NOT NULL,
            reason TEXT NOT NULL,
            "values" TEXT NOT NULL,
            evidence TEXT NOT NULL,
            paused_until REAL,
            escalated_at REAL,
            acknowledged_by TEXT,
            resolved_at REAL
        );
        CREATE INDEX alarms_open ON alarms (patient_id, alarm_type, state);
        -- The audit log: every state change, who, when, why. Also the outbox of what is
        -- delivered over MQTT and to the webhook (sent_at NULL: not delivered yet).
        CREATE TABLE alarm_events (
            id INTEGER PRIMARY KEY,
            alarm_id INTEGER NOT NULL REFERENCES alarms(id),
            at REAL NOT NULL,
            recorded_at REAL NOT NULL,
            event TEXT NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            state TEXT NOT NULL,
            mqtt_sent_at REAL,
            webhook_sent_at REAL,
            webhook_attempts INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX alarm_events_alarm ON alarm_events (alarm_id);
        -- Each condition's last observation, for persistence and hysteresis.
        CREATE TABLE alarm_conditions (
            patient_id TEXT NOT NULL,
            alarm_type TEXT NOT NULL,
            present INTEGER NOT NULL,
            since REAL,
            t REAL NOT NULL,
            PRIMARY KEY (patient_id, alarm_type)
        );
        -- Snoozes, scoped by (patient, alarm type), until an event time.
        CREATE TABLE alarm_pauses (
            patient_id TEXT NOT NULL,
            alarm_type TEXT NOT NULL,
            until REAL NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            PRIMARY KEY (patient_id, alarm_type)
        );
        -- Per-patient thresholds (validated JSON of alert.catalog.AlarmSettings fields).
        CREATE TABLE alarm_settings (
            patient_id TEXT PRIMARY KEY,
            settings TEXT NOT NULL,
            updated_at REAL NOT NULL,
            updated_by TEXT NOT NULL
        );
        """
    )


@MIGRATIONS(name="0006_sensor_expiry")
def _sensor_expiry(db: Database) -> None:
    db.execute("ALTER TABLE device_status ADD COLUMN sensor_expires_at REAL")


@MIGRATIONS(name="0007_forecast_log")
def _forecast_log(db: Database) -> None:
    db.executescript(
        """
        -- The forecasts the twin issued, scored against the readings that came later
        -- (estimate/scorekeeper.py). Bounded: rows older than the retention are deleted.
        CREATE TABLE forecast_log (
            id INTEGER PRIMARY KEY,
            patient_id TEXT NOT NULL,
            signal TEXT NOT NULL,
            issued_at REAL NOT NULL,
            horizon_s REAL NOT NULL,
            target_t REAL NOT NULL,
            mean REAL NOT NULL,
            sd REAL NOT NULL,
            reading_mean REAL NOT NULL,
            reading_sd REAL NOT NULL,
            model TEXT NOT NULL,
            model_version TEXT NOT NULL,
            observed REAL,
            observed_t REAL,
            scored_at REAL
        );
        CREATE INDEX forecast_log_open ON forecast_log (patient_id, signal, target_t)
            WHERE scored_at IS NULL;
        CREATE INDEX forecast_log_target ON forecast_log (patient_id, target_t);
        CREATE INDEX forecast_log_issued ON forecast_log (issued_at);
        """
    )


@MIGRATIONS(name="0008_log_consumers")
def _log_consumers(db: Database) -> None:
    """One durable position per consumer of an append-only log (store/consumers.py),
    replacing the twin's cursor table and the per-channel sent columns of the alarm
    event log. Positions carry over: a channel's position is the event before its first
    unsent one; a channel that never sent or tried anything gets its position when it
    first runs (store/consumers.register)."""
    db.executescript(
        """
        CREATE TABLE consumers (
            name TEXT PRIMARY KEY,
            log TEXT NOT NULL CHECK (log IN ('readings', 'alarm_events')),
            position INTEGER NOT NULL,
            updated_at REAL,
            failures INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            last_error_at REAL
        );
        INSERT INTO consumers (name, log, position)
            SELECT CASE name WHEN 'estimate' THEN 'twin' ELSE name END, 'readings', position
            FROM cursors;
        INSERT INTO consumers (name, log, position, failures)
            SELECT 'alarm-mqtt', 'alarm_events',
                COALESCE(
                    (SELECT MIN(id) - 1 FROM alarm_events WHERE mqtt_sent_at IS NULL),
                    (SELECT MAX(id) FROM alarm_events), 0),
                0
            WHERE EXISTS (SELECT 1 FROM alarm_events WHERE mqtt_sent_at IS NOT NULL);
        INSERT INTO consumers (name, log, position, failures)
            SELECT 'alarm-webhook', 'alarm_events',
                COALESCE(
                    (SELECT MIN(id) - 1 FROM alarm_events WHERE webhook_sent_at IS NULL),
                    (SELECT MAX(id) FROM alarm_events), 0),
                COALESCE(
                    (SELECT webhook_attempts FROM alarm_events
                     WHERE webhook_sent_at IS NULL ORDER BY id LIMIT 1), 0)
            WHERE EXISTS (SELECT 1 FROM alarm_events
                          WHERE webhook_sent_at IS NOT NULL OR webhook_attempts > 0);
        DROP TABLE cursors;
        ALTER TABLE alarm_events DROP COLUMN mqtt_sent_at;
        ALTER TABLE alarm_events DROP COLUMN webhook_sent_at;
        ALTER TABLE alarm_events DROP COLUMN webhook_attempts;
        """
    )


@MIGRATIONS(name="0009_device_bindings_version")
def _device_bindings_version(db: Database) -> None:
    """A counter that every change of a device binding bumps, from any process (the CLI
    provisions while the gateway runs): ingest's cache compares it once per batch."""
    db.executescript(
        """
        CREATE TABLE store_versions (
            name TEXT PRIMARY KEY,
            version INTEGER NOT NULL
        );
        INSERT INTO store_versions VALUES ('devices', 0);
        CREATE TRIGGER devices_inserted AFTER INSERT ON devices BEGIN
            UPDATE store_versions SET version = version + 1 WHERE name = 'devices';
        END;
        CREATE TRIGGER devices_updated AFTER UPDATE ON devices BEGIN
            UPDATE store_versions SET version = version + 1 WHERE name = 'devices';
        END;
        CREATE TRIGGER devices_deleted AFTER DELETE ON devices BEGIN
            UPDATE store_versions SET version = version + 1 WHERE name = 'devices';
        END;
        """
    )


@MIGRATIONS(name="0010_alarm_settings_version")
def _alarm_settings_version(db: Database) -> None:
    """The same counter for alarm settings (the API and the CLI change them from other
    threads and processes): the alarm engine keeps them validated in memory between
    changes instead of parsing them on every evaluation."""
    db.executescript(
        """
        INSERT INTO store_versions VALUES ('alarm_settings', 0);
        CREATE TRIGGER alarm_settings_inserted AFTER INSERT ON alarm_settings BEGIN
            UPDATE store_versions SET version = version + 1 WHERE name = 'alarm_settings';
        END;
        CREATE TRIGGER alarm_settings_updated AFTER UPDATE ON alarm_settings BEGIN
            UPDATE store_versions SET version = version + 1 WHERE name = 'alarm_settings';
        END;
        CREATE TRIGGER alarm_settings_deleted AFTER DELETE ON alarm_settings BEGIN
            UPDATE store_versions SET version = version + 1 WHERE name = 'alarm_settings';
        END;
        """
    )


@MIGRATIONS(name="0011_upstream_sync")
def _upstream_sync(db: Database) -> None:
    """FHIR upstream sync (sync/): each patient's consent, resources the upstream refused
    (parked with its OperationOutcome, never retried blindly, never lost), the wrist
    streams' hourly summaries that have readings the upstream has not seen yet, and the
    risk assessments as a log consumers may follow."""
    db.executescript(
        """
        ALTER TABLE patients ADD COLUMN upstream_consent INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE patients ADD COLUMN consent_changed_at REAL;
        ALTER TABLE patients ADD COLUMN consent_changed_by TEXT;
        CREATE TABLE sync_parked (
            id INTEGER PRIMARY KEY,
            patient_id TEXT NOT NULL,
            resource_type TEXT NOT NULL,
            identifier TEXT NOT NULL,
            resource TEXT NOT NULL,
            status INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            parked_at REAL NOT NULL,
            -- the readings it carries (device time span), kept from retention
            device_id TEXT,
            t_from REAL,
            t_to REAL,
            UNIQUE (identifier)
        );
        -- Unprovisioned devices, so what they sent keeps its device type upstream.
        CREATE TABLE devices_retired (
            device_id TEXT NOT NULL,
            patient_id TEXT NOT NULL,
            device_type TEXT NOT NULL,
            retired_at REAL NOT NULL
        );
        CREATE TRIGGER devices_retire AFTER DELETE ON devices BEGIN
            INSERT INTO devices_retired VALUES
                (old.device_id, old.patient_id, old.device_type,
                 (julianday('now') - 2440587.5) * 86400.0);
        END;
        -- The risk assessments become a log too (FHIR sync follows it): the table is
        -- rebuilt with the wider CHECK (SQLite cannot alter a constraint).
        CREATE TABLE consumers_new (
            name TEXT PRIMARY KEY,
            log TEXT NOT NULL CHECK (log IN ('readings', 'alarm_events', 'risk_assessments')),
            position INTEGER NOT NULL,
            updated_at REAL,
            failures INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            last_error_at REAL
        );
        INSERT INTO consumers_new SELECT name, log, position, updated_at, failures,
            last_error, last_error_at FROM consumers;
        DROP TABLE consumers;
        ALTER TABLE consumers_new RENAME TO consumers;
        CREATE TABLE sync_windows (
            patient_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            device_type TEXT NOT NULL,
            signal TEXT NOT NULL,
            start REAL NOT NULL,
            first_dirty_at REAL NOT NULL,
            dirty_at REAL NOT NULL,
            PRIMARY KEY (device_id, signal, start)
        ) WITHOUT ROWID;
        """
    )


@MIGRATIONS(name="0012_alarm_audit")
def _alarm_audit(db: Database) -> None:
    """Every pause and every settings change, done or refused, with who, when, the old
    and the new values, whether or not an alarm was open (IEC 60601-1-8: an audit log of
    every change to the alarm system's state)."""
    db.executescript(
        """
        CREATE TABLE alarm_audit (
            id INTEGER PRIMARY KEY,
            patient_id TEXT NOT NULL,
            alarm_type TEXT,
            action TEXT NOT NULL CHECK (action IN ('pause', 'settings')),
            outcome TEXT NOT NULL CHECK (outcome IN ('done', 'refused')),
            at REAL NOT NULL,
            recorded_at REAL NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT NOT NULL,
            old TEXT,
            new TEXT
        );
        CREATE INDEX alarm_audit_patient ON alarm_audit (patient_id, id);
        """
    )


@MIGRATIONS(name="0013_users")
def _users(db: Database) -> None:
    """Who may use the API and pages (api/access.py): users with a role and a password
    hash, the patients each may see, their sessions and tokens (stored as hashes), and
    the access log of who read or changed which patient's data."""
    db.executescript(
        """
        CREATE TABLE users (
            username TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('patient', 'care_team', 'engineer')),
            password_hash TEXT NOT NULL,
            all_patients INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE user_patients (
            username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
            patient_id TEXT NOT NULL,
            PRIMARY KEY (username, patient_id)
        ) WITHOUT ROWID;
        CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,
            username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
            kind TEXT NOT NULL CHECK (kind IN ('session', 'token', 'code')),
            label TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        );
        CREATE TABLE access_log (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            username TEXT NOT NULL,
            role TEXT NOT NULL,
            method TEXT NOT NULL,
            route TEXT NOT NULL,
            patient_id TEXT,
            outcome TEXT NOT NULL
        );
        CREATE INDEX access_log_patient ON access_log (patient_id, id);
        """
    )


@MIGRATIONS(name="0014_user_display")
def _user_display(db: Database) -> None:
    """Each user's own display choices over the deployment's (api.glucose_unit,
    api.time_zone); NULL: the deployment's."""
    db.executescript(
        """
        CREATE TABLE user_display (
            username TEXT PRIMARY KEY REFERENCES users(username) ON DELETE CASCADE,
            glucose_unit TEXT CHECK (glucose_unit IN ('mg/dL', 'mmol/L')),
            time_zone TEXT,
            clock_24h INTEGER
        );
        """
    )


@MIGRATIONS(name="0015_displays")
def _displays(db: Database) -> None:
    """Bedside displays and buzzers on the broker: each has its own broker credential
    (its user name is its name) and the patients whose alarms it shows and may act on."""
    db.executescript(
        """
        CREATE TABLE displays (
            name TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE display_patients (
            name TEXT NOT NULL REFERENCES displays(name) ON DELETE CASCADE,
            patient_id TEXT NOT NULL,
            PRIMARY KEY (name, patient_id)
        ) WITHOUT ROWID;
        """
    )


@MIGRATIONS(name="0016_broker_credentials")
def _broker_credentials(db: Database) -> None:
    """The broker's users (devices, displays, the gateway itself) with their password
    hashes: the broker's password file is written from here (edge_twin/provisioning.py),
    so a backup of the store carries them. And who provisioned what, when."""
    db.executescript(
        """
        CREATE TABLE broker_credentials (
            username TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            hash TEXT NOT NULL,
            issued_at REAL NOT NULL,
            revoked_at REAL
        );
        CREATE TABLE provisioning_log (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT ''
        );
        """
    )


@MIGRATIONS(name="0017_uploaders_treatments")
def _uploaders_treatments(db: Database) -> None:
    """Phones that upload like a Nightscout client (xDrip+, AndroidAPS, Juggluco): each is
    a provisioned device with its own secret, kept as the SHA-256 of the SHA-1 hex digest
    the client sends in its ``api-secret`` header (never the secret). And the treatments
    they upload (carbohydrates, insulin), one row per (device, time, event type)."""
    db.executescript(
        """
        CREATE TABLE uploaders (
            device_id TEXT PRIMARY KEY,
            secret_digest TEXT NOT NULL UNIQUE,
            issued_at REAL NOT NULL,
            revoked_at REAL
        );
        CREATE TABLE treatments (
            id INTEGER PRIMARY KEY,
            patient_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            t REAL NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('carbs', 'insulin', 'carbs_insulin', 'note')),
            event_type TEXT NOT NULL,
            carbs_g REAL,
            insulin_u REAL,
            received_at REAL NOT NULL,
            source_id TEXT,
            UNIQUE (device_id, t, event_type)
        );
        CREATE INDEX treatments_patient_t ON treatments (patient_id, t);
        """
    )


@MIGRATIONS(name="0018_delivery_dead_letters")
def _delivery_dead_letters(db: Database) -> None:
    """Alarm events a delivery channel's receiver refused for good (a 4xx from the
    webhook): set aside so that the events after them flow on, and listed (not lost)."""
    db.executescript(
        """
        CREATE TABLE delivery_dead_letters (
            consumer TEXT NOT NULL,
            entry_id INTEGER NOT NULL,
            at REAL NOT NULL,
            reason TEXT NOT NULL,
            PRIMARY KEY (consumer, entry_id)
        );
        """
    )


@MIGRATIONS(name="0019_quarantine_messages")
def _quarantine_messages(db: Database) -> None:
    """A quarantined message is stored once (``quarantine_messages``: whole, or its first
    ``ingest.quarantine_keep_bytes`` when it was refused for its size, with the SHA-256
    and length of all of it), and each rejected record is a small row pointing at it:
    one pack of 3,000 bad records no longer stores the pack 3,000 times.
    ``quarantine_dropped`` counts what a device sent beyond its quarantine rate.

    The old rows are read one at a time (a store that the old layout filled may hold
    hundreds of MB of copies), each message's bytes written once; the file keeps its
    size until ``VACUUM`` (docs/field-guide.md)."""
    db.executescript(
        """
        CREATE TABLE quarantine_messages (
            id INTEGER PRIMARY KEY,
            received_at REAL NOT NULL,
            device_key TEXT NOT NULL,  -- the device id, or '' when none could be read
            held INTEGER NOT NULL DEFAULT 0,  -- readings held for the clock: never dropped
            length INTEGER NOT NULL,  -- of the whole message
            kept INTEGER NOT NULL,  -- bytes of it in payload
            sha256 TEXT NOT NULL,
            topic TEXT NOT NULL,
            payload BLOB NOT NULL  -- last: the queries above never read its pages
        );
        CREATE INDEX quarantine_messages_device
            ON quarantine_messages (device_key, held, received_at);
        CREATE INDEX quarantine_messages_age ON quarantine_messages (held, received_at);
        CREATE TABLE quarantine_new (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES quarantine_messages(id) ON DELETE CASCADE,
            received_at REAL NOT NULL,
            topic TEXT NOT NULL,
            reason TEXT NOT NULL,
            detail TEXT NOT NULL,
            record_index INTEGER,
            device_id TEXT
        );
        CREATE TABLE quarantine_dropped (
            device_key TEXT PRIMARY KEY,
            dropped INTEGER NOT NULL,
            first_at REAL NOT NULL,
            last_at REAL NOT NULL,
            last_reason TEXT NOT NULL
        );
        """
    )
    conn = db.conn
    messages: dict[tuple[float, str, str, int], int] = {}  # (at, topic, sha256, length)
    rows = conn.execute(
        "SELECT id, received_at, topic, payload, reason, detail, record_index, device_id"
        " FROM quarantine ORDER BY id"
    )
    for row_id, at, topic, payload, reason, detail, index, device in rows:
        data = bytes(payload)
        key = (at, topic, hashlib.sha256(data).hexdigest(), len(data))
        held = int(reason == "clock_unsynchronised")
        message_id = messages.get(key)
        if message_id is None:
            message_id = messages[key] = int(
                conn.execute(
                    "INSERT INTO quarantine_messages (received_at, device_key, held, length,"
                    " kept, sha256, topic, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (at, device or "", held, len(data), len(data), key[2], topic, data),
                ).lastrowid
                or 0
            )
        elif held or device:
            conn.execute(
                "UPDATE quarantine_messages SET held = max(held, ?),"
                " device_key = CASE device_key WHEN '' THEN ? ELSE device_key END WHERE id = ?",
                (held, device or "", message_id),
            )
        conn.execute(
            "INSERT INTO quarantine_new (id, message_id, received_at, topic, reason, detail,"
            " record_index, device_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row_id, message_id, at, topic, reason, detail, index, device),
        )
    for statement in (
        "DROP TABLE quarantine",
        "ALTER TABLE quarantine_new RENAME TO quarantine",
        "CREATE INDEX quarantine_reason ON quarantine (reason)",
        "CREATE INDEX quarantine_message ON quarantine (message_id)",
    ):
        conn.execute(statement)
