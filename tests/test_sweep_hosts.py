"""Two "hosts" run the same sweep: two `xstilts sweep FILE` processes, each with its own working directory, caches
(empty at the start) and copy of the experiment file, sharing a real PostgreSQL 15 (Optuna's storage, and the MLflow
backend behind a real `mlflow server` with proxied artifacts). Grid: 2 intermediate tasks x 2 targets + the baseline.
Every study ends with exactly its budget of finished trials, one per slot; every phase configuration and every
training is FINISHED exactly once in MLflow; both hosts did work, at the same time; every checkpoint is downloadable
through the server (the other host's way to it) unless retention deleted it, none written to a host's local
folder."""

import itertools
import os
import subprocess
import sys
from collections import Counter

import mlflow
import optuna
import pytest

from servers import MlflowServer, postgres_missing, postgres_server
from sweeps.tracking.store import database_url

MISSING = postgres_missing()
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=MISSING or ""), pytest.mark.timeout(1800)]

EXPERIMENT = """\
name: hosts
encoder: tiny-xlmr
data: {data_dir: fixtures, max_length: 32, max_train_examples: 48, max_eval_examples: 16, eval_splits: [test]}
budget: {trials: 2}
phases: {intermediate: [mnli, qqp], baseline: true, targets: [pawsx, xnli]}
train:
  intermediate: {lr: {low: 1.0e-4, high: 1.0e-3, log: true}, epochs: 1, batch_size: 16}
  target: {lr: [1.0e-3, 3.0e-4], epochs: 1, batch_size: 16}
"""
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
# 2 intermediate studies, 2 targets from each of 3 starts (mnli, qqp, none)
STUDIES = {"hosts/intermediate/mnli", "hosts/intermediate/qqp"} | {
    f"hosts/target/{target}/from-{start}" for target in ("pawsx", "xnli") for start in ("mnli", "qqp", "none")}


def test_two_hosts_share_postgres_and_an_mlflow_server(tmp_path):
    with postgres_server() as postgres:
        storage = postgres.create_database("optuna")
        server = MlflowServer(tmp_path / "server", backend=database_url(postgres.create_database("mlflow")))
        (tmp_path / "server").mkdir()
        server.start()
        try:
            hosts = []
            for name in ("host-a", "host-b"):
                home = tmp_path / name
                home.mkdir()
                (home / "hosts.yaml").write_text(EXPERIMENT)
                environment = {**os.environ, "XSTILTS_CACHE": str(home / "cache"),
                               "HF_DATASETS_CACHE": str(home / "datasets")}
                log = (home / "sweep.log").open("w")
                hosts.append((home, subprocess.Popen(
                    [sys.executable, "-m", "sweeps.cli", "sweep", "hosts.yaml", "--storage", storage,
                     "--tracking-uri", server.address], cwd=home, env=environment, stdout=log,
                    stderr=subprocess.STDOUT)))
            for home, process in hosts:
                assert process.wait(timeout=1500) == 0, (home / "sweep.log").read_text()[-5000:]
            check_studies(database_url(storage))
            check_runs(mlflow.MlflowClient(server.address), tmp_path / "download")
            assert not list((tmp_path / "host-a").glob("mlruns")) and not list((tmp_path / "host-b").glob("mlruns"))
        finally:
            server.kill()


def check_studies(storage: str) -> None:
    studies = {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).trials
               for s in optuna.get_all_study_summaries(storage)}
    assert set(studies) == STUDIES
    for name, trials in studies.items():
        finished = [t for t in trials if t.state in FINISHED]
        assert sorted(t.user_attrs["slot"] for t in finished) == [0, 1], (name, [(t.number, t.state) for t in trials])
        params = [tuple(sorted(t.params.items())) for t in finished]
        assert len(set(params)) == 2, (name, params)  # no parameter set twice within a study
    spans = [(t.datetime_start, t.datetime_complete) for ts in studies.values() for t in ts if t.state in FINISHED]
    assert any(a_start < b_end and b_start < a_end for (a_start, a_end), (b_start, b_end)
               in itertools.combinations(spans, 2)), "no two trials ran at the same time"


def check_runs(client, download) -> None:
    runs = client.search_runs([client.get_experiment_by_name("hosts").experiment_id], max_results=10000)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if r.data.tags.get("xstilts.kind") == "sweep"]
    assert parent.info.status == "FINISHED"
    trials = [r for r in runs if r.data.tags.get("xstilts.kind") == "trial" and r.info.status == "FINISHED"]
    assert len(trials) == 2 * len(STUDIES)
    assert len({r.data.tags["xstilts.worker"] for r in trials}) == 2, "one host did all the work"
    phases = [r for r in runs if r.data.tags.get("xstilts.kind") == "phase" and r.info.status == "FINISHED"]
    assert set(Counter(r.data.tags["xstilts.phase_key"] for r in phases).values()) == {1}
    trained = [r for r in phases if not r.data.tags.get("xstilts.trained_in")]
    assert set(Counter(r.data.tags["xstilts.train_key"] for r in trained).values()) == {1}
    kept = [r for r in trained if r.data.tags.get("xstilts.checkpoint") != "deleted"]  # retention: train.keep best
    assert len(kept) >= len(STUDIES)  # each study's best at least
    for run in trained:
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri  # through the server
    for run in kept:
        folder = client.download_artifacts(run.info.run_id, "checkpoint", str(download / run.info.run_id))
        assert (download / run.info.run_id / "checkpoint" / "xstilts.json").exists(), folder
