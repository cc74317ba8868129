"""A simulated home: patients, their devices, and the time-ordered messages they send.

    Home(patients, start, hours, seed) -> devices, truth per patient, messages()

Each patient draws its own generator from ``SeedSequence(seed)``, so adding a patient does
not change the others, and the same seed always gives the same home.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from firmware_sim import wire
from firmware_sim.devices.cgm import CgmSpec, Sample
from firmware_sim.devices.cgm import sample as cgm_sample
from firmware_sim.messages import Message
from firmware_sim.physiology.glucose import Episode, GlucosePatient
from firmware_sim.physiology.glucose import simulate as simulate_glucose
from firmware_sim.transport import TransportFaults, apply_faults

FIRMWARE_VERSION = "sim-0.1.0"
STATUS_EVERY_S = 6 * 3600.0


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
        faults: TransportFaults | None = None,
        clock: DeviceClock | None = None,
    ) -> None:
        if patients < 1:
            raise ValueError("a home needs at least one patient")
        self.start = start
        self.end = start + hours * 3600.0
        self.prefix = prefix
        self.cgm_spec = cgm or CgmSpec()
        self.faults = faults or TransportFaults()
        self.clock = clock or DeviceClock()
        # Transport draws from its own stream: adding faults does not change the physiology.
        self._transport_seed = np.random.SeedSequence([seed, 0x7A5])
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
        """Every message of the home, in the order the broker receives them (after the
        transport faults). Each device's own order is kept when the streams are merged."""
        streams = []
        rngs = [np.random.default_rng(s) for s in self._transport_seed.spawn(len(self.devices))]
        for patient, device, rng in zip(self.patients, self.devices, rngs, strict=True):
            sent = sorted(self._device_messages(patient, device), key=lambda m: m.t)
            streams.append(apply_faults(sent, self.faults, rng))
        return list(heapq.merge(*streams, key=lambda m: m.t))

    def _device_messages(self, patient: SimPatient, device: SimDevice) -> list[Message]:
        """What the firmware sends, at the true times it sends it; payload times are the
        device clock's."""
        did = device.device_id
        stamp = self.clock.device_time
        out: list[Message] = [
            Message(self.start, did, wire.online_topic(did, self.prefix), b"1", True)
        ]
        t_status = self.start
        while t_status < self.end:
            battery = max(5.0, 100.0 - (t_status - self.start) / 3600.0 * 0.5)
            out.append(
                Message(
                    t_status,
                    did,
                    wire.status_topic(did, self.prefix),
                    wire.status_pack(
                        did, stamp(t_status, self.start), round(battery, 1), FIRMWARE_VERSION
                    ),
                )
            )
            t_status += STATUS_EVERY_S
        for s in patient.cgm:
            payload = wire.senml_pack(
                did, [("glucose", "mg/dL", stamp(s.t, self.start), s.value, s.seq)]
            )
            out.append(Message(s.t, did, wire.readings_topic(did, self.prefix), payload))
        return out
