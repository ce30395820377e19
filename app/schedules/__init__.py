"""Retraining on a market schedule: what a schedule says, when it is due, and the tick that fires it."""
