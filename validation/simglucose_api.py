"""The parts of simglucose this package uses, imported in one place.

simglucose 0.2.11 imports gym 0.9.4 (its ``__init__`` registers an environment) and
pkg_resources, which warn on import (distutils and pkg_resources deprecations). Those
warnings are the foreign package's, not ours, and the test suite turns warnings into
errors: they are silenced here, for this import only.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from simglucose.patient.t1dpatient import Action, T1DPatient
    from simglucose.sensor.noise_gen import CGMNoise

__all__ = ["Action", "CGMNoise", "T1DPatient"]
