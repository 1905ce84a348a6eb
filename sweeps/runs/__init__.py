"""One tracked run: fit a task or evaluate a checkpoint, checked before its MLflow run starts."""
