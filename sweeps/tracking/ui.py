"""`xstilts ui`: an MLflow server on 127.0.0.1 against the project's store, with lean settings
(one worker, background jobs off: about 0.5 GiB instead of about 3 GiB)."""

from __future__ import annotations

import os
import subprocess
import sys


def start_server(uri: str, port: int, host: str = "127.0.0.1") -> subprocess.Popen:
    """The server in a process group of its own (its uvicorn workers too): stop it with sweeps.children.stop_group.
    The store's URI goes through the environment (`mlflow server` reads MLFLOW_BACKEND_STORE_URI), never the
    command line: it may hold a password that any local user could read in the process list."""
    from sweeps.children import start_group

    command = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1"]
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_BACKEND_STORE_URI": uri}
    return start_group(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
