"""`xstilts dashboard`: optuna-dashboard on the sweeps' Optuna storage (the same one `xstilts sweep` uses: --storage,
$XSTILTS_STORAGE, else sqlite in mlruns/), bound to 127.0.0.1, in a process group of its own (sweeps/children.py).
The storage URL reaches the server through its environment, never its command line (it may hold a password)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from sweeps.config.secrets import STORAGE_ENV


def start_dashboard(storage: str, port: int, host: str = "127.0.0.1") -> subprocess.Popen:
    from sweeps.children import start_group

    command = [sys.executable, "-m", "sweeps.engine.dashboard", "--host", host, "--port", str(port)]
    return start_group(command, env={**os.environ, STORAGE_ENV: storage}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)


def main() -> None:
    """The server itself: optuna-dashboard's WSGI app on wsgiref, without a log line per request (they would fill
    the pipe the parent reads a start-up error from)."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import optuna_dashboard

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format, *args):
            pass

    parser = argparse.ArgumentParser(prog="python -m sweeps.engine.dashboard")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with make_server(args.host, args.port, optuna_dashboard.wsgi(os.environ[STORAGE_ENV]),
                     handler_class=QuietHandler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
