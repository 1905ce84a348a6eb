"""The data a run read, as MLflow datasets (the runs table's Dataset column): one per task, split and language, with
its source (the local file, or the hub dataset id, config, split and revision), the digest of its data key
(datamodules/sources.py:data_digest: files' paths, sizes and modification times, never the rows read again) and its
number of rows, in the context "training", "validation" or "test"."""

from __future__ import annotations

import json

CONTEXTS = {"train": "training", "validation": "validation", "test": "test"}


def source_of(piece):
    """The MLflow dataset source of one piece of a split (datamodules/slices.py: Slice)."""
    from mlflow.data.sources import HuggingFaceDatasetSource, LocalArtifactDatasetSource

    if piece.path is not None:
        return LocalArtifactDatasetSource(str(piece.path.resolve()))
    return HuggingFaceDatasetSource(path=piece.source.dataset, config_name=piece.config, split=piece.split_name,
                                    revision=piece.source.revision)


def dataset_inputs(read_sets, data_dir) -> list[dict]:
    """JSON-able descriptions of the sets a datamodule read (TaskDataModule.read_sets), one per distinct dataset and
    context. A split made of several pieces names the first as its source and all of them in a tag."""
    from mlflow.data.meta_dataset import MetaDataset

    from datamodules.slices import slices
    from datamodules.sources import data_digest

    found: dict[tuple, dict] = {}
    for read in read_sets:
        pieces = slices(read.task, read.base_split, read.lang, data_dir)
        dataset = MetaDataset(source_of(pieces[0]), name=f"{read.task.name}/{read.split}/{read.lang}",
                              digest=data_digest(read.key)).to_dict()
        if read.rows is not None:
            dataset["profile"] = json.dumps({"num_rows": read.rows})
        tags = {"mlflow.data.context": CONTEXTS[read.base_split]}
        if len(pieces) > 1:
            tags["xstilts.pieces"] = json.dumps([p.describe() for p in pieces])[:500]  # MLflow: input tags hold 500
        found.setdefault((dataset["name"], dataset["digest"], tags["mlflow.data.context"]),
                         {"dataset": dataset, "tags": tags})
    return list(found.values())


def as_entities(inputs: list[dict]) -> list:
    """mlflow.entities.DatasetInput of each description (for MlflowClient.log_inputs)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    return [DatasetInput(Dataset(**found["dataset"]), [InputTag(k, v) for k, v in found["tags"].items()])
            for found in inputs]
