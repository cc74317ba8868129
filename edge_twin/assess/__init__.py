"""Stage 3, assess: risks computed from the twin's state (docs/risk.md).

StateEstimate -> glycaemic.threshold_risks -> ThresholdRisk at the patient's thresholds
StateEstimate + recent readings -> hypo_predictor.predict_low -> PredictedLow (the alarm's)
twin trajectory -> features.py -> risk_model.py (ONNX) -> DecompensationRisk
                   assessor.py runs it as the twin moves; model_store.py installs and
                   rolls back models; drift.py compares live features with training

What other stages use is exported here (``hypo_predictor`` and ``model_store`` as
modules); the modules behind it are this stage's own.
"""

from edge_twin.assess import hypo_predictor, model_store
from edge_twin.assess.assessor import RiskAssessor
from edge_twin.assess.drift import FeatureDrift, drift_report
from edge_twin.assess.glycaemic import (
    HYPO_MGDL,
    URGENT_LOW_MGDL,
    probability_below,
    threshold_risks,
)

__all__ = [
    "HYPO_MGDL",
    "URGENT_LOW_MGDL",
    "FeatureDrift",
    "RiskAssessor",
    "drift_report",
    "hypo_predictor",
    "model_store",
    "probability_below",
    "threshold_risks",
]
