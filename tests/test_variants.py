"""Each research variant of sweeps/examples/ runs offline on the fixtures, and MLflow shows it really happened."""

from pathlib import Path

import mlflow
import pytest
import torch

from sweeps.reporting.report import build
from sweeps.config import SweepConfig
from sweeps.engine.sweep import preflight, run_sweep

EXAMPLES = Path(__file__).resolve().parents[1] / "sweeps" / "examples"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("variants")
    return f"sqlite:///{folder / 'mlflow.db'}", f"sqlite:///{folder / 'optuna.db'}", folder


def sweep(name, store):
    uri, storage, _ = store
    settings = SweepConfig(storage=storage, tracking_uri=uri)
    run_sweep(preflight(str(EXAMPLES / f"{name}.yaml"), settings), settings)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name).experiment_id
    return client, client.search_runs([experiment], "tags.`xstilts.command` = 'fit'", max_results=1000)


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


def test_two_orders_start_their_second_phase_from_different_checkpoints(store):
    _, runs = sweep("order", store)
    second_of = {}
    for first, second in (("squad_v1", "mnli"), ("mnli", "squad_v1")):
        (run,) = phase(runs, "intermediate", second, started_from=first)
        first_run = phase(runs, "intermediate", first, started_from="none")[0]
        assert run.data.tags["xstilts.started_from_run_id"] == first_run.info.run_id
        second_of[first] = run
    assert second_of["squad_v1"].data.tags["xstilts.started_from_run_id"] != \
        second_of["mnli"].data.tags["xstilts.started_from_run_id"]
    assert {r.data.tags["xstilts.started_from"] for r in phase(runs, "target", "pawsx")} == \
        {"squad_v1>mnli", "mnli>squad_v1"}


def test_custom_domain_task_trains_with_its_metadata(store):
    _, runs = sweep("domain", store)
    (legal,) = phase(runs, "intermediate", "legal_nli")
    assert legal.data.tags["xstilts.task.domain"] == "legal"
    assert legal.data.tags["xstilts.task.difficulty"] == "adversarial"
    assert "legal_nli" in legal.data.params["data.train_sources"]
    assert phase(runs, "target", "pawsx", started_from="legal_nli")


def test_non_english_intermediate_and_single_language_target(store):
    _, runs = sweep("translated", store)
    (intermediate,) = phase(runs, "intermediate", "pawsx_translated")
    assert intermediate.data.tags["xstilts.train_language"] == "de"
    assert "val/de/accuracy" in intermediate.data.metrics
    for target in phase(runs, "target", "xnli"):
        languages = {k.split("/")[1] for k in target.data.metrics if k.startswith("test/") and "mean" not in k}
        assert languages == {"de"}


def test_mlm_phase_comes_first_with_whole_word_masking(store):
    _, runs = sweep("mlm", store)
    (mlm,) = phase(runs, "mlm", "mlm_text")
    assert mlm.data.params["data.whole_word_mask"] == "True"
    assert mlm.data.metrics["validation/en/perplexity"] > 1
    (intermediate,) = phase(runs, "intermediate", "mnli")
    assert intermediate.data.tags["xstilts.started_from_run_id"] == mlm.info.run_id


def test_model_size_is_a_sweep_dimension(store):
    _, runs = sweep("scale", store)
    sizes = {r.data.tags["xstilts.encoder"]: int(r.data.params["model.parameters"])
             for r in phase(runs, "target", "pawsx", started_from="none")}
    assert sizes["tiny-xlmr-large"] > 2 * sizes["tiny-xlmr"]
    assert all(r.data.params["train.gradient_checkpointing"] == "True" for r in runs)


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
