"""Fits on several devices (`--devices`, `--num-nodes`): Lightning's DDP or FSDP, one process (rank) per device.

Only global rank 0 tracks: it creates the MLflow run, logs the per-step loss and every metric, runs the final
evaluation on one device and writes the one checkpoint; the other ranks train and validate with an untracked run
(sweeps/tracking/store.py: UntrackedRun) and end after training. A rank knows its number before it creates anything,
from what its launcher put in its environment (`launched_rank`).

Who starts the ranks:
- one machine (`num_nodes` 1): Lightning's own launcher, which starts the other ranks by running the command line of
  the process that trains (`sys.argv`) again with LOCAL_RANK set. A fit on several devices is therefore trained in a
  child process `python -m sweeps.runs.run CONFIG RESULT` (`fit_in_child`), whatever started it (`xstilts fit`, or a
  sweep worker's phase): Lightning then starts copies of that child, never of `xstilts fit` (which would track a
  second run) or of a sweep worker (which would run a second sweep), and a process can train several such fits one
  after another (the launcher leaves LOCAL_RANK and the process group behind in the process it ran in). The ranks
  of one machine use Lightning's own environment even inside a SLURM allocation (a sweep worker of an array task is
  one SLURM task, not one per device).
- several machines: srun (one task per device) or torchrun start every rank of every machine with the same
  `xstilts fit … --num-nodes N --devices D`; each trains in its own process, rank 0 tracks.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from sweeps.config import RunConfig, TrainConfig

# the resumable-checkpoint folder rank 0 trains from, for the ranks Lightning starts (sweeps/runs/resume.py)
RESUME_FOLDER_ENV = "XSTILTS_RESUME_FOLDER"


def world_size(train: TrainConfig) -> int:
    return train.devices * train.num_nodes


def launched_rank(train: TrainConfig) -> int:
    """This process's global rank in the fit: torchrun's RANK, srun's SLURM_PROCID (several machines), Lightning's
    LOCAL_RANK (on one machine, offset by NODE_RANK otherwise); 0 for a fit on one device or a process not yet a
    rank (Lightning's launcher makes it rank 0)."""
    if world_size(train) == 1:
        return 0
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if train.num_nodes > 1 and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"])
    return int(os.environ.get("NODE_RANK", 0)) * train.devices + int(os.environ.get("LOCAL_RANK", 0))


def started_as_rank(train: TrainConfig) -> bool:
    """Whether a launcher (torchrun, srun, Lightning's) started this process as one rank of the fit: it trains in
    this process; otherwise a fit on several devices on one machine starts its ranks from a child (`fit_in_child`)."""
    return "LOCAL_RANK" in os.environ or "RANK" in os.environ or train.num_nodes > 1


def strategy(train: TrainConfig) -> dict:
    """Lightning Trainer arguments for the fit's devices."""
    from lightning.pytorch.plugins.environments import LightningEnvironment

    arguments = {"devices": train.devices, "num_nodes": train.num_nodes, "strategy": train.strategy}
    if world_size(train) > 1 and train.num_nodes == 1:
        arguments["plugins"] = [LightningEnvironment()]
    return arguments


def quiet_score_warnings() -> None:
    """No warning per score that it is logged without syncing it over the ranks: every rank scores the whole English
    validation set (sweeps/runs/run.py: _trainer), so their values are the same."""
    import warnings

    warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\(.*sync_dist=True\)")


def one_device(config: RunConfig) -> RunConfig:
    """`config` on one device: rank 0's final evaluation after a distributed fit."""
    return config.evolve(train=config.train.evolve(devices=1, num_nodes=1, strategy="auto"))


def fit_in_child(config: RunConfig) -> dict:
    """Train `config` in a child process (see the module's docstring); its RunResult's fields. The child's one-line
    error is raised again here, as the same kind: an input error, a failed run, the store out of reach, or SIGTERM."""
    from sweeps.children import start_group, stop_group
    from sweeps.runs.preemption import Terminated
    from sweeps.tracking.faults import TrackingUnavailable
    from sweeps.tracking.store import RunFailed

    with tempfile.TemporaryDirectory(prefix="xstilts-ranks-") as tmp:
        request, answer = Path(tmp, "config.json"), Path(tmp, "result.json")
        request.write_text(config.model_dump_json())
        child = start_group([sys.executable, "-m", "sweeps.runs.run", str(request), str(answer)])
        try:
            child.wait()
        finally:  # SIGTERM or Ctrl-C here: the ranks save their checkpoint and end the run, then go
            stop_group(child, grace=120)
        outcome = json.loads(answer.read_text()) if answer.exists() else {
            "kind": "failed", "message": f"the ranks of the fit ended with status {child.returncode}"}
    kind, message = outcome.pop("kind"), outcome.pop("message", "")
    if kind == "finished":
        return outcome
    if kind == "preempted":
        raise Terminated()
    if kind == "unavailable":
        raise TrackingUnavailable(message)
    if kind == "input":
        raise ValueError(message)
    if outcome.get("run_id"):
        raise RunFailed(outcome["run_id"], RuntimeError(message))
    raise RuntimeError(message)


def outcome(error: BaseException | None, result=None) -> dict:
    """What a child that trained ranks reports to `fit_in_child`: how it ended, and the RunResult (a dataclass)."""
    from dataclasses import asdict

    from sweeps.runs.preemption import preempted
    from sweeps.tracking.faults import unavailable_in, unreachable
    from sweeps.tracking.store import RunFailed

    if error is None:
        return {"kind": "finished", **asdict(result)}
    if preempted(error):
        return {"kind": "preempted"}
    if unreachable(error):
        return {"kind": "unavailable", "message": str(unavailable_in(error) or error)}
    if isinstance(error, RunFailed):
        return {"kind": "failed", "message": str(error.cause) or type(error.cause).__name__, "run_id": error.run_id}
    kind = "input" if isinstance(error, ValueError | LookupError | OSError) else "failed"
    return {"kind": kind, "message": str(error) or type(error).__name__}
