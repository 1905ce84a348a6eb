"""What a run prints while it works: one progress line per run on stderr, and each third-party warning once.

The progress line (step, share done, time left, the English validation score) is printed at every validation and
at least every `PROGRESS_SECONDS` while training; on a terminal it rewrites itself, elsewhere (a log file, a
cluster job) each is a plain line. It replaces Lightning's progress bar, which redraws many times a second.

Libraries repeat themselves per trial: Lightning builds a new Trainer (and warns again, e.g. about few DataLoader
workers), transformers and MLflow log the same lines for every model they load. `once_per_process` shows each
distinct warning and each distinct log line of these libraries once per process.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings

import lightning as L

PROGRESS_SECONDS = 30.0
LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "optuna",
                   "transformers", "mlflow", "peft", "datasets", "py.warnings")


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class ProgressLine(L.Callback):
    """`<label>: step 40/120 (33%), 1m10s, about 2m20s left, val/en/accuracy 71.3` on stderr."""

    def __init__(self, label: str, monitor: str | None, every: float = PROGRESS_SECONDS, stream=None):
        self.label, self.monitor, self.every = label, monitor, every
        self.stream = stream or sys.stderr
        self.started = self.last = 0.0
        self.score: float | None = None
        self.shown_step: int | None = None

    def on_train_start(self, trainer, module):
        self.started = self.last = time.monotonic()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if time.monotonic() - self.last >= self.every:
            self.show(trainer)

    def on_validation_end(self, trainer, module):
        value = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        if trainer.sanity_checking or value is None:
            return
        self.score = float(value)
        self.show(trainer)

    def on_train_end(self, trainer, module):
        if self.stream.isatty() or self.shown_step != trainer.global_step:  # not the last validation's line again
            self.show(trainer, final=True)

    def line(self, step: int, total: int, elapsed: float) -> str:
        parts = [f"step {step}/{total}" + (f" ({100 * step / total:.0f}%)" if total else ""), duration(elapsed)]
        if step and total > step:
            parts.append(f"about {duration(elapsed / step * (total - step))} left")
        if self.score is not None:
            parts.append(f"{self.monitor} {self.score:.1f}")
        return f"{self.label}: " + ", ".join(parts)

    def show(self, trainer, final: bool = False) -> None:
        self.last, self.shown_step = time.monotonic(), trainer.global_step
        total = trainer.estimated_stepping_batches
        total = int(total) if total != float("inf") else 0
        text = self.line(trainer.global_step, total, self.last - self.started)
        terminal = self.stream.isatty()
        self.stream.write(f"\r\033[K{text}" + ("\n" if final else "") if terminal else text + "\n")
        self.stream.flush()


class Once(logging.Filter):
    """Lets each distinct (logger, level, message) through once."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


ONCE = Once()
_shown: set[tuple[type, str]] = set()


def _show_once(show):
    def once(message, category, filename, lineno, file=None, line=None):
        key = (category, str(message))
        if key not in _shown:  # Python's own registry is reset whenever any library changes the filters
            _shown.add(key)
            show(message, category, filename, lineno, file, line)

    once.xstilts_once = True
    return once


def once_per_process() -> None:
    """Each warning (by category and text) and each library log line (by logger, level and text) shown once.
    Idempotent; called where a run or sweep starts, after the libraries have set up their loggers."""
    if not getattr(warnings.showwarning, "xstilts_once", False):
        warnings.showwarning = _show_once(warnings.showwarning)
    handlers = [logging.lastResort] + [h for name in ("", *LIBRARY_LOGGERS) for h in logging.getLogger(name).handlers]
    for handler in handlers:
        if handler is not None and ONCE not in handler.filters:
            handler.addFilter(ONCE)
