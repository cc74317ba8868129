"""Stage 3, assess: risks computed from the twin's estimates and forecasts.

    StateEstimate -> glycaemic.probability_below -> ThresholdRisk

The decompensation-risk ONNX model and its drift monitor are issue #6.
"""
