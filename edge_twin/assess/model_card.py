"""The model card: what a risk model is, what it was trained on, how well it did.

Written by ``python -m models train`` next to the ONNX file, as JSON (read by the gateway:
features and their training distribution for imputation and drift, the alert threshold,
the file's sha256) and as Markdown (read by people).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODEL_NAME = "decompensation"
INPUT_NAME = "features"
OUTPUT_NAME = "risk"

INTENDED_USE = (
    "Adults with chronic heart failure monitored at home with a wrist wearable, a blood"
    " pressure cuff and a scale. The model estimates the probability of a heart-failure"
    " decompensation (an admission-level event) within the horizon, from the twin's state"
    " over the last four weeks, to prompt a care-team review. It is decision support, not"
    " a diagnosis: a low risk does not rule out decompensation."
)
LIMITS = (
    "Trained and validated on simulated patients only (firmware_sim): its figures say how it"
    " behaves on that physiology, not on people; clinical validation is required before any"
    " clinical use.",
    "Needs about four weeks of data before its personal norms are meaningful; earlier"
    " risks are computed with imputed features and reported with low confidence.",
    "Events without weight, heart-rate, respiratory-rate, SpO2 or activity changes are"
    " invisible to it.",
    "Not for patients without heart failure, or with pacemaker-controlled heart rates.",
)


@dataclass(frozen=True)
class FeatureStats:
    name: str
    median: float  # the imputation value
    p01: float
    p99: float
    deciles: list[float]  # training deciles (10%..90%)
    missing_fraction: float
    # The drift reference: the distinct deciles as bin edges, and the share of the known
    # training values in each of the len(edges) + 1 bins (a value v is in bin
    # searchsorted(edges, v, side="right")). A discrete feature has fewer distinct edges
    # and unequal shares; a card without them (trained before) has no drift reference.
    bin_edges: list[float] = field(default_factory=list)
    bin_shares: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    sha256: str
    horizon_days: float
    features: list[str]
    feature_stats: list[FeatureStats]
    threshold: float  # the alert threshold chosen on validation
    evaluation: dict[str, Any]
    validation: dict[str, Any]
    check: dict[str, Any]
    training: dict[str, Any]
    intended_use: str = INTENDED_USE
    limits: list[str] = field(default_factory=lambda: list(LIMITS))
    # The twin's filter models the features came from, "name vVERSION" by signal.
    twin_models: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def json_path(directory: Path) -> Path:
        return directory / f"{MODEL_NAME}.card.json"

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        data = json.loads(path.read_text())
        data["feature_stats"] = [FeatureStats(**s) for s in data["feature_stats"]]
        return cls(**data)

    def write(self, directory: Path) -> None:
        self.json_path(directory).write_text(
            json.dumps(asdict(self), indent=1, allow_nan=True) + "\n"
        )
        (directory / f"{self.name}.md").write_text(self.markdown())

    def markdown(self) -> str:
        v, t = self.validation, self.training
        lines = [
            f"# Model card: {self.name} {self.version}",
            "",
            f"sha256 `{self.sha256}`",
            "",
            "## Intended use",
            self.intended_use,
            "",
            f"Output: probability of decompensation within {self.horizon_days:g} days,"
            + (
                " calibrated. Alert threshold (chosen on validation, false alerts <="
                f" {v.get('false_alert_budget')} per patient-year): {self.threshold:.3f}."
                if v.get("budget_met", True)
                else " calibrated. Alert threshold: no threshold kept false alerts within"
                f" {v.get('false_alert_budget')} per patient-year on validation; this is the"
                f" most specific one that still alerts: {self.threshold:.3f}."
            ),
            "",
            "## Limits",
            *(f"- {limit}" for limit in self.limits),
            "",
            "## Data",
            f"- Training: {_cohort(t['train_cohort'])}; {t['rows']} rows, {t['positives']}"
            " positive.",
            f"- Validation (calibration, threshold): {_cohort(t['validation_cohort'])}.",
            *(
                [f"- The cohorts carry these mimics of a decompensation: {t['confounders']}."]
                if t.get("confounders")
                else []
            ),
            f"- Learner: {t['learner']}.",
            "- The twin's filters the features come from: "
            + ", ".join(f"{k} {m}" for k, m in self.twin_models.items())
            + " (a gateway running others refuses the model).",
            f"- Made by `{t['command']}` in {t['seconds']} s ({_software(t['software'])}).",
            "",
            "## Validation metrics",
            f"- AUROC {v['auroc']:.3f}, expected calibration error {v['ece']:.3f}",
            f"- At the threshold: sensitivity {v['sensitivity']:.2f} ({v['detected']}/"
            f"{v['events']} events), {v['false_alerts_per_patient_year']:.2f} false alerts"
            f" per patient-year, median lead {v['median_lead_days']:.1f} days",
            "- How alerts are judged: " + ", ".join(f"{k} {x}" for k, x in self.evaluation.items()),
            "",
            "## Features (the twin's state; edge_twin/assess/features.py)",
            "| feature | median | 1% | 99% | missing in training |",
            "|---|---|---|---|---|",
            *(
                f"| {s.name} | {s.median:.3g} | {s.p01:.3g} | {s.p99:.3g} |"
                f" {s.missing_fraction:.1%} |"
                for s in self.feature_stats
            ),
            "",
        ]
        return "\n".join(lines)


def _cohort(spec: dict[str, Any]) -> str:
    missing = ", ".join(f"{m:.0%}" for m in spec["missing"])
    return (
        f"{spec['patients']} simulated patients x {spec['days']:g} days, seed {spec['seed']},"
        f" missing data in long gaps {missing}"
    )


def _software(sw: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sw.items())
