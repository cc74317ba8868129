"""Stage 3, assess: risks computed from the twin's state (docs/risk.md).

StateEstimate -> glycaemic.threshold_risks -> ThresholdRisk at the patient's thresholds
StateEstimate + recent readings -> hypo_predictor.predict_low -> PredictedLow (the alarm's)
twin trajectory -> features.py -> risk_model.py (ONNX) -> DecompensationRisk
                   assessor.py runs it as the twin moves; model_store.py installs and
                   rolls back models; drift.py compares live features with training

What other stages use is exported here; the modules behind it are this stage's own.
"""

from edge_twin.assess.assessor import RiskAssessor
from edge_twin.assess.drift import FeatureDrift, drift_report
from edge_twin.assess.features import FEATURE_WORDS, FEATURES
from edge_twin.assess.glucose_summary import GlucoseSummary
from edge_twin.assess.glucose_summary import summarize as summarize_glucose
from edge_twin.assess.glycaemic import (
    HYPO_MGDL,
    URGENT_LOW_MGDL,
    probability_below,
    threshold_risks,
)
from edge_twin.assess.hypo_predictor import WINDOW_S as PREDICTOR_WINDOW_S
from edge_twin.assess.hypo_predictor import fit_line, predict_low
from edge_twin.assess.model_store import active as active_model
from edge_twin.assess.model_store import install as install_model
from edge_twin.assess.model_store import rollback as rollback_model

__all__ = [
    "FEATURES",
    "FEATURE_WORDS",
    "HYPO_MGDL",
    "PREDICTOR_WINDOW_S",
    "URGENT_LOW_MGDL",
    "FeatureDrift",
    "GlucoseSummary",
    "RiskAssessor",
    "active_model",
    "drift_report",
    "fit_line",
    "install_model",
    "predict_low",
    "probability_below",
    "rollback_model",
    "summarize_glucose",
    "threshold_risks",
]
