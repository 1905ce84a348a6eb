"""Tracking: the MLflow store and runs, the model registry (promotion), the MLflow UI server."""
