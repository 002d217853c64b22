"""Scheduled retraining: its config, the eval gate, and the daily job."""
