"""Configuration: the typed schema of every setting (schema.py), the command-line flags made from it (flags.py),
one-line validation errors (errors.py) and credentials kept out of command lines and output (secrets.py)."""

from sweeps.config.errors import ConfigError
from sweeps.config.schema import (DataConfig, PromoteConfig, ResumeConfig, RunConfig, SweepConfig, TrackingConfig,
                                  TrainConfig)

__all__ = ["ConfigError", "DataConfig", "PromoteConfig", "ResumeConfig", "RunConfig", "SweepConfig", "TrackingConfig",
           "TrainConfig"]
