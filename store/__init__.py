"""The PostgreSQL store of actuals, predictions and scores (see docs/scoring-and-history.md)."""
