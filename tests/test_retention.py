"""Retention: a real small sweep that keeps every checkpoint, then `xstilts gc --keep best` removes exactly those no
later phase starts from and no study ranks best (the set worked out here from the sweep's structure and Optuna's
storage); later phases still start from the kept one, and a checkpoint a later phase needs but that was deleted is
trained again when a new study starts from it. `xstilts du` adds up what is on disk."""

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest

EXPERIMENT = """\
name: keeping
encoder: tiny-xlmr
data: {{data_dir: fixtures, max_length: 48, max_train_examples: 64, max_eval_examples: 24, eval_splits: [test]}}
budget: {{trials: 2}}
phases: {{intermediate: [mnli], baseline: false, targets: {targets}}}
train:
  intermediate: {{lr: {{low: 1.0e-4, high: 1.0e-3, log: true}}, epochs: 1, batch_size: 16, keep: {keep}}}
  target: {{lr: {{low: 1.0e-4, high: 1.0e-3, log: true}}, epochs: 1, batch_size: 16, keep: {keep}}}
"""
INTERMEDIATE, PAWSX = "keeping/intermediate/mnli", "keeping/target/pawsx/from-mnli"


def xstilts(*args, cwd):
    done = subprocess.run([sys.executable, "-m", "sweeps.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"xstilts {' '.join(map(str, args))}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


def on_disk(run) -> Path:
    return Path(run.info.artifact_uri.removeprefix("file://"))


def disk_bytes(folder: Path) -> int:
    return sum(os.path.getsize(Path(root, name)) for root, _, names in os.walk(folder) for name in names)


@pytest.fixture(scope="module")
def store(tmp_path_factory, isolated_caches, tiny):
    folder = tmp_path_factory.mktemp("retention")
    uri, storage = f"sqlite:///{folder / 'mlflow.db'}", f"sqlite:///{folder / 'optuna.db'}"

    def sweep(targets, keep="best"):
        path = folder / "experiment.yaml"
        path.write_text(EXPERIMENT.format(targets=list(targets), keep=keep))
        return xstilts("sweep", path, "--storage", storage, "--tracking-uri", uri, cwd=folder)

    client = mlflow.MlflowClient(uri)
    sweep(["pawsx"], keep="all")
    return {"folder": folder, "uri": uri, "storage": storage, "client": client, "sweep": sweep,
            "experiment_id": client.get_experiment_by_name("keeping").experiment_id}


def phases(store, query=""):
    where = "tags.`xstilts.kind` = 'phase'" + (f" and {query}" if query else "")
    return {r.info.run_id: r for r in store["client"].search_runs([store["experiment_id"]], where)}


def best_phase_run(store, study: str) -> str:
    return optuna.load_study(study_name=study, storage=store["storage"]).best_trial.user_attrs["phase_run_id"]


def test_gc_removes_exactly_the_checkpoints_not_kept_and_later_phases_start_from_the_kept(store):
    runs = phases(store)
    assert len(runs) == 4  # two intermediate trials, two pawsx trials from the best intermediate
    assert all((on_disk(r) / "checkpoint").is_dir() for r in runs.values())  # keep: all
    best_mnli, best_pawsx = best_phase_run(store, INTERMEDIATE), best_phase_run(store, PAWSX)
    expected = set(runs) - {best_mnli, best_pawsx}
    assert len(expected) == 2

    listed = xstilts("gc", "keeping", "--keep", "best", "--tracking-uri", store["uri"], cwd=store["folder"])
    assert set(re.findall(r"^keeping  .* run ([0-9a-f]{32})  store ", listed, re.M)) == expected
    assert all((on_disk(r) / "checkpoint").is_dir() for r in runs.values())  # a dry run deletes nothing
    xstilts("gc", "keeping", "--keep", "best", "--yes", "--tracking-uri", store["uri"], cwd=store["folder"])
    after = phases(store)
    for run_id, run in after.items():
        assert (on_disk(run) / "checkpoint").is_dir() == (run_id not in expected), run_id
        assert (run.data.tags.get("xstilts.checkpoint") == "deleted") == (run_id in expected)
        assert "test/en/accuracy" in run.data.metrics  # scores and predictions stay
    assert "nothing to delete" in xstilts("gc", "--keep", "best", "--tracking-uri", store["uri"], cwd=store["folder"])

    # a new target: the intermediate phase is reused, its kept checkpoint is where panx starts
    store["sweep"](["pawsx", "panx"])
    panx = phases(store, "tags.`xstilts.task` = 'panx'")
    assert len(panx) == 2
    assert {r.data.tags["xstilts.started_from_run_id"] for r in panx.values()} == {best_mnli}
    assert len(phases(store)) == 6  # pawsx and the intermediate study trained nothing again


def test_a_deleted_checkpoint_a_later_phase_needs_is_trained_again(store):
    from sweeps.tracking.retention import Doomed, delete, doomed

    client = store["client"]
    best_mnli = best_phase_run(store, INTERMEDIATE)
    experiment = client.get_experiment_by_name("keeping")
    # what later phases start from is never doomed, not even by keep: none
    assert best_mnli not in {d.run_id for d in doomed(client, experiment, INTERMEDIATE, keep="none")}
    # deleted anyway (a store cleaned by hand, or a tie Optuna broke the other way in another study)
    delete(client, store["uri"], [Doomed(best_mnli, "keeping", "intermediate mnli", 1, 0, "test")])
    before = phases(store)
    store["sweep"](["pawsx", "panx", "xnli"])  # a new target study needs it: it is trained again, once
    new = {k: v for k, v in phases(store).items() if k not in before}
    (retrained,) = [r for r in new.values() if r.data.tags["xstilts.phase"] == "intermediate"]
    assert retrained.data.tags["xstilts.retrained_for_checkpoint"] == best_mnli
    assert retrained.data.tags["xstilts.phase_key"] == before[best_mnli].data.tags["xstilts.phase_key"]
    assert (on_disk(retrained) / "checkpoint").is_dir()
    assert retrained.data.tags["xstilts.checkpoint"] == "best"
    xnli = [r for r in new.values() if r.data.tags["xstilts.task"] == "xnli"]
    assert len(xnli) == 2 and len(new) == 3  # pawsx and panx were reused: nothing else trained
    assert {r.data.tags["xstilts.started_from_run_id"] for r in xnli} == {retrained.info.run_id}


def test_du_adds_up_the_bytes_on_disk(store):
    from sweeps.tracking.retention import cached_folder, phase_label, usage

    client = store["client"]
    experiment = client.get_experiment_by_name("keeping")
    expected: dict[str, list[int]] = {}
    for run in client.search_runs([store["experiment_id"]], max_results=1000):
        row = expected.setdefault(phase_label(run), [0, 0, 0])
        row[0] += 1
        row[1] += disk_bytes(on_disk(run))
        row[2] += disk_bytes(cached_folder(run.info.run_id))
    found = {u.phase: [u.runs, u.store_bytes, u.cache_bytes] for u in usage(client, experiment)}
    assert found == expected
    assert found["intermediate mnli"][1] > 100_000  # its checkpoints are there
    out = xstilts("du", "keeping", "--tracking-uri", store["uri"], cwd=store["folder"])
    assert "target pawsx from mnli" in out and "total" in out


def test_du_and_delete_through_an_mlflow_server(tmp_path, isolated_caches, tiny):
    """A server's artifacts are listed and deleted through MLflow's client and artifact API, and the copy of a
    checkpoint downloaded into the cache is counted and removed with it."""
    from servers import mlflow_server

    from sweeps.cli import main
    from sweeps.tracking.artifacts import local_checkpoint
    from sweeps.tracking.retention import Doomed, cached_folder, delete, usage

    with mlflow_server(tmp_path) as server:
        assert main(["fit", "pawsx", "--data-dir", "fixtures", "--lr", "1e-3", "--epochs", "1", "--max-length", "48",
                     "--max-train-examples", "32", "--max-eval-examples", "16", "--eval-splits", "test",
                     "--experiment", "served", "--tracking-uri", server.address]) == 0
        client = mlflow.MlflowClient(server.address)
        experiment = client.get_experiment_by_name("served")
        (run,) = client.search_runs([experiment.experiment_id])
        run_id = run.info.run_id
        (stored,) = [p for p in (tmp_path / "artifacts").rglob(run_id) if p.is_dir()]  # the server's own folder
        local_checkpoint(f"runs:/{run_id}/checkpoint", server.address)  # downloaded into the cache
        (row,) = usage(client, experiment)
        assert (row.phase, row.runs) == ("fit", 1)
        assert row.store_bytes == disk_bytes(stored) and row.cache_bytes == disk_bytes(cached_folder(run_id)) > 0

        delete(client, server.address, [Doomed(run_id, "served", "fit", row.store_bytes, row.cache_bytes, "test")])
        assert client.list_artifacts(run_id, "checkpoint") == [] and not cached_folder(run_id).exists()
        assert not any(p.name == "checkpoint" for p in stored.rglob("*"))
        assert client.get_run(run_id).data.tags["xstilts.checkpoint"] == "deleted"
