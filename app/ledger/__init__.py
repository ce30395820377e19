"""The forecast ledger: what was served, how it scored, what it reports (docs/ledger.md)."""
