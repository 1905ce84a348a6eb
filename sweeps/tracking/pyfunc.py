"""A champion as an MLflow model: a pyfunc holding the xstilts checkpoint (lightning_modules/checkpoint.py), so that
`mlflow.pyfunc.load_model("models:/<name>@champion")` predicts on raw text and `mlflow models serve` serves it.

Input: a DataFrame with the format's input columns (classification: text_a and, for pairs, text_b; tagging: tokens,
a list of words; multiple choice: context and choices; span QA: question and context). Output: one prediction per
row, as xstilts' own evaluation predicts it (a label; a tag per word; an answer text): the rows go through the same
featurize -> collate -> step -> predict path of the checkpoint's format."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from mlflow.pyfunc import PythonModel

ARTIFACT = "checkpoint"  # the checkpoint folder inside the model
MODEL_CODE = Path(__file__).with_name("champion_model.py")  # MLflow's "model from code": it builds ChampionModel
EXAMPLE_VALUES = {"text": "Hello world.", "texts": ["yes", "no"], "tokens": ["Hello", "world"]}
INPUT_KINDS = {"text": "string", "texts": "strings", "tokens": "strings"}
OUTPUT_KINDS = {"label": "string", "labels": "strings", "answers": "string"}


def input_fields(spec) -> tuple[dict[str, str], dict[str, str]]:
    """(required, optional) input columns of a format: field -> kind."""
    required = {f: k for f, k in spec.fields.items() if k in INPUT_KINDS}
    optional = {f: k for f, k in spec.optional_fields.items() if k in INPUT_KINDS}
    return required, optional


def placeholder(kind: str, row: dict, index: int):
    """A gold value the format's featurize can read where raw input has none (it never reaches a prediction)."""
    if kind == "labels":  # one tag per word
        return [0] * len(next(v for v in row.values() if isinstance(v, list)))
    if kind == "answers":
        return {"text": [], "answer_start": []}
    if kind == "id":
        return str(index)
    return 0


class Predictor:
    """Raw rows -> predictions, from a checkpoint folder."""

    def __init__(self, folder: Path, batch_size: int = 32):
        from datamodules.tasks import get_task, load_registry
        from lightning_modules.checkpoint import load_head, read_meta
        from lightning_modules.encoders import load_encoder
        from lightning_modules.formats import get_format, get_spec
        from lightning_modules.formats.base import FeatureSettings

        meta = read_meta(folder)
        self.task = get_task(meta["task"], load_registry())
        self.fmt, self.spec, self.labels = get_format(meta["format"]), get_spec(meta["format"]), meta["labels"]
        self.settings = FeatureSettings(max_length=meta["max_length"], doc_stride=meta["doc_stride"])
        self.encoder, self.tokenizer = load_encoder(str(folder / "encoder"))
        self.head = self.fmt.build_head(self.encoder, self.task, self.labels)
        load_head(folder, self.head)
        self.encoder.eval()
        self.head.eval()
        self.batch_size = batch_size

    def rows(self, records: list[dict]) -> list[dict]:
        """Canonical rows: the input columns checked, placeholders for the gold fields."""
        required, optional = input_fields(self.spec)
        records = [{f: _plain(v) for f, v in record.items()} for record in records]
        given = [f for f in optional if any(record.get(f) is not None for record in records)]
        rows = []
        for index, record in enumerate(records):
            missing = [f for f in [*required, *given] if record.get(f) is None]
            if missing:
                raise ValueError(f"row {index}: no {', '.join(missing)}; a {self.spec.name} model takes the columns "
                                 f"{', '.join(required)}" + (f" (optional: {', '.join(optional)}, in every row or "
                                                             f"in none)" if optional else ""))
            row = {f: record[f] for f in [*required, *given]}
            gold = {f: k for f, k in {**self.spec.fields, **self.spec.optional_fields}.items()
                    if k not in INPUT_KINDS}
            row.update({f: placeholder(k, row, index) for f, k in gold.items()})
            rows.append(row)
        return rows

    def predict(self, records: list[dict]) -> list:
        import datasets
        import torch
        from torch.utils.data import DataLoader

        from datamodules.datamodule import featurizer
        from lightning_modules.formats.base import EvalSet

        examples = datasets.Dataset.from_list(self.rows(records))
        features = examples.map(featurizer(self.fmt, self.tokenizer, self.task, self.settings, False), batched=True,
                                with_indices=True, remove_columns=examples.column_names)
        loader = DataLoader(features, batch_size=self.batch_size,
                            collate_fn=self.fmt.collator(self.tokenizer, self.settings, training=False))
        with torch.inference_mode():
            outputs = [self.fmt.step(self.encoder, self.head, batch, self.tokenizer.pad_token_id).outputs
                       for batch in loader]
        eval_set = EvalSet(self.task, self.task.train_language, "predict", examples, features)
        return [record["prediction"] for record in self.fmt.predict(outputs, eval_set, self.labels)]


def _plain(value):
    """A DataFrame cell as canonical rows hold it: numpy arrays of words back to lists, a missing value (NaN) None."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return None if isinstance(value, float) and value != value else value


class ChampionModel(PythonModel):
    """The pyfunc: loads the checkpoint once, predicts on a DataFrame of raw inputs."""

    def load_context(self, context):
        import datasets

        datasets.disable_progress_bars()  # a model server would print one per request
        self.predictor = Predictor(Path(context.artifacts[ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> list:
        return self.predictor.predict(model_input.to_dict(orient="records"))


def signature(spec):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array

    def column(name: str, kind: str, required: bool = True) -> ColSpec:
        shape = Array(DataType.string) if kind == "strings" else DataType.string
        return ColSpec(shape, name, required=required)

    required, optional = input_fields(spec)
    inputs = [column(f, INPUT_KINDS[k]) for f, k in required.items()]
    inputs += [column(f, INPUT_KINDS[k], required=False) for f, k in optional.items()]
    gold = next((k for k in spec.fields.values() if k in OUTPUT_KINDS), "label")
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([column("prediction", OUTPUT_KINDS[gold])]))


def requirements() -> list[str]:
    """What the model needs besides xstilts itself (installed where it is served: `--env-manager local`)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("torch", "transformers", "tokenizers", "datasets", "safetensors", "lightning", "mlflow",
                    "pandas", "pyyaml"):
        try:
            found.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return found


def save_model(checkpoint: Path, path: Path) -> Path:
    """An MLflow pyfunc model folder at `path` holding a copy of `checkpoint`."""
    import mlflow

    from lightning_modules.checkpoint import read_meta
    from lightning_modules.formats import get_format, get_spec

    meta = read_meta(checkpoint)
    spec = get_spec(meta["format"])
    if not spec.trains or not get_format(meta["format"]).per_example():
        raise ValueError(f"a {meta['format']} checkpoint makes no per-example predictions: promote it with "
                         f"--checkpoint-only")
    required, _ = input_fields(spec)
    example = pd.DataFrame([{f: EXAMPLE_VALUES[k] for f, k in required.items()}])
    mlflow.pyfunc.save_model(str(path), python_model=str(MODEL_CODE), artifacts={ARTIFACT: str(checkpoint)},
                             signature=signature(spec), input_example=example, pip_requirements=requirements(),
                             metadata={"xstilts": json.dumps({k: meta[k] for k in ("task", "format", "labels")})})
    return path
