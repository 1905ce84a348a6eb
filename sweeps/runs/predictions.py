"""Where a run's per-example predictions go: a table per evaluation set in the MLflow run
(predictions/<task>/<split>/<lang>.parquet, lightning_modules/predictions.py) and, when asked, the XTREME submission
file of each language (sweeps/reporting/submission.py)."""

from __future__ import annotations

from pathlib import Path


def prediction_sink(tables, task, submission_dir: str | Path | None = None):
    """The TaskModule's `on_predictions` for a run of `task`; `tables`: the run's `Run.tables()` block."""
    from lightning_modules.predictions import table_path, to_frame
    from sweeps.reporting import submission

    split = submission.submission_split(task)

    def sink(eval_set, records: list[dict]) -> None:
        tables.add(to_frame(records), table_path(task.name, eval_set.split, eval_set.lang))
        if submission_dir is not None and eval_set.task.name == task.name and eval_set.split == split:
            submission.write(submission_dir, task, eval_set.lang, records)
    return sink
