"""SIGTERM, as SLURM and Kubernetes send it before a preemption: an exception that ends the tracked run as KILLED
and the process with status 143, the status the sweep's retry and schedulers take for a preemption (sweeps/runs/
resume.py saves a checkpoint first when it comes during training)."""

from __future__ import annotations

import signal

PREEMPTED = 143  # 128 + SIGTERM: the status of a process ended by SIGTERM
fitting = False  # while a Lightning trainer handles SIGTERM itself (it stops after the batch, then raises)


class Terminated(SystemExit):
    """SIGTERM outside a fit's training loop."""

    def __init__(self):
        super().__init__(PREEMPTED)


def preempted(error: BaseException) -> bool:
    """Whether `error` is a SIGTERM (Lightning's SIGTERMException in a fit, Terminated elsewhere)."""
    return isinstance(error, Terminated) or type(error).__name__ == "SIGTERMException"


def _on_sigterm(signum, frame) -> None:
    if not fitting:
        raise Terminated()


def handle_sigterm() -> None:
    """SIGTERM raises Terminated in the main thread, except while a trainer fits (Lightning keeps the handler it
    finds and calls it after its own, which stops the fit after the current batch)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
