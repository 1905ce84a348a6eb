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


def test_paper_grid_plan_counts_its_studies_trials_and_steps_creating_nothing(tmp_path):
    """`--plan` of the paper grid: 9 intermediate studies x 3 trials, 70 target trainings (MLQA's trained once with
    XQuAD's: same SQuAD v1.1 training from the same start), 20 retrieval evaluations; a target's optimizer steps from
    its training data size (XNLI trains on MNLI: 2 epochs of batches of 4, one step per 8 batches)."""
    import math

    path = paper_grid_on(FIXTURES, tmp_path)
    done = subprocess.run([sys.executable, "-m", "sweeps.cli", "sweep", str(path), "--plan", "--throughput", "100",
                           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                           "--storage", f"sqlite:///{tmp_path / 'optuna.db'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("paper_grid/")]
    by_name = {row[0]: row for row in rows}
    assert len(rows) == 99
    intermediate = [r for r in rows if "/intermediate/" in r[0]]
    assert len(intermediate) == 9 and {r[1] for r in intermediate} == {"3"}
    assert all(r[4] == "≤" for r in intermediate)  # epochs searched over [1, 2, 3] with a continuous lr: a bound
    retrieval = [r for r in rows if "/bucc2018/" in r[0] or "/tatoeba/" in r[0]]
    assert len(retrieval) == 20 and all("evaluation only" in " ".join(r) for r in retrieval)
    trained = [r for r in rows if "/target/" in r[0] and r not in retrieval]
    assert len(trained) == 70 and {r[1] for r in trained} == {"1"}
    shared = [r for r in trained if "trained once with" in " ".join(r)]
    assert sorted(r[0] for r in shared) == sorted(r[0] for r in trained if "/mlqa/" in r[0])
    assert all(" ".join(r).count("/target/xquad/") for r in shared)
    mnli = len((FIXTURES / "nyu-mll" / "glue" / "mnli" / "train.jsonl").read_text().splitlines())
    assert by_name["paper_grid/target/xnli/from-none"][4] == str(math.ceil(math.ceil(mnli / 4) / 8) * 2)
    assert "new: 117 trials" in done.stdout and "GPU-hours" in done.stdout
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()
