"""Tracking-server faults: every HTTP call MLflow makes retries with a bounded back-off and gives up within the
configured time (MLflow's documented MLFLOW_HTTP_REQUEST_* variables, derived from one number of seconds), and a
failure to reach the store is told apart from other errors, so that it can be reported in one line or spooled.

Worst case of one call: (retries + 1) * request timeout + the back-off sleeps (factor * (0, 2, 4 ...) + jitter),
kept under the configured time. MLflow's defaults (7 retries, factor 2, 120 s timeout) wait over four minutes on a
server that is down; variables a user has set are left as they are.
"""

from __future__ import annotations

import os

DEFAULT_TIMEOUT = 60.0
ENV_TIMEOUT = "XSTILTS_TRACKING_TIMEOUT"  # the default of --tracking-timeout, inherited by sweep workers
JITTER = 0.5


class TrackingUnavailable(RuntimeError):
    """The tracking store could not be reached in the configured time; the message is one line for the user."""


def timeout_seconds(explicit: float | None = None) -> float:
    if explicit is not None:
        return float(explicit)
    return float(os.environ.get(ENV_TIMEOUT, DEFAULT_TIMEOUT))


def http_settings(timeout: float) -> dict[str, str]:
    """MLflow's HTTP settings that keep one call, retries and back-off included, under `timeout` seconds."""
    retries = 3 if timeout >= 30 else 2 if timeout >= 8 else 1
    factor = max(1, int(timeout // 40))  # MLflow takes an integer factor
    sleeps = factor * sum(2 ** n for n in range(1, retries)) + retries * JITTER
    per_request = max(1, int((timeout - sleeps) / (retries + 1)))
    return {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries), "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(factor),
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": str(JITTER), "MLFLOW_HTTP_REQUEST_TIMEOUT": str(per_request)}


_SET_HERE: set[str] = set()  # the variables this module set (the others a user set: left alone)


def configure(timeout: float | None = None) -> float:
    """Bound MLflow's HTTP calls in this process (and the processes it starts) by `timeout` seconds."""
    seconds = timeout_seconds(timeout)
    os.environ[ENV_TIMEOUT] = str(seconds)
    for name, value in http_settings(seconds).items():
        if name not in os.environ or name in _SET_HERE:
            os.environ[name] = value
            _SET_HERE.add(name)
    return seconds


UNREACHABLE_SIGNS = ("Max retries exceeded", "Connection refused", "Failed to establish a new connection",
                     "Read timed out", "timed out", "Connection aborted", "RemoteDisconnected",
                     "Connection reset", "503", "502", "504", "too many 500 error responses")


def unreachable(error: BaseException) -> bool:
    """Whether `error` (or what it wraps) says the store could not be reached, as opposed to a refused request."""
    import requests
    from mlflow.exceptions import MlflowException

    seen = error
    while seen is not None:
        if isinstance(seen, TrackingUnavailable | requests.exceptions.ConnectionError | requests.exceptions.Timeout
                      | ConnectionError | TimeoutError):
            return True
        if isinstance(seen, MlflowException) and any(s in str(seen) for s in UNREACHABLE_SIGNS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def unavailable_in(error: BaseException) -> TrackingUnavailable | None:
    """The TrackingUnavailable that `error` is or wraps (a phase run's, passed on by its trial run), if any."""
    seen = error
    while seen is not None:
        if isinstance(seen, TrackingUnavailable):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def first_line(error: BaseException, limit: int = 160) -> str:
    """The gist of a connection error, short enough for one line."""
    text = " ".join(str(error).split())
    for sign in ("Connection refused", "Read timed out", "Max retries exceeded", "Connection aborted"):
        if sign in text:
            return sign.lower()
    return text[:limit]


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))
