"""The decompensation model at run time: a verified ONNX file and its card.

    directory with decompensation.onnx + decompensation.card.json
      -> load_model (checksum, names, shapes, a trial inference) -> RiskModel
      -> RiskModel.assess(PatientHistory, t) -> DecompensationRisk

A model that fails any check raises ``ModelError`` saying which check and how to fix it;
nothing half-loaded is ever used. Each assessment carries its provenance (model, version,
sha256, input window), a confidence from how much of its input was known and typical,
and the features that moved it most: the risk minus the risk with that one feature set to
its training median, all computed in one batched inference.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge_twin.assess.features import (
    DISEASE_DIRECTION,
    FEATURES,
    SIGNALS,
    WINDOW_DAYS,
    PatientHistory,
    features,
    twin_models,
)
from edge_twin.assess.model_card import INPUT_NAME, MODEL_NAME, OUTPUT_NAME, ModelCard
from edge_twin.domain import Contribution, DecompensationRisk, ModelProvenance
from edge_twin.errors import ModelError
from edge_twin.estimate import DAY_S

TOP_CONTRIBUTIONS = 3


def shipped_dir() -> Path:
    """The model that ships with this release (edge_twin/assess/shipped)."""
    return Path(str(resources.files("edge_twin.assess") / "shipped"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class RiskModel:
    card: ModelCard
    directory: Path
    session: ort.InferenceSession

    @property
    def medians(self) -> npt.NDArray[np.float32]:
        return np.array([s.median for s in self.card.feature_stats], dtype=np.float32)

    def predict(self, rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Calibrated risks of feature rows (NaN: unknown, imputed by the model)."""
        try:
            out = self.session.run([OUTPUT_NAME], {INPUT_NAME: rows.astype(np.float32)})[0]
        except Exception as exc:  # onnxruntime's own error types
            raise ModelError(
                f"{self.card.name} {self.card.version} inference failed: {exc}"
            ) from exc
        return np.asarray(out, dtype=float).reshape(-1)

    def assess(self, history: PatientHistory, patient_id: str, t: float) -> DecompensationRisk:
        row = features(history, t)
        return self.assess_row(row, history, patient_id, t)

    def assess_row(
        self, row: npt.NDArray[np.float64], history: PatientHistory, patient_id: str, t: float
    ) -> DecompensationRisk:
        n = len(FEATURES)
        # Row 0 as is; row i+1 with feature i at its training median.
        batch = np.repeat(row.reshape(1, n), n + 1, axis=0)
        batch[1:][np.arange(n), np.arange(n)] = self.medians
        risks = self.predict(batch)
        p = float(risks[0])
        effects = p - risks[1:]
        order = np.argsort(-np.abs(effects))[:TOP_CONTRIBUTIONS]
        stats = self.card.feature_stats
        contributions = tuple(
            Contribution(FEATURES[i], float(row[i]), stats[i].median, float(effects[i]))
            for i in order
            if not math.isnan(row[i]) and abs(effects[i]) > 1e-4
        )
        confidence, reasons = self.confidence(row)
        window_start = math.floor(t / DAY_S) * DAY_S - (WINDOW_DAYS - 1) * DAY_S
        inputs = tuple(s.value for s in SIGNALS if history.state(s, t, before=False) is not None)
        return DecompensationRisk(
            patient_id=patient_id,
            t=t,
            horizon_days=self.card.horizon_days,
            probability=p,
            threshold=self.card.threshold,
            confidence=confidence,
            confidence_reasons=reasons,
            contributions=contributions,
            features=tuple(
                (name, None if math.isnan(v) else float(v))
                for name, v in zip(FEATURES, row.tolist(), strict=True)
            ),
            provenance=ModelProvenance(
                self.card.name, self.card.version, self.card.sha256, window_start, t, inputs
            ),
        )

    def confidence(self, row: npt.NDArray[np.float64]) -> tuple[str, tuple[str, ...]]:
        """high: every feature known and inside the training's 1-99% range; medium: one
        or two doubts; low: more (the model is extrapolating or guessing). A feature
        beyond the range in the direction a decompensation moves it (DISEASE_DIRECTION)
        is evidence, not doubt: it is named among the reasons but does not lower the
        confidence, or a gateway would doubt its alarm exactly when the disease shows;
        unless it is beyond by more than the training range's own width."""
        doubts, evidence = [], []
        for v, s in zip(row.tolist(), self.card.feature_stats, strict=True):
            if math.isnan(v):
                doubts.append(f"{s.name} unknown (imputed {s.median:.3g})")
            elif not s.p01 <= v <= s.p99:
                beyond = f"{s.name} = {v:.3g} outside training range {s.p01:.3g}..{s.p99:.3g}"
                side = 1 if v > s.p99 else -1
                # Beyond by more than the whole training range: a glitch more likely than
                # a body (a scale read 20 kg off), doubt whatever its direction.
                implausible = (v - s.p99 if side > 0 else s.p01 - v) > s.p99 - s.p01
                if DISEASE_DIRECTION.get(s.name, 0) == side and not implausible:
                    evidence.append(f"{beyond}, towards decompensation")
                else:
                    doubts.append(beyond + (", implausibly far" if implausible else ""))
        level = "high" if not doubts else "medium" if len(doubts) <= 2 else "low"
        return level, tuple(doubts + evidence)


def load_model(directory: Path) -> RiskModel:
    """Verify and load the model in ``directory``; ModelError says what is wrong."""
    onnx_path = directory / f"{MODEL_NAME}.onnx"
    card_path = ModelCard.json_path(directory)
    for path in (onnx_path, card_path):
        if not path.is_file():
            raise ModelError(f"model refused: {path} is missing")
    try:
        card = ModelCard.load(card_path)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"model refused: {card_path} is not a valid model card ({exc})") from exc
    digest = sha256(onnx_path)
    if digest != card.sha256:
        raise ModelError(
            f"model refused: {onnx_path} has sha256 {digest[:12]}..., its card says"
            f" {card.sha256[:12]}...: the file is corrupt or not the one the card describes"
        )
    if tuple(card.features) != FEATURES or len(card.feature_stats) != len(FEATURES):
        raise ModelError(
            f"model refused: {card.name} {card.version} expects features {card.features},"
            f" this gateway computes {list(FEATURES)}: install a model built for this release"
        )
    if card.twin_models != twin_models():
        raise ModelError(
            f"model refused: {card.name} {card.version} was trained on the twin's filters"
            f" {card.twin_models or 'of an unrecorded version'}, this gateway runs"
            f" {twin_models()}: its inputs would mean something else (retrain:"
            " python -m models train)"
        )
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types; translate them all
        raise ModelError(f"model refused: onnxruntime cannot load {onnx_path}: {exc}") from exc
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME] or inputs[0].type != "tensor(float)":
        raise ModelError(
            f"model refused: expected one float input {INPUT_NAME!r}, found"
            f" {[(i.name, i.type) for i in inputs]}"
        )
    shape = inputs[0].shape
    if len(shape) != 2 or shape[1] != len(FEATURES):
        raise ModelError(
            f"model refused: input shape {shape}, expected [N, {len(FEATURES)}] features"
        )
    if OUTPUT_NAME not in [o.name for o in outputs]:
        raise ModelError(
            f"model refused: no output {OUTPUT_NAME!r} (found {[o.name for o in outputs]})"
        )
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("features") != ",".join(FEATURES) or meta.get("version") != card.version:
        raise ModelError("model refused: the ONNX metadata does not match its card")
    model = RiskModel(card, directory, session)
    trial = model.predict(np.array([model.medians, np.full(len(FEATURES), np.nan)]))
    if not np.all(np.isfinite(trial)) or not np.all((trial >= 0) & (trial <= 1)):
        raise ModelError(f"model refused: a trial inference gave {trial.tolist()}, not risks")
    return model
