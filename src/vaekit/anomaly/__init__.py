"""Anomaly detection: surprise, its corrections and their calibrated combination."""
