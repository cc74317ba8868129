"""Stage 3, assess: risks computed from the twin's state (docs/risk.md).

StateEstimate -> glycaemic.probability_below -> ThresholdRisk (in every glucose estimate)
StateEstimate + recent readings -> hypo_predictor.py -> P(low within 45 min) (the alarm's)
twin trajectory -> features.py -> risk_model.py (ONNX) -> DecompensationRisk
                   assessor.py runs it as the twin moves; model_store.py installs and
                   rolls back models; drift.py compares live features with training
"""
