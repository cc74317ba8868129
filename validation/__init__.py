"""External glucose validation cohort from simglucose's UVA/Padova type-1 model.

Exports:
    cohort(seed, patients=30, days=7.0, jobs=2, cache_dir=None) -> list[ExternalPatient]
    ExternalPatient      one simulated patient: plasma/interstitial per minute, CGM
                         readings in arrival order, lows (from plasma), artefacts, meals,
                         boluses
    simulate_patient     one patient of a cohort, by (seed, index)
    GENERATOR_VERSION, SIMGLUCOSE_VERSION, START
    VirtualPatient, load_patients, UvaPadova   simglucose's patients and model, plain floats

Run ``python -m validation --seed 11`` for a summary.
"""

from validation.cohort import (
    GENERATOR_VERSION,
    START,
    ExternalPatient,
    cohort,
    simulate_patient,
)
from validation.uva_padova import SIMGLUCOSE_VERSION, UvaPadova, VirtualPatient, load_patients

__all__ = [
    "GENERATOR_VERSION",
    "SIMGLUCOSE_VERSION",
    "START",
    "ExternalPatient",
    "UvaPadova",
    "VirtualPatient",
    "cohort",
    "load_patients",
    "simulate_patient",
]
