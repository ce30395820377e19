"""The forecast ledger: served forecasts kept, scored against the closes that follow, reported."""
