"""Two sweep workers sharing their Optuna studies and their MLflow store in a real PostgreSQL 15 server:
`xstilts sweep EXP --workers 2 --storage postgresql://… --tracking-uri postgresql://…`. Every trial is drawn once
(distinct numbers, exactly the study's budget of finished trials) and logged once in MLflow."""

import itertools
import subprocess
import sys
from collections import Counter

import mlflow
import optuna
import pytest

from servers import postgres_missing, postgres_server
from sweeps.tracking.store import database_url

MISSING = postgres_missing()
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=MISSING or ""), pytest.mark.timeout(1500)]

EXPERIMENT = """\
name: shared
encoder: tiny-xlmr
data: {data_dir: fixtures, max_length: 48, max_train_examples: 120, max_eval_examples: 40, eval_splits: [test]}
budget: {trials: 3}
phases: {intermediate: [mnli], baseline: false, targets: [pawsx]}
train:
  intermediate: {lr: {low: 1.0e-4, high: 1.0e-3, log: true}, epochs: 1, batch_size: 16, eval_every: 4}
  target: {lr: {low: 1.0e-4, high: 1.0e-3, log: true}, epochs: 1, batch_size: 16, eval_every: 4}
"""
STUDIES = {"shared/intermediate/mnli", "shared/target/pawsx/from-mnli"}
TRIALS = 3
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.fixture
def postgres():
    with postgres_server() as server:
        yield server


def test_two_workers_on_postgres_draw_and_log_each_trial_once(tmp_path, postgres, tiny):
    storage, uri = postgres.create_database("optuna"), postgres.create_database("mlflow")
    assert storage.startswith("postgresql://") and uri.startswith("postgresql://")
    path = tmp_path / "shared.yaml"
    path.write_text(EXPERIMENT)
    done = subprocess.run([sys.executable, "-m", "sweeps.cli", "sweep", str(path), "--workers", "2",
                           "--storage", storage, "--tracking-uri", uri], cwd=tmp_path, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]

    trials = {s.study_name: optuna.load_study(study_name=s.study_name, storage=database_url(storage)).trials
              for s in optuna.get_all_study_summaries(database_url(storage))}
    assert set(trials) == STUDIES
    for name, study_trials in trials.items():
        numbers = [t.number for t in study_trials]
        assert len(numbers) == len(set(numbers))
        assert Counter(t.state in FINISHED for t in study_trials) == {True: TRIALS}, \
            (name, [(t.number, t.state.name) for t in study_trials])
    spans = [(t.datetime_start, t.datetime_complete) for ts in trials.values() for t in ts]
    assert any(a_start < b_end and b_start < a_end for (a_start, a_end), (b_start, b_end)
               in itertools.combinations(spans, 2)), "no two trials ran at the same time: not two workers"

    client = mlflow.MlflowClient(database_url(uri))
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id], max_results=10000)
    (parent,) = [r for r in runs if r.data.tags.get("xstilts.kind") == "sweep"]  # both workers found the same one
    trial_runs = [r for r in runs if r.data.tags.get("xstilts.kind") == "trial"]
    logged = Counter((r.data.tags["xstilts.study"], int(r.data.tags["xstilts.trial"])) for r in trial_runs)
    assert set(logged.values()) == {1}, logged
    assert set(logged) == {(name, t.number) for name, ts in trials.items() for t in ts}
    run_of = {(r.data.tags["xstilts.study"], int(r.data.tags["xstilts.trial"])): r for r in trial_runs}
    for name, study_trials in trials.items():
        for trial in study_trials:
            run = run_of[(name, trial.number)]
            assert trial.user_attrs["mlflow_trial_run_id"] == run.info.run_id
            assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert run.info.status == ("FINISHED" if trial.state == optuna.trial.TrialState.COMPLETE else "KILLED")
    finished = Counter(r.data.tags["xstilts.phase_key"] for r in runs
                       if r.data.tags.get("xstilts.kind") == "phase" and r.info.status == "FINISHED")
    assert finished and set(finished.values()) == {1}, finished
