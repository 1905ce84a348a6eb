"""The sweep engine: experiment files, the phase pipeline with reuse, Optuna studies and workers."""
