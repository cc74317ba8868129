"""A simulated home: patients, their devices, and the time-ordered messages they send.

    Home(patients, start, hours, seed) -> devices, truth per patient, messages()

Each patient draws its own generator from ``SeedSequence(seed)``, so adding a patient does
not change the others, and the same seed always gives the same home.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from firmware_sim import wire
from firmware_sim.devices.cgm import CgmSpec, Sample
from firmware_sim.devices.cgm import sample as cgm_sample
from firmware_sim.physiology.glucose import Episode, GlucosePatient
from firmware_sim.physiology.glucose import simulate as simulate_glucose

FIRMWARE_VERSION = "sim-0.1.0"
STATUS_EVERY_S = 6 * 3600.0


@dataclass(frozen=True)
class SimDevice:
    device_id: str
    patient_id: str
    device_type: str  # as provisioned on the gateway: cgm, wrist, bp_cuff, scale


@dataclass(frozen=True)
class Message:
    t: float  # device time at which the firmware sends it
    device_id: str
    topic: str
    payload: bytes
    retain: bool = False


@dataclass(frozen=True)
class SimPatient:
    patient_id: str
    glucose_model: GlucosePatient
    glucose_truth: npt.NDArray[np.float64]  # mg/dL per minute from start
    episodes: tuple[Episode, ...]
    cgm: tuple[Sample, ...]


class Home:
    def __init__(
        self,
        patients: int,
        start: float,
        hours: float,
        seed: int = 0,
        cgm: CgmSpec | None = None,
        prefix: str = wire.DEFAULT_PREFIX,
    ) -> None:
        if patients < 1:
            raise ValueError("a home needs at least one patient")
        self.start = start
        self.end = start + hours * 3600.0
        self.prefix = prefix
        self.cgm_spec = cgm or CgmSpec()
        minutes = int(hours * 60)
        self.patients: list[SimPatient] = []
        self.devices: list[SimDevice] = []
        for i, child in enumerate(np.random.SeedSequence(seed).spawn(patients), start=1):
            rng = np.random.default_rng(child)
            patient_id = f"pt-{i:03d}"
            model = GlucosePatient.draw(rng)
            truth, episodes = simulate_glucose(model, start, minutes, rng)
            samples = cgm_sample(self.cgm_spec, truth, start, rng)
            self.patients.append(
                SimPatient(patient_id, model, truth, tuple(episodes), tuple(samples))
            )
            self.devices.append(SimDevice(f"cgm-{i:03d}", patient_id, "cgm"))

    def messages(self) -> list[Message]:
        """Every message of the home, in the order the devices send them."""
        out: list[Message] = []
        for patient, device in zip(self.patients, self.devices, strict=True):
            did = device.device_id
            out.append(Message(self.start, did, wire.online_topic(did, self.prefix), b"1", True))
            t_status = self.start
            while t_status < self.end:
                battery = max(5.0, 100.0 - (t_status - self.start) / 3600.0 * 0.5)
                out.append(
                    Message(
                        t_status,
                        did,
                        wire.status_topic(did, self.prefix),
                        wire.status_pack(did, t_status, round(battery, 1), FIRMWARE_VERSION),
                    )
                )
                t_status += STATUS_EVERY_S
            for s in patient.cgm:
                payload = wire.senml_pack(did, [("glucose", "mg/dL", s.t, s.value, s.seq)])
                out.append(Message(s.t, did, wire.readings_topic(did, self.prefix), payload))
        out.sort(key=lambda m: (m.t, m.device_id))
        return out
