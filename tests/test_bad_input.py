"""Bad input, over every command: exit code 2, one line on stderr naming the flag, key, file, row or field, the value
and what would be valid, and nothing created (no MLflow run, no registered model, no Optuna study). A failure after a
run started: exit code 1, the same one line, the run FAILED."""

import json
import shutil
import textwrap

import mlflow
import optuna
import pytest
from training import FIXTURES

from sweeps.cli import main

SECRET = "s3cret-pw"


def stores(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"


def created(tmp_path) -> list:
    """Everything the stores hold: runs, registered models, Optuna studies."""
    found = []
    if (tmp_path / "mlflow.db").exists():
        client = mlflow.MlflowClient(stores(tmp_path)[0])
        experiments = [e.experiment_id for e in client.search_experiments()]
        found += [r.info.status for r in client.search_runs(experiments)] if experiments else []
        found += [m.name for m in client.search_registered_models()]
    if (tmp_path / "optuna.db").exists():
        found += [s.study_name for s in optuna.get_all_study_summaries(stores(tmp_path)[1])]
    return found


def one_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def run(argv, tmp_path, capsys, code=2):
    assert main(argv) == code
    return one_line(capsys)


# ---------------------------------------------------------------------------------------------- fit: settings

FIT_SETTINGS = [
    (["--lr", "-1e-3"], ["--lr -1e-3", "greater than 0", "valid: a number > 0"]),
    (["--lr", "0"], ["--lr 0", "> 0"]),
    (["--lr", "abc"], ["--lr abc", "valid number"]),
    (["--lr", "2"], ["--lr 2", "<= 1"]),
    (["--epochs", "0"], ["--epochs 0", ">= 1"]),
    (["--epochs", "one"], ["--epochs one", "valid integer"]),
    (["--max-steps", "0"], ["--max-steps 0", "-1 (no limit) or at least 1"]),
    (["--batch-size", "0"], ["--batch-size 0", ">= 1"]),
    (["--eval-batch-size", "-4"], ["--eval-batch-size -4", ">= 1"]),
    (["--accumulate", "0"], ["--accumulate 0", ">= 1"]),
    (["--warmup-ratio", "2"], ["--warmup-ratio 2", "valid: a number >= 0 and < 1"]),
    (["--warmup-ratio", "-0.1"], ["--warmup-ratio -0.1", ">= 0"]),
    (["--weight-decay", "-1"], ["--weight-decay -1", ">= 0"]),
    (["--eval-every", "0"], ["--eval-every 0", ">= 1"]),
    (["--patience", "0"], ["--patience 0", ">= 1"]),
    (["--precision", "fp8"], ["--precision fp8", "bf16-mixed"]),
    (["--seed", "-1"], ["--seed -1", ">= 0"]),
    (["--tuning", "bogus"], ["--tuning bogus", "one of full, frozen_embeddings, lora, ia3"]),
    (["--lora-rank", "0"], ["--lora-rank 0", ">= 1"]),
    (["--devices", "0"], ["--devices 0", ">= 1"]),
    (["--num-nodes", "0"], ["--num-nodes 0", ">= 1"]),
    (["--strategy", "deepspeed"], ["--strategy deepspeed", "one of auto, ddp, fsdp"]),
    (["--max-length", "0"], ["--max-length 0", ">= 8"]),
    (["--max-length", "4"], ["--max-length 4", ">= 8"]),
    (["--doc-stride", "0"], ["--doc-stride 0", ">= 1"]),
    (["--mlm-probability", "1.5"], ["--mlm-probability 1.5", "< 1"]),
    (["--max-train-examples", "0"], ["--max-train-examples 0", ">= 1"]),
    (["--max-eval-examples", "-1"], ["--max-eval-examples -1", ">= 1"]),
    (["--num-workers", "-1"], ["--num-workers -1", ">= 0"]),
    (["--eval-splits", "dev"], ["--eval-splits", "'validation', 'test' or 'train'"]),
    (["--perturb-seed", "-3"], ["--perturb-seed -3", ">= 0"]),
    (["--experiment", "../../x"], ["--experiment ../../x", "not a safe name"]),
    (["--experiment", "a/b"], ["--experiment a/b", "not a safe name"]),
    (["--no-such-flag"], ["unrecognized arguments: --no-such-flag"]),
    (["--lr"], ["--lr", "expected one argument"]),
]


@pytest.mark.parametrize("extra, expected", FIT_SETTINGS, ids=[" ".join(c[0]) for c in FIT_SETTINGS])
def test_fit_settings_out_of_range(extra, expected, tmp_path, capsys):
    uri, _ = stores(tmp_path)
    line = run(["fit", "pawsx", "--data-dir", "fixtures", "--tracking-uri", uri, *extra], tmp_path, capsys)
    assert line.startswith("xstilts") and "error:" in line and all(part in line for part in expected), line
    assert created(tmp_path) == []


# ---------------------------------------------------------------------------------------------- fit: tasks, data, encoders, stores

def tasks_file(tmp_path, text: str):
    path = tmp_path / "tasks.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


FIT_INPUTS = [
    (["nosuchtask"], ["unknown task 'nosuchtask'; registered: anli_plus"]),
    (["pawsx", "--languages", "en,xx"], ["task 'pawsx' has no language 'xx'; valid: de, en, es, fr, ja, ko, zh"]),
    (["pawsx", "--encoder", "./no/such/model"], ["encoder path ./no/such/model does not exist"]),
    (["pawsx", "--encoder", "org/not-cached"], ["is not in the local Hugging Face cache and HF_HUB_OFFLINE=1"]),
    (["ccg"], ["task 'ccg' has no public source (ccgbank): pass --data-dir DIR"]),
    (["pawsx", "--data-dir", "/no/such/dir"], ["--data-dir /no/such/dir is not a folder"]),
    (["xnli", "--data-dir", "fixtures", "--perturb", "typo"], ["unknown perturbation(s) typo; valid: typos"]),
    (["xnli", "--data-dir", "fixtures", "--adversarial", "pawsx"], ["pawsx", "labels"]),
    (["xnli", "--data-dir", "fixtures", "--perturb", "code_switch", "--dictionary", "/no/such.json"],
     ["--dictionary /no/such.json does not exist"]),
    (["pawsx", "--tasks-file", "/no/such/tasks.yaml"], ["/no/such/tasks.yaml"]),
    (["pawsx", "--data-dir", "fixtures", "--streaming", "--max-steps", "-1"], ["--streaming needs --max-steps"]),
    (["xquad", "--data-dir", "fixtures", "--max-length", "64", "--doc-stride", "48"],
     ["--doc-stride 48 must be below half of --max-length 64"]),
    (["bucc2018", "--data-dir", "fixtures"], ["evaluation only"]),
    (["pawsx", "--data-dir", "fixtures", "--encoder", "models:/xstilts-nosuch@champion"],
     ["models:/xstilts-nosuch@champion"]),
    (["pawsx", "--data-dir", "fixtures", "--encoder", "runs:/0123456789abcdef0123456789abcdef/checkpoint"],
     ["runs:/0123456789abcdef0123456789abcdef/checkpoint"]),
    (["pawsx", "--data-dir", "fixtures", "--tracking-uri", "foo://bar"],
     ["--tracking-uri foo://bar: unsupported scheme 'foo'; valid: sqlite"]),
    # found by the child process that starts a distributed fit's ranks, and passed on as the same one line
    (["pawsx", "--data-dir", "fixtures", "--streaming", "--devices", "2"],
     ["--streaming with --devices 2 --num-nodes 1", "valid: one device"]),
]


@pytest.mark.parametrize("args, expected", FIT_INPUTS, ids=[" ".join(c[0]) for c in FIT_INPUTS])
def test_fit_inputs_checked_before_any_run(args, expected, tmp_path, capsys):
    uri, _ = stores(tmp_path)
    tracking = [] if "--tracking-uri" in args else ["--tracking-uri", uri]
    line = run(["fit", "--max-steps", "2", "--epochs", "1", *tracking, *args], tmp_path, capsys)
    assert all(part in line for part in expected), line
    assert SECRET not in line
    assert created(tmp_path) == []


MIXTURES = [
    ("{tasks: [mnli, nosuch]}", ["mixture 'mix': unknown task 'nosuch'; registered: anli_plus"]),
    ("{tasks: []}", ["task 'mix' in", "mixture.tasks []", "at least 2 items"]),
    ("{tasks: [mnli]}", ["mixture.tasks", "at least 2 items"]),
    ("{tasks: [mnli, mnli]}", ["mixture.tasks", "task(s) mnli listed twice"]),
    ("{tasks: [mnli, copa], sampling: temperature, temperature: 0}", ["mixture.temperature 0", "greater than 0"]),
    ("{tasks: [mnli, copa], sampling: temperature, temperature: -1}", ["mixture.temperature -1", "greater than 0"]),
    ("{tasks: [mnli, copa], temperature: 2}", ["temperature is for sampling: temperature (sampling is proportional)"]),
    ("{tasks: [mnli, copa], sampling: sometimes}", ["mixture.sampling 'sometimes'", "'proportional', 'temperature'"]),
    ("{tasks: [mnli, copa], max_examples_per_task: 0}", ["mixture.max_examples_per_task 0", "greater than or equal to 1"]),
    ("{tasks: [mnli, copa], weights: [1, 2]}", ["mixture.weights", "Extra inputs are not permitted"]),
    ("{tasks: [mnli, bucc2018]}", ["mixture 'mix': task 'bucc2018' (retrieval) is evaluation only"]),
    ("{tasks: [mnli, xnli]}", ["mixture 'mix': task 'xnli' trains on 'mnli': list 'mnli'"]),
    ("[mnli, copa]", ["`mixture` is a mapping (tasks, sampling, temperature, max_examples_per_task)"]),
]


@pytest.mark.parametrize("mixture, expected", MIXTURES, ids=[m[0] for m in MIXTURES])
def test_mixture_declarations_checked_before_any_run(mixture, expected, tmp_path, capsys):
    path = tasks_file(tmp_path, f"mix:\n  mixture: {mixture}\n")
    line = run(["fit", "mix", "--tasks-file", path, "--data-dir", "fixtures", "--tracking-uri", stores(tmp_path)[0]],
               tmp_path, capsys)
    assert all(part in line for part in expected), line
    assert created(tmp_path) == []


@pytest.mark.parametrize("args, expected", [
    (["--perturb", "typos"], ["--perturb/--adversarial are for target tasks; mix is a mixture"]),
    (["--streaming", "--max-steps", "2"], ["--streaming: mix is a mixture"]),
    (["--tuning", "adapter", "--adapter-placement", "middle"], ["--adapter-placement middle", "houlsby", "pfeiffer"]),
    (["--tuning", "adapter", "--adapter-reduction-factor", "0"], ["--adapter-reduction-factor 0", ">= 1"]),
])
def test_mixture_and_adapter_settings(args, expected, tmp_path, capsys):
    path = tasks_file(tmp_path, "mix:\n  mixture: {tasks: [mnli, copa]}\n")
    line = run(["fit", "mix", "--tasks-file", path, "--data-dir", "fixtures", "--tracking-uri", stores(tmp_path)[0],
                *args], tmp_path, capsys)
    assert all(part in line for part in expected), line
    assert created(tmp_path) == []


def test_tasks_file_with_a_yaml_error_names_its_line(tmp_path, capsys):
    path = tasks_file(tmp_path, "mine:\n  kind: [intermediate\n")
    line = run(["fit", "mine", "--tasks-file", path, "--tracking-uri", stores(tmp_path)[0]], tmp_path, capsys)
    assert path in line and "line" in line
    assert created(tmp_path) == []


def copy_pawsx(tmp_path, edit, lang="en", split="train"):
    """The fixture layout of PAWS-X in en and de, with one file rewritten by `edit` (a function of its lines)."""
    root = tmp_path / "data"
    for code in ("en", "de"):
        shutil.copytree(FIXTURES / "google/xtreme" / f"PAWS-X.{code}", root / "google/xtreme" / f"PAWS-X.{code}")
    path = root / "google/xtreme" / f"PAWS-X.{lang}" / f"{split}.jsonl"
    path.write_text("".join(line + "\n" for line in edit(path.read_text().splitlines())))
    return root, path


def rows(edit_row):
    def edit(lines):
        parsed = [json.loads(line) for line in lines]
        return [json.dumps(r) for r in edit_row(parsed)]
    return edit


def set_field(index, field, value):
    def edit(parsed):
        parsed[index][field] = value
        return parsed
    return edit


DATA = [
    (rows(set_field(3, "label", "2")), "en", "train", ["row 3: column 'label' has label '2'; valid: 0, 1"]),
    (rows(lambda p: [{k: v for k, v in r.items() if k != "sentence2"} for r in p]), "en", "train",
     ["missing column(s) sentence2; columns present: sentence1, label"]),
    (lambda lines: [], "en", "train", ["no rows for task 'pawsx' language 'en'"]),
    (lambda lines: lines[:4] + ['{"sentence1": "broken",'] + lines[4:], "en", "train",
     ["line 5: not valid JSON"]),
    (rows(set_field(2, "sentence1", 17)), "en", "train", ["row 2: column 'sentence1' holds int", "a string"]),
    (rows(set_field(1, "sentence2", ["a", "list"])), "de", "test", ["row 1: column 'sentence2' holds list"]),
    (rows(set_field(5, "label", "maybe")), "de", "validation", ["row 5: column 'label' has label 'maybe'"]),
]


@pytest.mark.parametrize("edit, lang, split, expected", DATA, ids=[f"{c[1]}/{c[2]}/{c[3][0][:30]}" for c in DATA])
def test_bad_data_names_file_row_and_field_before_any_run(edit, lang, split, expected, tmp_path, capsys):
    root, path = copy_pawsx(tmp_path, edit, lang, split)
    line = run(["fit", "pawsx", "--data-dir", str(root), "--languages", "en,de", "--tracking-uri",
                stores(tmp_path)[0], "--max-steps", "2"], tmp_path, capsys)
    assert all(part in line for part in expected) and (str(path) in line or "no rows" in line), line
    assert created(tmp_path) == []


def test_missing_language_file_named_before_any_run(tmp_path, capsys):
    root, _ = copy_pawsx(tmp_path, lambda lines: lines)
    (root / "google/xtreme/PAWS-X.de/test.jsonl").unlink()
    line = run(["fit", "pawsx", "--data-dir", str(root), "--languages", "en,de", "--tracking-uri",
                stores(tmp_path)[0]], tmp_path, capsys)
    assert "PAWS-X.de/test" in line
    assert created(tmp_path) == []


# ---------------------------------------------------------------------------------------------- evaluate

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real checkpoint of a 2-step PAWS-X fit."""
    folder = tmp_path_factory.mktemp("checkpoint")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    assert main(["fit", "pawsx", "--data-dir", "fixtures", "--max-steps", "2", "--epochs", "1", "--languages",
                 "en", "--max-length", "32", "--tracking-uri", uri, "--experiment", "source"]) == 0
    client = mlflow.MlflowClient(uri)
    (source,) = client.search_runs([client.get_experiment_by_name("source").experiment_id])
    return folder / "artifacts" / "source" / source.info.run_id / "artifacts" / "checkpoint"


def broken_copy(checkpoint, tmp_path, name: str, content: bytes | None):
    copy = tmp_path / "ckpt"
    shutil.copytree(checkpoint, copy)
    if content is None:
        (copy / name).unlink()
    else:
        (copy / name).write_bytes(content)
    return copy


@pytest.mark.parametrize("damage, expected", [
    (("head.safetensors", b"not a safetensors file"), ["head.safetensors cannot be loaded"]),
    (("xstilts.json", b"{not json"), ["xstilts.json: not valid JSON"]),
    (("xstilts.json", b"{}"), ["xstilts.json: missing task, format"]),
    (("xstilts.json", None), ["is not an xstilts checkpoint (no xstilts.json)"]),
])
def test_evaluate_damaged_checkpoint(damage, expected, checkpoint, tmp_path, capsys):
    copy = broken_copy(checkpoint, tmp_path, *damage)
    line = run(["evaluate", str(copy), "--data-dir", "fixtures", "--tracking-uri", stores(tmp_path)[0]], tmp_path,
               capsys)
    assert all(part in line for part in expected), line
    assert created(tmp_path) == []


EVALUATE = [
    (["/no/such/checkpoint"], ["/no/such/checkpoint is not an xstilts checkpoint"]),
    (["models:/xstilts-pawsx@champion"], ["models:/xstilts-pawsx@champion", "not found"]),
    (["models:/xstilts-pawsx/7"], ["models:/xstilts-pawsx/7"]),
    (["runs:/0123456789abcdef0123456789abcdef/checkpoint"], ["runs:/0123456789abcdef0123456789abcdef/checkpoint"]),
    (["CHECKPOINT", "--task", "nosuch"], ["unknown task 'nosuch'"]),
    (["CHECKPOINT", "--task", "panx"], ["has a classification head; task panx needs a trained tagging head"]),
    (["CHECKPOINT", "--languages", "xx"], ["task 'pawsx' has no language 'xx'"]),
    (["CHECKPOINT", "--benchmark", "xtreme-x"], ["--benchmark", "invalid choice: 'xtreme-x'"]),
    (["CHECKPOINT", "--eval-batch-size", "0"], ["--eval-batch-size 0", ">= 1"]),
]


@pytest.mark.parametrize("args, expected", EVALUATE, ids=[" ".join(c[0]) for c in EVALUATE])
def test_evaluate_inputs(args, expected, checkpoint, tmp_path, capsys):
    args = [str(checkpoint) if a == "CHECKPOINT" else a for a in args]
    line = run(["evaluate", *args, "--data-dir", "fixtures", "--tracking-uri", stores(tmp_path)[0]], tmp_path,
               capsys)
    assert all(part in line for part in expected), line
    assert created(tmp_path) == []


# ---------------------------------------------------------------------------------------------- sweep

GOOD = """\
name: small
encoder: tiny-xlmr
data: {data_dir: fixtures, max_length: 32, max_train_examples: 16, max_eval_examples: 8}
budget: {trials: 1}
phases: {intermediate: [mnli], targets: [pawsx]}
train:
  target: {lr: 1.0e-3, epochs: 1}
"""

SWEEPS = [
    (None, [], ["experiment file", "does not exist"]),
    ("name: x\nphases: {targets: [pawsx\n", [], ["line 3, column 1: not valid YAML"]),
    (GOOD.replace("trials: 1", "trials: two"), [], ["budget.trials two", "valid integer"]),
    (GOOD.replace("trials: 1", "trials: 0"), [], ["budget.trials 0", ">= 1"]),
    (GOOD.replace("lr: 1.0e-3", "lr: -1"), [], ["train.target.lr -1", "greater than 0"]),
    (GOOD.replace("epochs: 1", 'epochs: "one"'), [], ["train.target.epochs one", "valid integer"]),
    (GOOD.replace("epochs: 1", "epochs: {low: 3, high: 1}"), [], ["train.target.epochs: a range needs low < high"]),
    (GOOD.replace("epochs: 1", "epochs: []"), [], ["train.target.epochs: an empty list of choices"]),
    (GOOD.replace("lr: 1.0e-3", "learning_rate: 1.0e-3"), [], ["unknown option 'learning_rate'; valid: lr"]),
    (GOOD + "colour: blue\n", [], ["colour: unknown setting; valid: name"]),
    (GOOD.replace("targets: [pawsx]", "targets: []"), [], ["phases.targets", "at least 1"]),
    (GOOD.replace("targets: [pawsx]", "targets: [nosuch]"), [], ["phases.targets: unknown task 'nosuch'"]),
    (GOOD.replace("name: small", "name: ../escape"), [], ["name ../escape", "not a safe name"]),
    (GOOD.replace("max_length: 32", "max_length: 2"), [], ["data.max_length 2", ">= 8"]),
    (GOOD.replace("phases: {", "phases: {mlm: mnli, "), [], ["phases.mlm: task 'mnli' is not a masked_lm task"]),
    (GOOD.replace("data: {", "data: {mixture: {tasks: [mnli, copa]}, "), [],
     ["data.mixture: declare a mixture by name in a tasks file"]),
    (GOOD.replace("data_dir: fixtures", "data_dir: /no/such/dir"), [], ["data_dir /no/such/dir is not a folder"]),
    (GOOD, ["--storage", "foo://x"], ["--storage foo://x: unsupported scheme 'foo'; valid: sqlite, postgresql"]),
    (GOOD, ["--storage", f"postgresql://user:{SECRET}@127.0.0.1:1/optuna"],
     ["--storage postgresql://user:***@127.0.0.1:1/optuna: cannot connect within"]),
    (GOOD, ["--workers", "0"], ["--workers 0", ">= 1"]),
    (GOOD, ["--gpus", "0,x"], ["--gpus 0,x: 'x' is not a GPU; valid: comma-separated GPU indices"]),
    (GOOD, ["--gpus", "0,1,0"], ["--gpus 0,1,0: names a GPU twice"]),
    (GOOD, ["--gpus", "0,1,2", "--workers", "2"], ["--workers 2 cannot share --gpus 0,1,2 evenly (3 GPUs)"]),
    (GOOD, ["--gpus", "0", "--workers", "2"], ["--workers 2 cannot share --gpus 0 evenly (1 GPU)"]),
    (GOOD.replace("epochs: 1", "epochs: 1, num_nodes: 2"), [],
     ["train.target.num_nodes 2: a sweep's phases train on one machine each; valid: 1"]),
    (GOOD.replace("epochs: 1", "epochs: 1, strategy: deepspeed"), [],
     ["train.target.strategy", "deepspeed", "auto, ddp, fsdp"]),
    (GOOD, ["--tracking-timeout", "0"], ["--tracking-timeout 0", "> 0"]),
    (GOOD, ["--checkpoint-every-steps", "0"], ["--checkpoint-every-steps 0", ">= 1"]),
]


@pytest.mark.parametrize("text, extra, expected", SWEEPS, ids=[" ".join(c[2])[:40] for c in SWEEPS])
def test_sweep_inputs_checked_before_anything_is_created(text, extra, expected, tmp_path, capsys):
    path = tmp_path / "experiment.yaml"
    if text is not None:
        path.write_text(text)
    uri, storage = stores(tmp_path)
    settings = {"--tracking-uri": uri, "--storage": storage}
    given = {extra[i]: extra[i + 1] for i in range(0, len(extra), 2)}
    argv = ["sweep", str(path), *[x for k, v in {**settings, **given}.items() for x in (k, v)]]
    line = run(argv, tmp_path, capsys)
    assert line.startswith("xstilts sweep: error:") and all(part in line for part in expected), line
    assert SECRET not in line
    assert created(tmp_path) == []


def test_sweep_check_runs_only_the_preflight(tmp_path, capsys):
    path = tmp_path / "experiment.yaml"
    path.write_text(GOOD)
    uri, storage = stores(tmp_path)
    assert main(["sweep", str(path), "--check", "--tracking-uri", uri, "--storage", storage]) == 0
    assert "preflight passed: experiment small" in capsys.readouterr().out
    assert created(tmp_path) == []


# ---------------------------------------------------------------------------------------------- promote, report, ui, models

OTHERS = [
    (["promote"], ["promote needs a target task, or --list"]),
    (["promote", "pawsx"], ["no finished fit run of task 'pawsx'"]),
    (["promote", "pawsx", "--tracking-uri", "foo://x"], ["--tracking-uri foo://x: unsupported scheme"]),
    (["report", "nosuch"], ["no MLflow experiment named 'nosuch'"]),
    (["report", "../x"], ["experiment '../x' is not a safe name"]),
    (["report", "/no/such.yaml"], ["experiment file /no/such.yaml does not exist"]),
    (["ui", "--port", "abc"], ["argument --port: invalid int value: 'abc'"]),
    (["ui", "--tracking-uri", "foo://x"], ["--tracking-uri foo://x: unsupported scheme"]),
    (["models", "bogus"], ["argument action: invalid choice: 'bogus'"]),
    (["tasks", "--tasks-file", "/no/such.yaml"], ["/no/such.yaml"]),
    (["nosuchcommand"], ["invalid choice: 'nosuchcommand'"]),
]


@pytest.mark.parametrize("argv, expected", OTHERS, ids=[" ".join(c[0]) for c in OTHERS])
def test_other_commands(argv, expected, tmp_path, capsys):
    uri, _ = stores(tmp_path)
    tracking = [] if "--tracking-uri" in argv or argv[0] in ("models", "tasks", "nosuchcommand") or \
        argv[:2] == ["ui", "--port"] else ["--tracking-uri", uri]
    assert main([*argv, *tracking]) == 2
    line = one_line(capsys)
    assert all(part in line for part in expected), line
    assert created(tmp_path) == []


# ---------------------------------------------------------------------------------------------- stores out of reach

UNREACHABLE = [
    (["fit", "pawsx", "--data-dir", "fixtures"], "http://127.0.0.1:1"),
    (["fit", "pawsx", "--data-dir", "fixtures"], f"postgresql://user:{SECRET}@127.0.0.1:1/db"),
    (["sweep", "EXPERIMENT"], "http://127.0.0.1:1"),
    (["promote", "--list"], "http://127.0.0.1:1"),
    (["report", "small"], f"postgresql://user:{SECRET}@127.0.0.1:1/db"),
]


@pytest.mark.parametrize("argv, uri", UNREACHABLE, ids=[f"{c[0][0]} {c[1][:10]}" for c in UNREACHABLE])
def test_a_tracking_store_out_of_reach_is_one_line_and_exit_3(argv, uri, tmp_path, capsys):
    """Exit status 3 (not 2): the input may be right and the store down for a while, so a job can retry it."""
    path = tmp_path / "experiment.yaml"
    path.write_text(GOOD)
    argv = [str(path) if a == "EXPERIMENT" else a for a in argv]
    line = run([*argv, "--tracking-uri", uri, "--tracking-timeout", "5"], tmp_path, capsys, code=3)
    shown = uri.replace(SECRET, "***")
    assert line.startswith(f"xstilts {argv[0]}: error: tracking store {shown} did not answer within"), line
    assert SECRET not in line and "nothing was run" in line
    assert created(tmp_path) == []


# ---------------------------------------------------------------------------------------------- after the run started

FAILING_FORMAT = '''
from lightning_modules.formats.classification import SPEC as CLASSIFICATION, Classification
from lightning_modules.formats.spec import FormatSpec
import dataclasses

SPEC = dataclasses.replace(CLASSIFICATION, name="exploding")


class Exploding(Classification):
    name = "exploding"

    def step(self, encoder, head, batch, pad_id):
        raise RuntimeError("the format's step exploded")


FORMAT = Exploding()
'''


def test_failure_after_the_run_started_is_one_line_exit_1_and_a_failed_run(tmp_path, capsys, monkeypatch):
    (tmp_path / "exploding_format.py").write_text(FAILING_FORMAT)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tasks_file(tmp_path, f"""\
        exploding_pawsx:
          kind: target
          format: exploding_format
          sources: [{{dataset: google/xtreme, config: "PAWS-X.{{lang}}", splits: {{train: train, test: test}}}}]
          columns: {{text_a: sentence1, text_b: sentence2, label: label}}
          labels: ["0", "1"]
          languages: [en, de]
          metric: accuracy
        """)
    uri, _ = stores(tmp_path)
    line = run(["fit", "exploding_pawsx", "--tasks-file", path, "--data-dir", "fixtures", "--tracking-uri", uri,
                "--max-steps", "2"], tmp_path, capsys, code=1)
    assert "the format's step exploded" in line and "marked FAILED" in line
    assert created(tmp_path) == ["FAILED"]
