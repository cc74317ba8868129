"""A simulated home (or cohort): patients, their devices, and the messages they send.

    Home(patients, start, hours, seed) -> devices, patient(i) / patients, messages()

Every patient has a wrist wearable, a BP cuff and a scale; patients with diabetes also a
CGM (``kinds`` narrows the set, e.g. a CGM-only home). Each patient's randomness comes
from independent streams keyed by (seed, patient, purpose), so the same seed always gives
the same home, and adding a patient, a device kind or transport faults changes nobody's
physiology. Patients are built on demand, so a cohort of hundreds never holds every
patient's minute-by-minute truth at once.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from firmware_sim import wire
from firmware_sim.devices import Artefact, Upload, cgm, spot, wrist
from firmware_sim.devices.cgm import CgmSpec
from firmware_sim.messages import Message
from firmware_sim.physiology.body import Truth
from firmware_sim.physiology.body import simulate as simulate_body
from firmware_sim.physiology.profile import CohortMix, Profile
from firmware_sim.transport import TransportFaults, apply_faults, outage_windows

FIRMWARE_VERSION = "sim-0.2.0"
KINDS = ("cgm", "wrist", "bp_cuff", "scale")
PREFIXES = {"cgm": "cgm", "wrist": "wr", "bp_cuff": "bp", "scale": "sc"}
# Stream purposes: independent generators per patient; the home's own stream.
_PROFILE, _BODY, _DEVICES, _TRANSPORT, _SENSOR_LAG, _CONFOUNDERS = range(6)
_HOME = 1_000_000


@dataclass(frozen=True)
class SimDevice:
    device_id: str
    patient_id: str
    device_type: str  # as provisioned on the gateway: cgm, wrist, bp_cuff, scale


@dataclass(frozen=True)
class DeviceClock:
    """The device's clock: device time = true time + skew + drift * (true time - start)."""

    skew_s: float = 0.0
    drift_ppm: float = 0.0

    def device_time(self, true_t: float, start: float) -> float:
        return true_t + self.skew_s + self.drift_ppm * 1e-6 * (true_t - start)


@dataclass(frozen=True)
class Episode:
    """A labelled event: what the twin should see coming (or, for artefacts, ignore)."""

    kind: str  # hypoglycaemia | hf_decompensation | cgm_compression_low
    patient_id: str
    onset: float
    peak: float
    censored: bool = False  # the peak lies after the simulated period


@dataclass
class SimPatient:
    patient_id: str
    profile: Profile
    truth: Truth
    devices: list[SimDevice]
    uploads: dict[str, list[Upload]]  # device_id -> what it sent
    artefacts: list[Artefact]
    wrist_worn: np.ndarray | None
    # device_id -> the CGM's sensor sessions (start, end), epoch s
    sensor_sessions: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    @property
    def glucose_truth(self) -> np.ndarray:
        return self.truth.signals["glucose"]

    @property
    def cgm(self) -> list[tuple[float, float, int]]:
        """(t, value, seq) of every CGM reading sent."""
        return [
            (r[2], r[3], r[4])
            for d in self.devices
            if d.device_type == "cgm"
            for u in self.uploads[d.device_id]
            for r in u.records
        ]

    @property
    def episodes(self) -> list[Episode]:
        end = self.truth.start + self.truth.minutes * 60.0
        out = [
            Episode("hypoglycaemia", self.patient_id, h.onset, h.peak)
            for h in self.truth.hypoglycaemias
        ]
        out += [
            Episode("hf_decompensation", self.patient_id, d.onset, d.peak, d.peak >= end)
            for d in self.truth.decompensations
        ]
        out += [Episode(a.kind, self.patient_id, a.onset, a.end) for a in self.artefacts]
        return sorted(out, key=lambda e: (e.onset, e.kind))


class Home:
    def __init__(
        self,
        patients: int,
        start: float,
        hours: float,
        seed: int = 0,
        cgm: CgmSpec | None = None,
        prefix: str = wire.DEFAULT_PREFIX,
        faults: TransportFaults | None = None,
        clock: DeviceClock | None = None,
        mix: CohortMix | None = None,
        kinds: tuple[str, ...] = KINDS,
    ) -> None:
        if patients < 1:
            raise ValueError("a home needs at least one patient")
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown device kinds {sorted(unknown)}; use {KINDS}")
        self.n_patients = patients
        self.start = start
        self.end = start + hours * 3600.0
        self.minutes = int(hours * 60)
        self.seed = seed
        self.prefix = prefix
        self.cgm_spec = cgm or CgmSpec()
        self.faults = faults or TransportFaults()
        self.clock = clock or DeviceClock()
        self.mix = mix or CohortMix()
        self.kinds = kinds
        self.profiles = [Profile.draw(self._rng(i, _PROFILE), self.mix) for i in range(patients)]
        self.devices = [d for i in range(patients) for d in self._devices(i)]
        # The home's Wi-Fi outages: every device of the home is offline together.
        self.outages = outage_windows(
            self.faults.home_outages_per_day,
            self.start,
            self.end,
            self.faults.offline_minutes,
            self._rng(_HOME, _TRANSPORT),
        )

    def _rng(self, patient: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng(
            np.random.SeedSequence(self.seed, spawn_key=(patient, purpose))
        )

    def _devices(self, i: int) -> list[SimDevice]:
        pid = f"pt-{i + 1:03d}"
        profile = self.profiles[i]
        wanted = [k for k in self.kinds if k != "cgm" or profile.diabetes is not None]
        return [SimDevice(f"{PREFIXES[k]}-{i + 1:03d}", pid, k) for k in wanted]

    @cached_property
    def patients(self) -> list[SimPatient]:
        """Every patient, built once (for small homes; cohorts use ``patient(i)``)."""
        return [self.patient(i) for i in range(self.n_patients)]

    def patient(self, i: int) -> SimPatient:
        profile = self.profiles[i]
        truth = simulate_body(
            profile, self.start, self.minutes, self._rng(i, _BODY), self._rng(i, _CONFOUNDERS)
        )
        rng = self._rng(i, _DEVICES)
        devices = self._devices(i)
        uploads: dict[str, list[Upload]] = {}
        artefacts: list[Artefact] = []
        worn = None
        sessions: dict[str, list[tuple[float, float]]] = {}
        for d in devices:
            if d.device_type == "cgm":
                # The sensor's lag has a stream of its own: the devices after the CGM
                # read the same random numbers as before the lag was modelled.
                lag = float(self._rng(i, _SENSOR_LAG).uniform(*self.cgm_spec.lag_min))
                uploads[d.device_id], found, sessions[d.device_id] = cgm.simulate(
                    self.cgm_spec, truth.signals["glucose"], self.start, rng, lag
                )
                artefacts += found
            elif d.device_type == "wrist":
                uploads[d.device_id], worn = wrist.simulate(truth, profile, rng)
            elif d.device_type == "bp_cuff":
                uploads[d.device_id] = spot.bp_cuff(truth, profile, rng)
            else:
                uploads[d.device_id] = spot.scale(truth, profile, rng)
        return SimPatient(
            devices[0].patient_id, profile, truth, devices, uploads, artefacts, worn, sessions
        )

    def messages(self) -> list[Message]:
        """Every message of the home, in the order the broker receives them."""
        return list(heapq.merge(*(self.patient_messages(p) for p in self.patients), key=_t))

    def patient_messages(self, patient: SimPatient) -> list[Message]:
        """One patient's messages after transport faults; each device's order is kept."""
        i = int(patient.patient_id.split("-")[1]) - 1
        rng = self._rng(i, _TRANSPORT)
        streams = [
            apply_faults(
                sorted(self._device_messages(patient, d), key=_t), self.faults, rng, self.outages
            )
            for d in patient.devices
        ]
        return list(heapq.merge(*streams, key=_t))

    def iter_patient_messages(self) -> Iterator[tuple[SimPatient, list[Message]]]:
        """Patient by patient, without keeping earlier patients: for large cohorts."""
        for i in range(self.n_patients):
            patient = self.patient(i)
            yield patient, self.patient_messages(patient)

    def _device_messages(self, patient: SimPatient, device: SimDevice) -> list[Message]:
        """What the firmware sends, at the true times it sends it; payload times are the
        device clock's."""
        did = device.device_id
        clock = self.clock
        start = self.start

        def stamp(t: float) -> float:
            return clock.device_time(t, start)

        out = [Message(start, did, wire.online_topic(did, self.prefix), b"1", True)]
        every = 3600.0 if device.device_type == "wrist" else 6 * 3600.0
        t = start
        while t < self.end:
            battery = _battery(device.device_type, patient, t, start)
            expires = next(
                (end for begin, end in patient.sensor_sessions.get(did, []) if begin <= t < end),
                None,
            )
            out.append(
                Message(
                    t,
                    did,
                    wire.status_topic(did, self.prefix),
                    wire.status_pack(
                        did,
                        stamp(t),
                        battery,
                        FIRMWARE_VERSION,
                        None if expires is None else stamp(expires),
                    ),
                )
            )
            t += every
        topic = wire.readings_topic(did, self.prefix)
        exact = clock == DeviceClock()
        for upload in patient.uploads[did]:
            records = upload.records
            if not exact:
                records = [(n, u, stamp(tm), v, s) for n, u, tm, v, s in records]
            out.append(Message(upload.t, did, topic, wire.senml_pack(did, records)))
        return out


def _t(m: Message) -> float:
    return m.t


def _battery(kind: str, patient: SimPatient, t: float, start: float) -> float:
    """Wrist: charged each evening, ~4 %/h worn. Others: a slow decline over months."""
    hours = (t - start) / 3600.0
    if kind == "wrist":
        since_charge = (((t % 86400) / 3600.0) - 20.5) % 24
        return round(max(5.0, 100.0 - 4.0 * since_charge), 1)
    return round(max(5.0, 100.0 - hours / 24.0 * 0.3), 1)
