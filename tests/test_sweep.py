"""Acceptance of `xstilts sweep`: a real small sweep (tiny model, fixtures, real MLflow and Optuna stores in sqlite),
then the MLflow tree it leaves, the study plots, promotion to `champion`, evaluation of the champion, the report, and
a second run of the same command that trains nothing."""

import subprocess
import sys
from collections import Counter, defaultdict

import mlflow
import optuna
import pytest

EXPERIMENT = """\
name: {name}
encoder: tiny-xlmr
data: {{data_dir: fixtures, max_length: 48, max_train_examples: 120, max_eval_examples: 40, eval_splits: [test]}}
budget: {{trials: 2}}
phases: {{intermediate: [mnli], baseline: true, targets: {targets}}}
train:
  intermediate: {{lr: {{low: 1.0e-4, high: 1.0e-3, log: true}}, epochs: 1, batch_size: 16, eval_every: 4}}
  target: {{lr: {{low: 1.0e-4, high: 1.0e-3, log: true}}, epochs: 1, batch_size: 16, eval_every: 4}}
"""
NAME, TARGETS, TRIALS = "acceptance", ("pawsx", "panx"), 2
STUDIES = {f"{NAME}/intermediate/mnli"} | {f"{NAME}/target/{t}/from-{s}" for t in TARGETS for s in ("none", "mnli")}


def xstilts(*args, cwd, timeout=900):
    """Runs the real command line; fails the test with the command's output tail when it fails."""
    done = subprocess.run([sys.executable, "-m", "sweeps.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"xstilts {' '.join(map(str, args))}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def swept(tmp_path_factory, isolated_caches, tiny):
    folder = tmp_path_factory.mktemp("sweep")
    path = folder / "experiment.yaml"
    path.write_text(EXPERIMENT.format(name=NAME, targets=list(TARGETS)))
    uri, storage = f"sqlite:///{folder / 'mlflow.db'}", f"sqlite:///{folder / 'optuna.db'}"
    command = ("sweep", path, "--storage", storage, "--tracking-uri", uri)
    xstilts(*command, cwd=folder)
    client = mlflow.MlflowClient(uri)
    return {"folder": folder, "path": path, "uri": uri, "storage": storage, "command": command, "client": client,
            "experiment_id": client.get_experiment_by_name(NAME).experiment_id}


def all_runs(swept, query=""):
    return swept["client"].search_runs([swept["experiment_id"]], query, max_results=10000)


def by_kind(runs):
    groups = defaultdict(list)
    for run in runs:
        kind = run.data.tags.get("xstilts.kind", "untagged")
        groups[kind].append(run)
    return groups


def optuna_trials(storage):
    summaries = optuna.get_all_study_summaries(storage)
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).trials for s in summaries}


def test_parent_trial_phase_tree(swept):
    runs = by_kind(all_runs(swept))
    assert set(runs) == {"sweep", "trial", "phase"}, set(runs)
    (parent,) = runs["sweep"]
    assert parent.info.status == "FINISHED" and parent.data.tags["xstilts.sweep"] == NAME
    trials = optuna_trials(swept["storage"])
    assert set(trials) == STUDIES
    assert all(len(ts) == TRIALS and all(t.state == optuna.trial.TrialState.COMPLETE for t in ts)
               for ts in trials.values())

    phases_by_parent = defaultdict(list)
    for phase in runs["phase"]:
        phases_by_parent[phase.data.tags["mlflow.parentRunId"]].append(phase)
    phase_ids = {p.info.run_id: p for p in runs["phase"]}
    seen = set()
    for run in runs["trial"]:
        tags = run.data.tags
        assert run.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        for key in ("study", "trial", "phase", "task", "intermediate", "encoder", "seed"):
            assert tags.get(f"xstilts.{key}"), (key, tags)
        assert tags["xstilts.encoder"] == "tiny-xlmr" and tags["xstilts.seed"] == "0"
        seen.add((tags["xstilts.study"], int(tags["xstilts.trial"])))
        children = phases_by_parent[run.info.run_id]
        if tags["xstilts.reused_phase"] == "True":  # a phase of this configuration had been trained before
            assert children == [] and tags["xstilts.phase_run_id"] in phase_ids
        else:
            (phase,) = children
            assert phase.info.run_id == tags["xstilts.phase_run_id"] and phase.info.status == "FINISHED"
            assert phase.data.tags["xstilts.phase"] == tags["xstilts.phase"]
            assert phase.data.tags["xstilts.task"] == tags["xstilts.task"]
    # one trial run per Optuna trial, and the trial knows its run
    assert seen == {(name, t.number) for name, ts in trials.items() for t in ts}
    assert len(runs["trial"]) == len(seen)
    trial_run_ids = {r.info.run_id for r in runs["trial"]}
    assert {t.user_attrs["mlflow_trial_run_id"] for ts in trials.values() for t in ts} == trial_run_ids
    assert set(phases_by_parent) <= trial_run_ids  # every phase run sits under a trial run


def test_targets_start_from_a_finished_intermediate_phase(swept):
    phases = by_kind(all_runs(swept))["phase"]
    intermediate = {r.info.run_id: r for r in phases if r.data.tags["xstilts.phase"] == "intermediate"}
    assert len(intermediate) == TRIALS and all(r.info.status == "FINISHED" for r in intermediate.values())
    best = optuna.load_study(study_name=f"{NAME}/intermediate/mnli", storage=swept["storage"]).best_trial
    targets = [r for r in phases if r.data.tags["xstilts.phase"] == "target"]
    assert Counter((r.data.tags["xstilts.task"], r.data.tags["xstilts.started_from"]) for r in targets) == \
        {(t, s): TRIALS for t in TARGETS for s in ("none", "mnli")}
    for run in targets:
        started = run.data.tags["xstilts.started_from_run_id"]
        if run.data.tags["xstilts.started_from"] == "none":
            assert started == "" and run.data.tags["xstilts.start_encoder"] == "tiny-xlmr"
        else:  # the best intermediate trial's checkpoint
            assert started in intermediate and started == best.user_attrs["phase_run_id"]


def test_study_plots_are_artifacts_of_the_parent(swept):
    (parent,) = by_kind(all_runs(swept))["sweep"]
    client = swept["client"]
    folders = {f.path for f in client.list_artifacts(parent.info.run_id, "studies")}
    assert folders == {f"studies/{s.replace('/', '__')}" for s in STUDIES}
    for folder in folders:
        files = {f.path.rsplit("/", 1)[1]: f.file_size for f in client.list_artifacts(parent.info.run_id, folder)}
        assert files.get("optimization_history.png", 0) > 1000, (folder, files)
    assert "experiment.yaml" in {f.path for f in client.list_artifacts(parent.info.run_id)}


def test_promote_sets_one_champion_per_target_and_it_evaluates(swept):
    client, folder, uri = swept["client"], swept["folder"], swept["uri"]
    for target in TARGETS:
        out = xstilts("promote", target, "--tracking-uri", uri, cwd=folder)
        assert f"promoted models:/xstilts-{NAME}-{target}@champion" in out
        assert "kept" in xstilts("promote", target, "--tracking-uri", uri, cwd=folder)  # already the best
    models = {m.name: m for m in client.search_registered_models()}
    assert set(models) == {f"xstilts-{NAME}-{t}" for t in TARGETS}
    for target in TARGETS:
        model = models[f"xstilts-{NAME}-{target}"]
        assert list(model.aliases) == ["champion"]
        version = client.get_model_version_by_alias(model.name, "champion")
        fits = all_runs(swept, f"tags.`xstilts.task` = '{target}' and tags.`xstilts.command` = 'fit' "
                               "and attributes.status = 'FINISHED'")
        assert len(fits) == 2 * TRIALS  # from mnli and from none
        best = max(r.data.metrics["selection/score"] for r in fits)
        assert version.run_id in {r.info.run_id for r in fits if r.data.metrics["selection/score"] == best}
        assert float(version.tags["score"]) == best

    out = xstilts("evaluate", f"models:/xstilts-{NAME}-pawsx@champion", "--data-dir", "fixtures", "--max-length", "48",
                  "--max-eval-examples", "40", "--eval-splits", "test", "--tracking-uri", uri, cwd=folder)
    run_id = out.strip().rsplit("MLflow run ", 1)[1].split()[0]
    evaluation = client.get_run(run_id)
    assert evaluation.info.status == "FINISHED" and evaluation.data.tags["xstilts.task"] == "pawsx"
    assert evaluation.data.tags["xstilts.checkpoint_run_id"] == \
        client.get_model_version_by_alias(f"xstilts-{NAME}-pawsx", "champion").run_id
    assert "test/mean/accuracy" in evaluation.data.metrics


def test_report_is_written_and_logged_to_the_parent(swept):
    out_dir = swept["folder"] / "report"
    xstilts("report", swept["path"], "--out", out_dir, "--tracking-uri", swept["uri"], cwd=swept["folder"])
    markdown = (out_dir / "report.md").read_text()
    assert "| none |" in markdown and "| mnli |" in markdown and all(t in markdown for t in TARGETS)
    rows = (out_dir / "report.csv").read_text().splitlines()
    # per row (none, mnli): each target, then the XTREME and XTREME-R scores
    assert rows[0].startswith("row,target,mean") and len(rows) == 1 + 2 * (len(TARGETS) + 2)
    assert (out_dir / "heatmap.png").stat().st_size > 1000
    (parent,) = by_kind(all_runs(swept))["sweep"]
    logged = {f.path for f in swept["client"].list_artifacts(parent.info.run_id, "report")}
    assert logged == {"report/report.md", "report/report.csv", "report/heatmap.png"}


def test_second_run_trains_no_new_phase(swept):
    before = all_runs(swept)
    xstilts(*swept["command"], cwd=swept["folder"])
    after = all_runs(swept)
    assert len(after) == len(before)  # no new trial run, no new phase run
    finished = Counter(r.data.tags["xstilts.phase_key"] for r in after
                       if "xstilts.phase_key" in r.data.tags and r.info.status == "FINISHED")
    assert finished and set(finished.values()) == {1}, finished
    assert all(r.info.status == "FINISHED" for r in after)
    trials = optuna_trials(swept["storage"])
    assert {name: len(ts) for name, ts in trials.items()} == {s: TRIALS for s in STUDIES}  # budget kept
