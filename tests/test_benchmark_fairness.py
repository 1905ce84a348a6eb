"""The training benchmark compares like with like: over one epoch, xstilts and the plain PyTorch + transformers loop
of benchmarks/train.py see the same sub-tokens (same data, same tokenization and truncation), dynamic padding pads
far less than padding to the maximum length, every variant runs the steps it was asked for, and the median step
leaves out the warm-up. No timing is asserted here: speed is measured by the benchmark itself (benchmarks/README.md)."""

import sys
from pathlib import Path

import pytest
from training import FIXTURES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import train as benchmark  # noqa: E402

ROWS = 400  # PAN-X.en's training fixture
BATCH, STEPS, MAX_LENGTH = 16, 25, 64  # 25 x 16 = 400: exactly one epoch


@pytest.fixture(scope="module")
def one_epoch():
    base = {"model": "tiny-xlmr", "task": "panx", "steps": STEPS, "batch_size": BATCH, "max_length": MAX_LENGTH,
            "data_dir": str(FIXTURES), "train_rows": ROWS, "precision": "32-true", "num_workers": 0,
            "compile": False, "seed": 0}
    return {variant: benchmark.child({**base, "variant": variant})
            for variant in ("plain", "plain-pad-max", "xstilts", "xstilts-grouped")}


def test_every_variant_trains_the_same_subtokens(one_epoch):
    assert len((FIXTURES / benchmark.PLAIN_DATA["panx"][0]).read_text().splitlines()) == ROWS
    real = {variant: result["real_tokens"] for variant, result in one_epoch.items()}
    assert len(set(real.values())) == 1, real
    assert all(result["steps"] == STEPS for result in one_epoch.values())


def test_padding_to_the_maximum_pads_every_batch_to_it(one_epoch):
    assert one_epoch["plain-pad-max"]["padded_tokens"] == STEPS * BATCH * MAX_LENGTH
    dynamic = one_epoch["plain"]["padded_tokens"]
    assert one_epoch["xstilts"]["padded_tokens"] < one_epoch["plain-pad-max"]["padded_tokens"] / 2
    assert dynamic < one_epoch["plain-pad-max"]["padded_tokens"] / 2
    assert one_epoch["xstilts-grouped"]["padded_tokens"] < one_epoch["xstilts"]["padded_tokens"]
    result = one_epoch["xstilts"]
    assert result["padding_fraction"] == pytest.approx(1 - result["real_tokens"] / result["padded_tokens"])


def test_the_median_step_leaves_out_the_warm_up():
    counter = benchmark.BatchCounter(pad_id=1)
    counter.starts, counter.end = [0, 1, 3, 6, 10, 15, 21, 28], 36  # steps of 1, 2, ..., 8 s
    assert benchmark.WARMUP_STEPS == 5
    assert counter.median_step_s() == 7  # the median of 6, 7 and 8


def test_the_whole_run_benchmark_has_both_sides_do_the_same_work(tmp_path):
    # benchmarks/whole_run.py: the same validations, the same evaluated sets, predictions and checkpoint logged by both
    import mlflow

    import whole_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = {"model": "tiny-xlmr", "steps": 4, "batch_size": 16, "eval_every": 2, "max_length": 64,
              "data_dir": str(FIXTURES), "languages": ["en", "de", "fr"], "epochs": 1, "seed": 0, "tracking_uri": uri}
    plain, ours = whole_run.run_plain(params), whole_run.run_xstilts(params)
    assert plain["evaluated_sets"] == ours["evaluated_sets"] == 6  # 3 languages x validation, test
    client = mlflow.MlflowClient(uri)
    logged = {}
    for experiment in ("whole-run-plain", "whole-run"):
        (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        validations = [m for key in run.data.metrics
                       if key.endswith("/en/f1") and not key.startswith(("test", "validation"))
                       for m in client.get_metric_history(run.info.run_id, key)]
        predictions = {f"{split.path.rsplit('/', 1)[-1]}/{file.path.rsplit('/', 1)[-1]}"
                       for split in client.list_artifacts(run.info.run_id, "predictions/panx")
                       for file in client.list_artifacts(run.info.run_id, split.path)}
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        logged[experiment] = (len(validations), predictions, "checkpoint" in artifacts)
    assert logged["whole-run-plain"] == logged["whole-run"]
    assert logged["whole-run"][0] == 2 and len(logged["whole-run"][1]) == 6 and logged["whole-run"][2]
