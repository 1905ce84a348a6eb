"""Each research variant of sweeps/examples/ runs offline on the fixtures, and MLflow shows it really happened."""

import mlflow
import pytest
import torch

from sweeps.reporting.report import build
from training import sweep_example


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("variants")
    return f"sqlite:///{folder / 'mlflow.db'}", f"sqlite:///{folder / 'optuna.db'}", folder


sweep = sweep_example


def phase(runs, phase_name, task, started_from=None):
    found = [r for r in runs if r.data.tags.get("xstilts.phase") == phase_name and r.data.tags["xstilts.task"] == task
             and (started_from is None or r.data.tags["xstilts.started_from"] == started_from)]
    assert found, (phase_name, task, started_from)
    return found


def test_lora_trains_far_fewer_parameters_and_reports_side_by_side(store):
    _, full = sweep("tuning_full", store)
    _, lora = sweep("tuning_lora", store)
    full_run, lora_run = phase(full, "intermediate", "mnli")[0], phase(lora, "intermediate", "mnli")[0]
    assert int(lora_run.data.params["model.adapter_parameters"]) > 0
    assert int(lora_run.data.params["model.trainable_parameters"]) * 10 < \
        int(full_run.data.params["model.trainable_parameters"])
    report = build(["tuning_full", "tuning_lora"], store[0], store[2] / "tuning").get("markdown").read_text()
    assert "| tuning_full · mnli |" in report and "| tuning_lora · mnli |" in report


def test_mlm_phase_comes_first_with_whole_word_masking(store):
    _, runs = sweep("mlm", store)
    (mlm,) = phase(runs, "mlm", "mlm_text")
    assert mlm.data.params["data.whole_word_mask"] == "True"
    assert mlm.data.metrics["validation/en/perplexity"] > 1
    (intermediate,) = phase(runs, "intermediate", "mnli")
    assert intermediate.data.tags["xstilts.started_from_run_id"] == mlm.info.run_id


def head_weights(uri, run_id):
    from safetensors.torch import load_file

    path = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/checkpoint/head.safetensors", tracking_uri=uri)
    return torch.cat([t.flatten() for _, t in sorted(load_file(path).items())])


def test_seeds_give_different_runs_and_the_report_shows_their_spread(store):
    _, runs = sweep("seeds", store)
    baseline = phase(runs, "target", "pawsx", started_from="none")
    assert sorted(r.data.tags["xstilts.seed"] for r in baseline) == ["0", "1"]
    heads = [head_weights(store[0], r.info.run_id) for r in baseline]  # different seeds, different trained weights
    assert not torch.equal(heads[0], heads[1])
    report = build("seeds", store[0], store[2] / "seeds")["markdown"].read_text()
    assert "±" in report
