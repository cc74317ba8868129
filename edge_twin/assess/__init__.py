"""Stage 3, assess: risks computed from the twin's state (docs/risk.md).

StateEstimate -> glycaemic.probability_below / trend_probability_below -> ThresholdRisk
twin trajectory -> features.py -> risk_model.py (ONNX) -> DecompensationRisk
                   assessor.py runs it as the twin moves; model_store.py installs and
                   rolls back models; drift.py compares live features with training
"""
