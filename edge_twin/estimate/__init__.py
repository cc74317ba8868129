"""Stage 2, estimate: Kalman filters per patient and signal (filterpy).

    Reading (from the readings log) -> tracker.TwinEstimator -> persisted filter state
    persisted filter state + now    -> view.estimate_at      -> StateEstimate + Forecasts
    the twin moved                  -> scorekeeper.Scorekeeper -> forecast_log, scored
                                       against the readings that come (ForecastSkill)

``models`` holds the state-space matrices with their equations.
"""
