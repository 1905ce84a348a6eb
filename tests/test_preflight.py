"""Preflight of a whole experiment: a paper-grid-shaped sweep (nine intermediate tasks, nine targets) whose ninth
intermediate task has no local data fails before anything is created in MLflow or Optuna; the same experiment with
all its data passes `xstilts sweep --check` and still creates nothing."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from training import FIXTURES

PAPER_GRID = Path(__file__).resolve().parents[1] / "sweeps" / "paper_grid.yaml"


def paper_grid_on(data_dir: Path, folder: Path, mlm: bool = False) -> Path:
    """sweeps/paper_grid.yaml on the tiny model and local files: same phases, targets and search spaces; `mlm`: with
    its optional MLM phase switched on (the commented `mlm:` line)."""
    text = PAPER_GRID.read_text()
    if mlm:
        assert "  # mlm: wikipedia_mlm\n" in text
        text = text.replace("  # mlm: wikipedia_mlm\n", "  mlm: wikipedia_mlm\n")
    grid = yaml.safe_load(text)
    grid["encoder"] = "tiny-xlmr"
    grid["data"] = {**grid["data"], "data_dir": str(data_dir)}
    for kind in ("mlm", "intermediate", "target"):
        grid["train"][kind]["precision"] = "32-true"
    path = folder / "paper_grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def sweep_check(path: Path, folder: Path):
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sweeps.cli", "sweep", str(path), "--check", "--tracking-uri",
                           f"sqlite:///{folder / 'mlflow.db'}", "--storage", f"sqlite:///{folder / 'optuna.db'}"],
                          cwd=folder, capture_output=True, text=True, timeout=600)
    return done, time.perf_counter() - started


def test_paper_grid_with_one_missing_data_set_fails_its_preflight_creating_nothing(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(FIXTURES, data, ignore=shutil.ignore_patterns("ccgbank", "*.py", "__pycache__"))
    path = paper_grid_on(data, tmp_path)
    done, seconds = sweep_check(path, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "task 'ccg'" in line and "ccgbank/default/train" in line, line
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()
    print(f"preflight failed on the missing ccg data in {seconds:.1f} s")


def test_paper_grid_with_all_its_data_passes_the_check_and_creates_nothing(tmp_path):
    path = paper_grid_on(FIXTURES, tmp_path, mlm=True)  # the optional MLM phase too: 18 phase tasks and Wikipedia
    done, seconds = sweep_check(path, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "preflight passed: experiment paper_grid: 19 phase tasks" in done.stdout, done.stdout
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()
    print(f"preflight of the paper grid passed in {seconds:.1f} s")
