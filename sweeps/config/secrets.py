"""Credentials in storage and tracking URIs: shown redacted, passed to child processes through the environment."""

from __future__ import annotations

import re

CREDENTIALS = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")
STORAGE_ENV = "XSTILTS_STORAGE"  # the Optuna storage URL of a sweep worker (never on its command line)
TRACKING_ENV = "MLFLOW_TRACKING_URI"


def redact(text: str) -> str:
    """`text` with the password of every URI in it replaced by ***."""
    return CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", str(text))
