"""Child processes that go when their parent goes: each started in a process group of its own (a server's workers,
a sweep worker's data loaders join it), stopped as a group — SIGTERM, a grace period, then SIGKILL — when the
command that started them ends, however it ends (done, Ctrl-C, SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import time


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
