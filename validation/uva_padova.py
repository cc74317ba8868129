"""simglucose's UVA/Padova type-1 patients, stepped on a 1-minute grid with plain floats.

The physiology is the other team's code, not ours: every derivative comes from
``simglucose.patient.t1dpatient.T1DPatient.model`` (simglucose 0.2.11), the 13-state
UVA/Padova model of Dalla Man, Rizza & Cobelli, "Meal simulation model of the
glucose-insulin system", IEEE Trans Biomed Eng 54(10), 2007, with the type-1 extension
of Kovatchev et al. 2009 / Dalla Man et al., "The UVA/PADOVA Type 1 Diabetes
Simulator: New Features", J Diabetes Sci Technol 8(1), 2014. Its 30 virtual patients
(adolescent/adult/child #001-#010) and their therapy (``Quest.csv``: CR, CF) ship in
the package; we read those CSVs directly instead of building pandas rows.

What we do ourselves, and why:

* The meal bookkeeping (announced grams eaten at ``T1DPatient.EAT_RATE`` g/min, and
  ``last_Qsto`` / ``last_foodtaken`` reset when eating starts) is copied line for line
  from ``T1DPatient.step``, because the model's gastric emptying depends on it.
* The integrator: ``T1DPatient`` uses scipy's ``ode(...).set_integrator("dopri5")``,
  which costs ~20 right-hand-side calls a minute (0.58 s per patient-day here). Inputs
  are constant within each minute, and the fastest rates of these patients are
  ~1.2/min, well inside classical RK4's stability limit (2.78) at h = 1 min, so one RK4
  step a minute (4 calls, 0.17 s per patient-day) matches dopri5 to < 0.4 mg/dL on all 30
  patients over a day of meals and boluses (tests/test_validation.py checks one).
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.resources
from dataclasses import dataclass
from functools import cache
from types import SimpleNamespace

import numpy as np
import numpy.typing as npt

from validation.simglucose_api import Action, T1DPatient

FloatArray = npt.NDArray[np.float64]

SIMGLUCOSE_VERSION = importlib.metadata.version("simglucose")
EAT_RATE_G_PER_MIN = float(T1DPatient.EAT_RATE)
N_STATES = 13
GROUPS = ("adolescent", "adult", "child")


@dataclass(frozen=True)
class VirtualPatient:
    """One row of ``vpatient_params.csv`` joined with its ``Quest.csv`` therapy."""

    name: str  # simglucose's name, e.g. "adult#001"
    params: tuple[tuple[str, float], ...]  # every numeric column, in file order
    x0: tuple[float, ...]  # the 13 initial states (x0_ 1 .. x0_13): basal steady state
    cr: float  # carbohydrate ratio, g/U (Quest.csv)
    cf: float  # correction factor, mg/dL per U (Quest.csv)
    age: float  # years (Quest.csv)

    def param(self, key: str) -> float:
        return dict(self.params)[key]

    @property
    def group(self) -> str:
        return self.name.split("#")[0]

    @property
    def number(self) -> int:
        return int(self.name.split("#")[1])

    @property
    def basal_u_per_min(self) -> float:
        """u2ss (pmol/L/kg) * BW (kg) / 6000, as simglucose's BBController computes it."""
        return self.param("u2ss") * self.param("BW") / 6000.0

    @property
    def vg(self) -> float:
        """Glucose distribution volume (dL/kg): mg/kg state -> mg/dL."""
        return self.param("Vg")

    def namespace(self) -> SimpleNamespace:
        """The parameters with attribute access, as T1DPatient.model reads ``params.x``."""
        return SimpleNamespace(**dict(self.params))


def _params_file(name: str) -> str:
    return (importlib.resources.files("simglucose") / "params" / name).read_text()


@cache
def load_patients() -> tuple[VirtualPatient, ...]:
    """All 30 virtual patients, in simglucose's file order (adolescents, adults, children)."""
    quest = {row["Name"]: row for row in csv.DictReader(_params_file("Quest.csv").splitlines())}
    out = []
    for row in csv.DictReader(_params_file("vpatient_params.csv").splitlines()):
        name = row.pop("Name")
        params = tuple((key, float(value)) for key, value in row.items())
        x0 = tuple(float(row[f"x0_{i:2d}"]) for i in range(1, N_STATES + 1))
        q = quest[name]
        out.append(
            VirtualPatient(name, params, x0, float(q["CR"]), float(q["CF"]), float(q["Age"]))
        )
    return tuple(out)


def patient(name: str) -> VirtualPatient:
    for vp in load_patients():
        if vp.name == name:
            return vp
    raise KeyError(name)


class UvaPadova:
    """One virtual patient's state, advanced a minute at a time by simglucose's model.

    Feed it ``eat(grams)`` (a meal announcement, eaten at 5 g/min) and ``step(insulin)``
    (U/min over the coming minute: basal plus any bolus given in that minute).
    """

    def __init__(self, vp: VirtualPatient, substeps: int = 1) -> None:
        self.vp = vp
        self._p = vp.namespace()
        self._vg = vp.vg
        self._h = 1.0 / substeps
        self._substeps = substeps
        self.x: FloatArray = np.array(vp.x0, dtype=np.float64)
        self.t = 0  # minutes
        # T1DPatient.reset
        self._last_qsto = float(self.x[0] + self.x[1])
        self._last_foodtaken = 0.0
        self._last_cho = 0.0
        self._is_eating = False
        self._planned_meal = 0.0

    @property
    def bg(self) -> float:
        """Plasma glucose, mg/dL (Gp / Vg)."""
        return float(self.x[3]) / self._vg

    @property
    def gsub(self) -> float:
        """Subcutaneous glucose, mg/dL (state 13 / Vg): what simglucose's CGMSensor reads."""
        return float(self.x[12]) / self._vg

    def eat(self, grams: float) -> None:
        """Announce a meal: T1DPatient._announce_meal adds it to the planned meal."""
        self._planned_meal += grams

    def step(self, insulin_u_per_min: float) -> None:
        """One minute, with T1DPatient.step's meal bookkeeping and an RK4 integration."""
        # T1DPatient._announce_meal: eat at most EAT_RATE g this minute
        if self._planned_meal > 0:
            to_eat = min(EAT_RATE_G_PER_MIN, self._planned_meal)
            self._planned_meal = max(0.0, self._planned_meal - to_eat)
        else:
            to_eat = 0.0
        # T1DPatient.step: detect the start of eating, count the food taken
        if to_eat > 0 and self._last_cho <= 0:
            self._last_qsto = float(self.x[0] + self.x[1])  # mg
            self._last_foodtaken = 0.0  # g
            self._is_eating = True
        if self._is_eating:
            self._last_foodtaken += to_eat
        if to_eat <= 0 and self._last_cho > 0:
            self._is_eating = False
        self._last_cho = to_eat

        action = Action(CHO=to_eat, insulin=insulin_u_per_min)
        f = T1DPatient.model
        p, q, food, h = self._p, self._last_qsto, self._last_foodtaken, self._h
        x = self.x
        for _ in range(self._substeps):
            k1 = f(0.0, x, action, p, q, food)
            k2 = f(0.0, x + (h / 2) * k1, action, p, q, food)
            k3 = f(0.0, x + (h / 2) * k2, action, p, q, food)
            k4 = f(0.0, x + h * k3, action, p, q, food)
            x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        self.x = x
        self.t += 1
