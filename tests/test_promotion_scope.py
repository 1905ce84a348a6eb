"""Promotion is scoped: runs compete within one experiment (or an explicit list), each experiment's champion is a
version of its own registered model (`xstilts-<experiment>-<task>`), and promoting in one experiment leaves every
other experiment's alias where it was. Real MLflow (sqlite); the runs are tracked runs with an English validation
score and no checkpoint, so the versions are registered with --checkpoint-only (tests/test_champion_model.py
promotes a real fit as a pyfunc model)."""

import mlflow
import pytest

from sweeps.cli import main
from sweeps.config import PromoteConfig
from sweeps.tracking.registry import champions, promote
from sweeps.tracking.store import tracked_run

pytestmark = pytest.mark.timeout(300)


def fitted(uri: str, experiment: str, score: float) -> str:
    with tracked_run(uri, experiment, f"fit-{score}", {"xstilts.task": "panx", "xstilts.command": "fit"}) as run:
        run.log_metrics({"selection/score": score})
    return run.run_id


def scoped(*experiments: str, **settings) -> PromoteConfig:
    return PromoteConfig(experiments=experiments, checkpoint_only=True, **settings)


def alias(client, model: str) -> tuple[str, str]:
    version = client.get_model_version_by_alias(model, "champion")
    return str(version.version), version.run_id


def test_two_experiments_in_one_store_promote_independently(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    alpha_60, alpha_70 = fitted(uri, "alpha", 60.0), fitted(uri, "alpha", 70.0)
    beta_80, _ = fitted(uri, "beta", 80.0), fitted(uri, "beta", 50.0)

    # several experiments hold runs of the task: which compete must be said
    assert main(["promote", "panx", "--checkpoint-only", "--tracking-uri", uri]) == 2
    line = capsys.readouterr().err.strip()
    assert "several experiments (alpha, beta)" in line and "--experiment" in line and "\n" not in line
    assert client.search_registered_models() == []

    first = promote("panx", uri, scoped("alpha"))
    assert (first.model, first.run_id, first.score, first.moved) == ("xstilts-alpha-panx", alpha_70, 70.0, True)
    second = promote("panx", uri, scoped("beta"))  # beta's 80 is better than alpha's champion: it never competes
    assert (second.model, second.run_id, second.score) == ("xstilts-beta-panx", beta_80, 80.0)
    assert alias(client, "xstilts-alpha-panx") == ("1", alpha_70)

    alpha_90 = fitted(uri, "alpha", 90.0)
    moved = promote("panx", uri, scoped("alpha"))
    assert (moved.version, moved.run_id) == ("2", alpha_90)
    assert alias(client, "xstilts-beta-panx") == ("1", beta_80)  # untouched
    kept = promote("panx", uri, scoped("beta"))  # beta's champion is still beta's best, whatever alpha did
    assert (kept.moved, kept.version, kept.run_id) == (False, "1", beta_80)

    # an explicit list: both experiments' runs compete for one model of their own
    both = promote("panx", uri, scoped("alpha", "beta"))
    assert (both.model, both.run_id) == ("xstilts-alpha+beta-panx", alpha_90)
    assert alias(client, "xstilts-alpha-panx") == ("2", alpha_90) and alias(client, "xstilts-beta-panx") == \
        ("1", beta_80)
    assert {r["model"]: r["run_id"] for r in champions(uri, ("beta",))} == \
        {"xstilts-beta-panx": beta_80, "xstilts-alpha+beta-panx": alpha_90}
    assert alpha_60 not in {r["run_id"] for r in champions(uri)}

    # with a name shared by the experiments, the champion is still chosen among the named experiment's runs only
    shared = promote("panx", uri, scoped("beta", model_name="shared-{task}"))
    assert (shared.model, shared.run_id) == ("shared-panx", beta_80)
    assert promote("panx", uri, scoped("alpha", model_name="shared-{task}")).run_id == alpha_90
    assert promote("panx", uri, scoped("beta", model_name="shared-{task}")).run_id == beta_80


def test_one_experiment_holding_the_task_is_the_scope(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    best = fitted(uri, "only", 55.0)
    with tracked_run(uri, "other", "an-evaluation", {"xstilts.task": "panx", "xstilts.command": "evaluate"}):
        pass  # not a fit: this experiment holds no candidate
    assert main(["promote", "panx", "--checkpoint-only", "--tracking-uri", uri]) == 0
    assert f"promoted models:/xstilts-only-panx@champion = version 1 (run {best}" in capsys.readouterr().out
    assert main(["promote", "panx", "--experiment", "other", "--checkpoint-only", "--tracking-uri", uri]) == 2
    assert "no finished fit run of task 'panx' in experiment other" in capsys.readouterr().err
    assert main(["promote", "panx", "--experiment", "nosuch", "--tracking-uri", uri]) == 2
    assert "--experiment nosuch: no MLflow experiment of that name" in capsys.readouterr().err


@pytest.mark.parametrize("name, expected", [("m-{run}", "names {run}: only {task} and {experiment}"),
                                            ("xstilts-{experiment}", "must contain {task}"),
                                            ("a/{task}", "is not a safe name")])
def test_a_bad_model_name_is_one_line_and_exit_2(name, expected, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["promote", "panx", "--model-name", name, "--tracking-uri", uri]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("xstilts promote: error: --model-name") and expected in line and "\n" not in line
    assert not (tmp_path / "mlflow.db").exists()  # nothing created before the input was checked
