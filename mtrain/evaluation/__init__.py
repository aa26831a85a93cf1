"""Scores (sacreBLEU, chrF), significance against a baseline, and decode tuning on validation."""
