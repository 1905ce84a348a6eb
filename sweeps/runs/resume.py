"""Resumable fits: a Lightning checkpoint of the whole training state (weights, optimizer, scheduler, loop progress,
the training loader's position, callbacks' state) every N steps or M minutes and on SIGTERM, in a folder named by
the run's configuration, so that the same fit started again — by hand, by SLURM's requeue, or as a sweep's retried
trial — continues from it and ends as the uninterrupted fit would have.

Determinism across a resume: each epoch's batch order is a function of (seed, epoch) (datamodules/resumable.py),
and the global random generators are seeded from (seed, epoch, batch) before every training batch, so the dropout
of each batch does not depend on what ran before it in the process. (A masked-LM batch's masking happens when the
batch is collated, before that: a resumed MLM phase masks its first batch differently.)

SIGTERM: Lightning's handler stops training after the current batch (and a validation due then); this module's
callback saves a checkpoint there, and the run ends KILLED, tagged `xstilts.interrupted`, with the checkpoint also
uploaded as the run's `resume/` artifact; the command exits with status 143 (preemption.PREEMPTED), which a sweep's
retry and schedulers take for a preemption. Outside a fit (loading data, evaluating), SIGTERM raises
`preemption.Terminated` (also 143), so the run is still ended; after training (testing, saving) the run is also
tagged and its last periodic checkpoint uploaded. A SIGTERM inside a validation, or right after an epoch's last
batch and its validation, keeps the last periodic checkpoint. SIGKILL loses the steps since the last periodic
checkpoint, and no more: a checkpoint becomes the one to resume from once the metrics logged before it are in the
store (or its spool).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import lightning as L

from sweeps.runs import preemption
from sweeps.runs.distributed import RESUME_FOLDER_ENV

log = logging.getLogger(__name__)
ENV_CHECKPOINT_DIR = "XSTILTS_CHECKPOINT_DIR"
LAST = "last.ckpt"
STATE = "state.json"


def checkpoint_root(explicit: str | None = None) -> Path:
    """--checkpoint-dir, else $XSTILTS_CHECKPOINT_DIR, else <xstilts cache>/resume."""
    from lightning_modules.encoders import cache_folder

    return cache_folder("resume", explicit, ENV_CHECKPOINT_DIR)


def resume_key(params: dict) -> str:
    """A fit's identity: its task, encoder, data and training settings (what a retry repeats exactly)."""
    content = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(content.encode()).hexdigest()[:24]


class ResumeFolder:
    """The folder of one fit configuration's checkpoints, held (flock) by the process training it: a second process
    running the same configuration at the same time trains from scratch in a folder of its own.

    The ranks other than 0 of a distributed fit (`held=False`) only read the folder rank 0 holds: the one it named
    in their environment (sweeps/runs/distributed.py), else the configuration's (on a shared disk across machines)."""

    def __init__(self, root: Path, key: str, held: bool = True):
        self.key = key
        self.folder = root / key
        if not held:
            self.folder, self._lock = Path(os.environ.get(RESUME_FOLDER_ENV) or self.folder), None
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = (self.folder / "lock").open("a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self.folder = root / f"{key}-{os.getpid()}"
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock = (self.folder / "lock").open("a")
            log.warning("another process trains configuration %s: this one starts afresh in %s", key, self.folder)

    @property
    def last(self) -> Path:
        return self.folder / LAST

    def state(self) -> dict | None:
        """{run_id, step, saved_at} of the checkpoint to resume from, or None."""
        path = self.folder / STATE
        return json.loads(path.read_text()) if self.last.exists() and path.exists() else None

    def fetch(self, client, experiment_ids: list[str]) -> None:
        """No checkpoint here: take the one an interrupted run of the same configuration uploaded (another machine)."""
        if self.last.exists() or not experiment_ids:
            return
        query = (f"tags.`xstilts.resume_key` = '{self.key}' and attributes.status = 'KILLED' "
                 f"and tags.`xstilts.resume_step` != ''")
        found = client.search_runs(experiment_ids, query, order_by=["attributes.start_time DESC"], max_results=1)
        if found:
            downloaded = Path(client.download_artifacts(found[0].info.run_id, "resume", str(self.folder / "download")))
            for item in downloaded.iterdir():
                if (self.folder / item.name).is_dir():
                    shutil.rmtree(self.folder / item.name)
                os.replace(item, self.folder / item.name)
            shutil.rmtree(self.folder / "download", ignore_errors=True)
            log.warning("resuming from the checkpoint of run %s (step %s)", found[0].info.run_id,
                        found[0].data.tags.get("xstilts.resume_step"))

    def upload_files(self) -> list[Path]:
        return [p for p in self.folder.rglob("*") if p.is_file() and p.name != "lock" and p.suffix != ".partial"]

    def clear(self) -> None:
        """The fit finished: nothing to resume."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.release()

    def release(self) -> None:
        if self._lock is not None and not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()


class ResumableCheckpoints(L.Callback):
    """Saves the full training state into `folder` every `every_steps` optimizer steps or `every_minutes` minutes
    (each when set) and on SIGTERM; seeds the random generators from (seed, epoch, batch) before every batch."""

    def __init__(self, folder: ResumeFolder, run, seed: int, every_steps: int | None = None,
                 every_minutes: float | None = None):
        self.folder, self.run, self.seed = folder, run, seed
        self.every_steps, self.every_minutes = every_steps, every_minutes
        self._last_step, self._last_time = 0, time.monotonic()
        self._pending = False
        self._unpublished: int | None = None
        self.saved_step: int | None = None
        self._trainer, self._loader_state = None, None

    # The training loader's position travels in this callback's state: Lightning restores a loader's own state only
    # when it builds the loader after the restore, and TaskModule.configure_optimizers builds it before (to count
    # the training steps).
    def setup(self, trainer, module, stage) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict:
        loader = self._trainer.train_dataloader if self._trainer is not None else None
        return {"loader": loader.state_dict()} if hasattr(loader, "state_dict") else {}

    def load_state_dict(self, state: dict) -> None:
        self._loader_state = state.get("loader")

    def on_train_start(self, trainer, module) -> None:
        loader = trainer.train_dataloader
        if self._loader_state is not None and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(self._loader_state)  # before its first batch is drawn
        self._loader_state = None

    def on_fit_start(self, trainer, module) -> None:
        preemption.fitting = True
        self._last_step, self._last_time = trainer.global_step, time.monotonic()

    def on_fit_end(self, trainer, module) -> None:
        preemption.fitting = False

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        from lightning.fabric.utilities.seed import seed_everything

        self.publish(trainer)
        seed = (self.seed * 1_000_003 + trainer.current_epoch * 100_003 + batch_idx) % 2 ** 32
        seed_everything(seed, verbose=False)

    def _due(self, trainer) -> bool:
        steps = trainer.global_step - self._last_step
        if self.every_steps and steps >= self.every_steps:
            return True
        return bool(self.every_minutes and steps and time.monotonic() - self._last_time >= 60 * self.every_minutes)

    @staticmethod
    def _validation_follows(trainer) -> bool:
        """Whether Lightning validates right after this batch: a checkpoint is then saved after the validation (one
        saved before it would skip that validation on resume)."""
        if not trainer.num_val_batches or not any(trainer.num_val_batches):
            return False
        interval = trainer.val_check_batch
        if trainer.check_val_every_n_epoch is None and isinstance(interval, int):
            return (trainer.fit_loop.total_batch_idx + 1) % interval == 0
        return trainer.is_last_batch

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            return  # training is over: nothing to resume
        # after a SIGTERM Lightning stops once this batch (and a validation due now) is done: save it here. Rank 0
        # decides for all ranks of a distributed fit (every rank takes part in writing a checkpoint)
        if trainer.strategy.broadcast(self._pending or trainer.received_sigterm or self._due(trainer)):
            self._pending = self._validation_follows(trainer)
            if not self._pending:
                self.save(trainer, publish=False)  # this batch's metrics are logged after this hook

    def on_validation_end(self, trainer, module) -> None:
        # a checkpoint saved after an epoch's last batch and its validation resumes with the wrong batch count
        # (Lightning 2.6): that one waits for the next batch
        if self._pending and not trainer.sanity_checking and not trainer.is_last_batch:
            self._pending = False
            self.save(trainer)

    def on_train_epoch_end(self, trainer, module) -> None:
        self.publish(trainer)

    def on_exception(self, trainer, module, exception) -> None:
        preemption.fitting = False
        self.publish(trainer)
        # a SIGTERM during a validation (half done, it cannot be resumed) or after an epoch's last validation keeps
        # the last checkpoint
        if (preemption.preempted(exception) and trainer.training and not trainer.validating
                and not trainer.is_last_batch and self.saved_step != trainer.global_step):
            self.save(trainer)

    def save(self, trainer, publish: bool = True) -> None:
        """Write the training state; it becomes the one to resume from when published."""
        trainer.save_checkpoint(self._partial)  # every rank calls it; rank 0 writes it
        self._last_step, self._last_time = trainer.global_step, time.monotonic()
        self.saved_step = self._unpublished = trainer.global_step
        if publish:
            self.publish(trainer)

    @property
    def _partial(self) -> Path:
        return self.folder.last.with_suffix(".partial")

    def publish(self, trainer) -> None:
        """Make the last saved state the one to resume from, once every metric logged before it is in the store: a
        process killed after this loses no logged step that its resumed run would not log again."""
        if self._unpublished is None:
            return
        step, self._unpublished = self._unpublished, None
        if not trainer.is_global_zero:
            return
        self.run.drain()
        os.replace(self._partial, self.folder.last)
        state = {"run_id": self.run.run_id, "step": step, "saved_at": time.time()}
        (self.folder.folder / STATE).write_text(json.dumps(state))
        log.info("resumable checkpoint at step %d: %s", step, self.folder.last)



def every(steps: int | None, minutes: float | None) -> tuple[int | None, float | None]:
    """The checkpoint intervals: given, else $XSTILTS_CHECKPOINT_EVERY_STEPS / _MINUTES, else every 30 minutes."""
    if steps is None and os.environ.get("XSTILTS_CHECKPOINT_EVERY_STEPS"):
        steps = int(os.environ["XSTILTS_CHECKPOINT_EVERY_STEPS"])
    if minutes is None:
        minutes = float(os.environ.get("XSTILTS_CHECKPOINT_EVERY_MINUTES", 30))
    return steps or None, minutes or None


class Resume:
    """One fit's resumable state: where its checkpoints go, the one it starts from (if any), and its callback."""

    def __init__(self, run, params: dict, seed: int, checkpoint_dir: str | None = None,
                 every_steps: int | None = None, every_minutes: float | None = None, rank: int = 0):
        self.run = run
        self.folder = ResumeFolder(checkpoint_root(checkpoint_dir), resume_key(params), held=rank == 0)
        reachable = run.client is not None and run.offline is None
        if self.folder.state() is None and reachable:  # (an untracked run has no store: see UntrackedRun)
            try:
                self.folder.fetch(run.client, [run.client.get_run(run.run_id).info.experiment_id])
            except Exception as error:  # noqa: BLE001 - without it the fit starts from step 0, as it would anyway
                log.warning("no checkpoint fetched from the store: %s", error)
        self.resumed = self.folder.state()
        if self.resumed is None and rank == 0:  # what a fit that never reached a checkpoint left
            shutil.rmtree(self.folder.folder / "selection", ignore_errors=True)
        tags = {"xstilts.resume_key": self.folder.key}
        if self.resumed is not None:
            tags.update({"xstilts.resumed_from_run_id": self.resumed["run_id"],
                         "xstilts.resumed_from_step": self.resumed["step"]})
            log.warning("resuming at step %d from %s", self.resumed["step"], self.folder.last)
        run.set_tags(tags)
        steps, minutes = every(every_steps, every_minutes)
        self.callback = ResumableCheckpoints(self.folder, run, seed, steps, minutes)

    @property
    def ckpt_path(self) -> str | None:
        return str(self.folder.last) if self.resumed is not None else None

    def selection_folder(self) -> Path:
        return self.folder.folder

    def interrupted(self) -> None:
        """After a SIGTERM: tag the run, and upload the checkpoint for a retry on another machine."""
        state = self.folder.state()
        tags = {"xstilts.interrupted": "SIGTERM"}
        if state is not None:
            tags["xstilts.resume_step"] = state["step"]
        self.run.set_tags(tags)
        if state is not None:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="xstilts-resume-") as staging:
                for path in self.folder.upload_files():
                    target = Path(staging) / path.relative_to(self.folder.folder)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(path, target)
                    except OSError:
                        shutil.copy2(path, target)
                self.run.log_artifacts(Path(staging), "resume")
        self.folder.release()

    def finished(self) -> None:
        self.folder.clear()
