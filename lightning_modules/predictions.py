"""Per-example predictions as tables: the records a format's `predict` gives (formats/base.py), one table per task,
split and language, stored as Parquet (compressed, and shown by the MLflow UI as a table).

A record holds at least `gold`, `prediction` and `correct`, and the input it was predicted from (`input`, and
`context` for span QA); lists stay lists (tags, gold answers, ranked candidates). Tables are read back into the same
records, so a format's `score_predictions` on a table read from disk gives exactly the scores it gave in the run.
"""

from __future__ import annotations

import math
from pathlib import Path

ROOT = "predictions"
SUFFIX = ".parquet"


def table_path(task: str, split: str, lang: str) -> str:
    """Run-relative path of one table: predictions/<task>/<split>/<lang>.parquet."""
    return f"{ROOT}/{task}/{split}/{lang}{SUFFIX}"


def to_frame(records: list[dict]):
    import pandas as pd

    return pd.DataFrame.from_records(records)


def _plain(value):
    """A Parquet cell as the record held it: arrays back to lists, a missing number back to None."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def read_table(path: str | Path) -> list[dict]:
    import pandas as pd

    frame = pd.read_parquet(path)
    columns = list(frame.columns)
    return [{column: _plain(value) for column, value in zip(columns, row)}
            for row in frame.itertuples(index=False, name=None)]


def find_tables(folder: str | Path) -> dict[tuple[str, str, str], Path]:
    """(task, split, lang) -> table, for a folder holding `predictions/` or its contents (a run's artifacts)."""
    folder = Path(folder)
    if (folder / ROOT).is_dir():
        folder = folder / ROOT
    return {(path.parent.parent.name, path.parent.name, path.name.removesuffix(SUFFIX)): path
            for path in sorted(folder.glob(f"*/*/*{SUFFIX}"))}
