"""Mixtures of tasks: the sampling rates by their definition (computed here by hand from the fixture sizes), the
batches drawn per task against those rates, a real fit on a mixture of three formats, and the phase key."""

import math
import textwrap
from collections import Counter

import lightning as L
import mlflow
import pytest

from datamodules.mixture_data import MixtureBatches
from datamodules.mixtures import Mixture, rates, steps_per_epoch
from sweeps.config import DataConfig, RunConfig, TrainConfig

# the fixtures' training examples (datamodules/fixtures: 400 MNLI, 200 COPA, 400 SQuAD lines)
SIZES = {"mnli": 400, "copa": 200, "squad_v1": 400}
TASKS = tuple(SIZES)
ROOT2 = 2 ** 0.5
HAND = {  # p_i from the definitions in datamodules/mixtures.py, worked out by hand
    "proportional": {"mnli": 0.4, "copa": 0.2, "squad_v1": 0.4},
    # n^(1/2): 20, 10·√2, 20 -> divided by 40 + 10·√2
    "temperature": {"mnli": 20 / (40 + 10 * ROOT2), "copa": 10 * ROOT2 / (40 + 10 * ROOT2),
                    "squad_v1": 20 / (40 + 10 * ROOT2)},
    "equal": {"mnli": 1 / 3, "copa": 1 / 3, "squad_v1": 1 / 3},
}
MIXTURES = {"proportional": Mixture(tasks=TASKS), "equal": Mixture(tasks=TASKS, sampling="equal"),
            "temperature": Mixture(tasks=TASKS, sampling="temperature", temperature=2)}


@pytest.mark.parametrize("rule", list(HAND))
def test_rates_by_definition(rule):
    assert rates(MIXTURES[rule], SIZES) == pytest.approx(HAND[rule], abs=1e-12)


def test_a_cap_counts_a_large_task_as_the_cap():
    capped = Mixture(tasks=TASKS, max_examples_per_task=300)
    assert rates(capped, SIZES) == pytest.approx({"mnli": 300 / 800, "copa": 200 / 800, "squad_v1": 300 / 800})
    # with T = 2: 300^(1/2) = 10·√3 and 200^(1/2) = 10·√2
    hot = Mixture(tasks=TASKS, sampling="temperature", temperature=2, max_examples_per_task=300)
    root3 = 3 ** 0.5
    assert rates(hot, SIZES)["copa"] == pytest.approx(ROOT2 / (2 * root3 + ROOT2))
    assert steps_per_epoch(capped, SIZES, 16) == math.ceil(800 / 16)  # an epoch: the capped examples once


@pytest.mark.parametrize("rule", list(HAND) + ["capped"])
def test_batches_drawn_per_task_match_the_rates(rule):
    """20,000 batches, each task found from the indices of its batch. The count of task i is binomial(N, p_i): the
    draw is seeded, so the test is deterministic; 4 standard deviations (about 70 batches at p = 0.4) would be
    exceeded by chance once in 16,000 seeds, while a rate off by 0.01 shifts the count by 200."""
    mixture = Mixture(tasks=TASKS, max_examples_per_task=300) if rule == "capped" else MIXTURES[rule]
    expected = {"mnli": 0.375, "copa": 0.25, "squad_v1": 0.375} if rule == "capped" else HAND[rule]
    draws = 20_000
    sampler = MixtureBatches(list(SIZES.values()), [rates(mixture, SIZES)[t] for t in TASKS], 16, seed=3,
                             steps=draws)
    bounds = {"mnli": range(0, 400), "copa": range(400, 600), "squad_v1": range(600, 1000)}
    counts = Counter()
    first = {task: [] for task in TASKS}
    for batch in sampler.batches(0):
        task = next(t for t, span in bounds.items() if batch[0] in span)
        assert all(index in bounds[task] for index in batch)  # a batch holds one task's examples
        counts[task] += 1
        if counts[task] <= math.ceil(SIZES[task] / 16):
            first[task] += batch
    for task in TASKS:
        p = expected[task]
        assert abs(counts[task] - draws * p) <= 4 * math.sqrt(draws * p * (1 - p)), (task, counts)
        assert sorted(first[task]) == list(bounds[task])  # every example once before any repeats
    assert sampler.batches(0) == sampler.batches(0) and sampler.draws(0) != sampler.draws(1)


class BatchesPerTask(L.Callback):
    def __init__(self):
        self.counts, self.losses = Counter(), {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.counts[batch["task"]] += 1
        self.losses.setdefault(batch["task"], []).append(float(outputs["loss"]))


def test_a_mixture_of_three_formats_trains_every_task(tmp_path, tracking_uri):
    """MNLI (classification), COPA (multiple choice), SQuAD (span QA): one fit, one head each; the batches each task
    trained on are the sampler's draws for those rates, the tags carry the rates, and the selection score is the mean
    of the tasks' English validation metrics."""
    from sweeps.runs.run import fit

    tasks_file = tmp_path / "tasks.yaml"
    tasks_file.write_text(textwrap.dedent("""\
        mix3:
          mixture: {tasks: [mnli, copa, squad_v1], sampling: temperature, temperature: 2, max_examples_per_task: 300}
    """))
    counter = BatchesPerTask()
    config = RunConfig(task="mix3", encoder="tiny-xlmr", tracking_uri=tracking_uri,
                       data=DataConfig(data_dir="fixtures", tasks_files=(str(tasks_file),), max_length=32,
                                       doc_stride=8, max_eval_examples=16, eval_splits=("validation",)),
                       train=TrainConfig(lr=1e-3, epochs=1, batch_size=16, eval_batch_size=32, seed=5))
    result = fit(config, callbacks=[counter])

    root3 = 3 ** 0.5
    hand = {"mnli": root3 / (2 * root3 + ROOT2), "copa": ROOT2 / (2 * root3 + ROOT2),
            "squad_v1": root3 / (2 * root3 + ROOT2)}
    steps = math.ceil((300 + 200 + 300) / 16)
    reference = Counter(MixtureBatches([0, 0, 0], [hand[t] for t in TASKS], 16, seed=5, steps=steps).draws(0))
    assert dict(counter.counts) == {task: reference[i] for i, task in enumerate(TASKS)}
    assert all(counter.counts[task] > 0 and all(map(math.isfinite, counter.losses[task])) for task in TASKS)

    run = mlflow.MlflowClient(tracking_uri).get_run(result.run_id)
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["xstilts.mixture.tasks"] == "mnli,copa,squad_v1" and tags["xstilts.mixture.sampling"] == "temperature"
    assert float(tags["xstilts.mixture.temperature"]) == 2 and tags["xstilts.mixture.max_examples_per_task"] == "300"
    for task in TASKS:
        assert float(tags[f"xstilts.mixture.rate.{task}"]) == pytest.approx(hand[task], abs=1e-6)
        assert int(params[f"mixture.examples.{task}"]) == SIZES[task]
    members = [metrics["val.mnli/en/accuracy"], metrics["val.copa/en/accuracy"], metrics["val.squad_v1/en/f1"]]
    assert metrics["validation/en/score"] == pytest.approx(
        sum([metrics["validation.mnli/en/accuracy"], metrics["validation.copa/en/accuracy"],
             metrics["validation.squad_v1/en/f1"]]) / 3)
    assert result.selection_score == pytest.approx(sum(members) / 3)  # one validation, at the epoch's end

    # its encoder starts a later phase like any phase's
    later = fit(RunConfig(task="pawsx", encoder=str(tmp_path / "unused"), tracking_uri=tracking_uri).evolve(
        encoder=result.checkpoint_uri, data=DataConfig(data_dir="fixtures", max_length=32, max_train_examples=16,
                                                       max_eval_examples=8, languages=("en",)),
        train=TrainConfig(lr=1e-3, epochs=1, batch_size=8)))
    assert mlflow.MlflowClient(tracking_uri).get_run(later.run_id).info.status == "FINISHED"


def test_the_mixture_definition_is_part_of_its_phase_key(tmp_path):
    from sweeps.engine.experiment import load_experiment
    from sweeps.engine.pipeline import Start, phase_key

    keys = []
    for temperature in (2, 3):
        (tmp_path / "tasks.yaml").write_text(
            f"mix:\n  mixture: {{tasks: [mnli, copa], sampling: temperature, temperature: {temperature}}}\n")
        (tmp_path / "experiment.yaml").write_text(textwrap.dedent("""\
            name: mixed
            tasks_files: [tasks.yaml]
            data: {data_dir: fixtures}
            phases: {intermediate: [mix, mnli], targets: [pawsx]}
        """))
        experiment = load_experiment(tmp_path / "experiment.yaml")
        assert experiment.data_for("mix").mixture.temperature == temperature
        assert experiment.data_for("mnli").mixture is None
        keys.append(phase_key("intermediate", "mix", Start("tiny-xlmr", "tiny-xlmr"), TrainConfig(),
                              experiment.data_for("mix")))
    assert keys[0] != keys[1]
