"""Child processes that go when their parent goes: each started in a process group of its own (a server's workers,
a sweep worker's data loaders join it), stopped as a group — SIGTERM, a grace period, then SIGKILL — when the
command that started them ends, however it ends (done, Ctrl-C, SIGTERM). A server child (the MLflow UI, the Optuna
dashboard) is waited for until it answers HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request


def start_group(command: list[str], **options) -> subprocess.Popen:
    return subprocess.Popen(command, start_new_session=True, **options)


def stop_group(process: subprocess.Popen, grace: float = 10.0) -> int:
    """SIGTERM to the child's whole group, SIGKILL to what is left of it after `grace` seconds; the child's status."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.time() + wait
        while time.time() < deadline and _group_alive(process.pid):
            process.poll()
            time.sleep(0.1)
    return process.wait()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until `url` answers 200; an error with the server's last output if it exits first or never answers."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{server.args[2]} exited: {server.stderr.read()[-2000:] if server.stderr else ''}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"no answer from {url} within {timeout:.0f} s")
