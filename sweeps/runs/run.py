"""One tracked run: train an encoder on a task (English), select on English validation, evaluate every language
zero-shot, and save the checkpoint; or evaluate a saved checkpoint. Everything that can be checked is checked
before the MLflow run starts (sweeps/runs/preflight.py); what fails after it started marks it FAILED."""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from datamodules.tasks import TaskSpec
from lightning_modules.formats import get_spec
from sweeps.config import DataConfig, RunConfig
from sweeps.runs.preflight import Prepared, check_run, check_tracking, local_encoder


@dataclass
class RunResult:
    run_id: str
    scores: dict[str, float]
    checkpoint_uri: str | None = None
    selection_score: float | None = None  # the English validation score the checkpoint was selected on


def _datamodule(config: RunConfig, prepared: Prepared, fmt, tokenizer, labels=None):
    from datamodules.datamodule import TaskDataModule
    from lightning_modules.formats.base import FeatureSettings

    data = config.data
    return TaskDataModule(
        prepared.task, fmt, tokenizer, train_task=prepared.train_task, data_dir=data.data_path(),
        eval_languages=list(data.languages) or None, eval_splits=data.eval_splits,
        settings=FeatureSettings(max_length=data.max_length, doc_stride=data.doc_stride,
                                 mlm_probability=data.mlm_probability, whole_word_mask=data.whole_word_mask),
        batch_size=config.train.batch_size, eval_batch_size=config.train.eval_batch_size,
        num_workers=data.num_workers, streaming=data.streaming, max_train_examples=data.max_train_examples,
        max_eval_examples=data.max_eval_examples, labels=labels,
        robustness=_robustness(data, prepared), group_by_length=data.group_by_length, seed=config.train.seed,
        group_eval_by_length=data.group_eval_by_length, accumulate=config.train.accumulate)


def _robustness(data: DataConfig, prepared: Prepared):
    from datamodules.perturb import Robustness, adversarial_tasks

    return Robustness(perturbations=data.perturbations, seed=data.perturb_seed, dictionary=data.perturb_dictionary,
                      adversarial=tuple(adversarial_tasks(data.adversarial, prepared.task, prepared.registry)))


def _trainer(config: RunConfig, logger, callbacks, has_validation: bool):
    import lightning as L
    from lightning.pytorch.callbacks import TQDMProgressBar

    train = config.train
    periodic = train.eval_every is not None and has_validation
    # a progress bar refresh reads the logged loss (on a GPU, a wait for the device): every 10 steps, not each
    bar = [TQDMProgressBar(refresh_rate=10)] if sys.stderr.isatty() else []
    return L.Trainer(
        max_epochs=train.epochs, max_steps=train.max_steps, accumulate_grad_batches=train.accumulate,
        precision=train.precision, logger=logger, callbacks=[*callbacks, *bar], accelerator="auto", devices=1,
        val_check_interval=train.eval_every if periodic else None,
        check_val_every_n_epoch=None if periodic else 1, limit_val_batches=1.0 if has_validation else 0,
        num_sanity_val_steps=0, log_every_n_steps=10, enable_model_summary=False, deterministic=False,
        enable_progress_bar=bool(bar))


def _selection_callbacks(datamodule, workdir: Path, patience: int | None):
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    selection = datamodule.selection_set
    if selection is None:
        return [], None
    monitor = f"{selection.split}/{selection.lang}/{selection.task.metric}"
    mode = "min" if get_spec(selection.task.format).lower_is_better(selection.task.metric) else "max"
    best = ModelCheckpoint(dirpath=workdir / "selection", monitor=monitor, mode=mode, save_top_k=1,
                           save_weights_only=True, filename="best")
    callbacks = [best] + ([EarlyStopping(monitor, mode=mode, patience=patience)] if patience else [])
    return callbacks, best


def _checkpoint_meta(config: RunConfig, prepared: Prepared, labels, run_id: str) -> dict:
    return {"task": prepared.task.name, "format": prepared.task.format, "labels": labels,
            "train_task": prepared.train_task.name, "encoder_source": config.encoder,
            "max_length": config.data.max_length, "doc_stride": config.data.doc_stride, "run_id": run_id}


def fit(config: RunConfig, callbacks=()) -> RunResult:
    """Train on the task's English data, select on English validation, evaluate every language.

    `callbacks` are extra Lightning callbacks (a sweep's pruning callback)."""
    import lightning as L
    import torch

    from lightning_modules.checkpoint import save_checkpoint
    from lightning_modules.encoders import load_encoder
    from lightning_modules.encoders.tuning import adapter_parameters, apply_tuning, merged
    from lightning_modules.formats import get_format
    from lightning_modules.task_module import TaskModule
    from sweeps.runs.predictions import prediction_sink
    from sweeps.runs.preemption import preempted
    from sweeps.runs.resume import Resume
    from sweeps.tracking import faults
    from sweeps.tracking.store import tracked_run, tracking_uri

    uri = tracking_uri(config.tracking_uri)
    faults.configure(config.tracking_timeout)
    check_tracking(uri)
    config = config.evolve(encoder=local_encoder(config.encoder, uri))
    prepared = check_run(config)
    fmt = get_format(prepared.task.format)
    tags = {"xstilts.command": "fit", "xstilts.task": prepared.task.name, "xstilts.encoder": config.encoder,
            "xstilts.train_task": prepared.train_task.name, "xstilts.seed": config.train.seed,
            "xstilts.train_language": prepared.train_task.train_language, **_metadata_tags(prepared.train_task),
            **config.tags}
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    encoder, tokenizer = load_encoder(config.encoder)
    if config.train.gradient_checkpointing:
        # transformers 5 renamed it activation checkpointing (the old name warns and goes in 6)
        enable = getattr(encoder, "activation_checkpointing_enable", None) or encoder.gradient_checkpointing_enable
        enable()
    encoder = apply_tuning(encoder, config.train.tuning, config.train.lora_rank)
    with tracked_run(uri, config.experiment, config.run_name or f"fit-{prepared.task.name}", tags,
                     config.parent_run_id, config.spool_dir) as run, \
            tempfile.TemporaryDirectory(prefix="xstilts-") as tmp:
        run.log_params(config.params())
        datamodule = _datamodule(config, prepared, fmt, tokenizer)
        datamodule.setup("fit")
        datamodule.setup("test")
        _log_data(run, prepared, datamodule)
        head = fmt.build_head(encoder, prepared.task, datamodule.labels)
        module = TaskModule(encoder, head, fmt, datamodule.labels, tokenizer.pad_token_id, config.train,
                            on_predictions=prediction_sink(run, prepared.task))
        if config.train.compile:
            module.encoder.compile(dynamic=True)  # in place: the state dict keeps its keys
        training = _with_micro_batches(config, module, datamodule)
        run.log_params({"train.micro_batch_used": training.train.batch_size,
                        "train.accumulate_used": training.train.accumulate})
        run.log_params({"model.parameters": sum(p.numel() for p in module.parameters()),
                        "model.trainable_parameters": sum(p.numel() for p in module.parameters() if p.requires_grad),
                        "model.adapter_parameters": adapter_parameters(encoder)})
        resume = Resume(run, config.params(), config.train.seed, config.checkpoint_dir,
                        config.checkpoint_every_steps, config.checkpoint_every_minutes)
        selection, best = _selection_callbacks(datamodule, resume.selection_folder(), config.train.patience)
        trainer = _trainer(training, run.lightning_logger(), [*selection, resume.callback, *callbacks],
                           datamodule.selection_set is not None)
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume.ckpt_path)
        except BaseException as error:
            if preempted(error):
                resume.interrupted()
            else:
                resume.folder.release()
            raise
        selection_score = None
        if best is not None and best.best_model_path:
            module.load_state_dict(torch.load(best.best_model_path, weights_only=True)["state_dict"])
            selection_score = float(best.best_model_score)
        trainer.test(module, datamodule=datamodule, verbose=False)
        in_place = run.artifact_folder("checkpoint")
        checkpoint = save_checkpoint(in_place or Path(tmp) / "checkpoint", merged(module.encoder), tokenizer, head,
                                     _checkpoint_meta(config, prepared, datamodule.labels, run.run_id))
        if in_place is None:
            run.log_artifacts(checkpoint, "checkpoint")
        run.log_dict(module.scores, "scores.json")
        if selection_score is None:  # no English validation data: the final English score stands in
            selection_score = module.scores.get(f"validation/{prepared.train_task.train_language}/"
                                                f"{prepared.train_task.metric}")
        if selection_score is not None:
            run.log_metrics({"selection/score": selection_score})
        resume.finished()
        return RunResult(run.run_id, dict(module.scores), f"runs:/{run.run_id}/checkpoint", selection_score)


def _with_micro_batches(config: RunConfig, module, datamodule) -> RunConfig:
    """The run's settings with the micro-batch it trains on (TrainConfig.micro_batch) as its batch size and the
    accumulation that keeps the effective batch; the datamodule set to match."""
    train = config.train
    micro = train.batch_size if train.micro_batch is None else train.micro_batch
    if micro == "auto":
        import torch

        from lightning_modules.micro_batch import largest_micro_batch

        micro = largest_micro_batch(module, datamodule.longest_batch, train.effective_batch, train.precision) \
            if torch.cuda.is_available() else train.batch_size
    datamodule.batch_size, datamodule.accumulate = micro, train.effective_batch // micro
    return config.evolve(train=train.evolve(batch_size=micro, accumulate=train.effective_batch // micro))


def _metadata_tags(task: TaskSpec) -> dict:
    """The task's own metadata (domain, difficulty, ...), for grouping in the MLflow UI and reports."""
    metadata = {f"xstilts.task.{key}": value for key, value in task.tags.items()}
    return {**metadata, "xstilts.task.domain": task.domain} if task.domain else metadata


def _log_data(run, prepared: Prepared, datamodule) -> None:
    if datamodule.missing:
        run.set_tags({"xstilts.not_evaluated": ", ".join(datamodule.missing)})
    sources = {"data.train_sources": json.dumps([asdict(s) for s in prepared.train_task.sources]),
               "data.eval_sources": json.dumps([asdict(s) for s in prepared.task.sources]),
               "data.labels": json.dumps(datamodule.labels)}
    sizes = {f"data.size.{name}": n for name, n in datamodule.sizes().items()}
    cache = {f"data.cache_hit.{name}": hit for name, hit in datamodule.cache_hits.items()}
    run.log_params({**sources, **sizes, **cache})
    _log_provenance(run, [prepared.train_task, prepared.task], datamodule.data_dir)
    _log_robustness(run, datamodule)


def _log_provenance(run, tasks, data_dir) -> None:
    """What a builder wrote beside local data (datamodules/fixtures/catalogs.py: the packages and versions of the
    catalogs): its `params` as data.provenance.<dataset>.<name>, the whole file as data/<dataset>/provenance.json."""
    from datamodules.slices import provenance_files

    for dataset, path in provenance_files(tasks, data_dir).items():
        provenance = json.loads(path.read_text())
        run.log_params({f"data.provenance.{dataset}.{k}": v for k, v in provenance.get("params", {}).items()})
        run.log_dict(provenance, f"data/{dataset}/provenance.json")


def _log_robustness(run, datamodule) -> None:
    """Per perturbed set, the share of its examples that the perturbation changed, and its first examples next to
    the clean ones (robustness/samples.json)."""
    if datamodule.perturbed:
        run.log_metrics({f"data/changed/{name}": info["changed"] for name, info in datamodule.perturbed.items()})
        run.log_dict({name: info["samples"] for name, info in datamodule.perturbed.items()}, "robustness/samples.json")


def evaluate(checkpoint: str, config: RunConfig, predictions_dir: str | None = None) -> RunResult:
    """Evaluate a saved checkpoint (folder, runs:/ or models:/ URI) on every language of `config.task`; with
    `predictions_dir`, also write its XTREME submission files there (sweeps/reporting/submission.py).

    Retrieval tasks need no head: for them `checkpoint` may also be any encoder name (evaluated straight from it)."""
    import lightning as L

    from lightning_modules.checkpoint import is_checkpoint, load_head, read_meta
    from lightning_modules.encoders import load_encoder
    from lightning_modules.formats import get_format
    from lightning_modules.task_module import TaskModule
    from sweeps.runs.predictions import prediction_sink
    from sweeps.tracking import faults
    from sweeps.tracking.artifacts import CheckpointError, is_tracked, local_checkpoint
    from sweeps.tracking.store import tracked_run, tracking_uri

    uri = tracking_uri(config.tracking_uri)
    faults.configure(config.tracking_timeout)
    check_tracking(uri)
    names_checkpoint = is_tracked(checkpoint) or Path(checkpoint, "xstilts.json").exists()
    folder = local_checkpoint(checkpoint, uri) if names_checkpoint else None
    meta = read_meta(folder) if folder and is_checkpoint(folder) else None
    if folder is None:
        if not config.task:
            raise CheckpointError(f"{checkpoint} is not an xstilts checkpoint (no xstilts.json): pass a checkpoint "
                                  f"folder, runs:/<run id>/checkpoint or models:/<name>@<alias>, or --task to "
                                  f"evaluate an encoder on a retrieval task")
        config = config.evolve(encoder=checkpoint)
    if meta is not None:
        config = config.evolve(task=config.task or meta["task"], encoder=str(folder / "encoder"),
                               data=config.data.evolve(max_length=meta["max_length"], doc_stride=meta["doc_stride"]))
    prepared = check_run(config, training=False)
    with_head = get_spec(prepared.task.format).trains
    if with_head and (meta is None or meta["format"] != prepared.task.format):
        found = f"has a {meta['format']} head" if meta else "is not an xstilts checkpoint"
        raise CheckpointError(f"{checkpoint} {found}; task {prepared.task.name} needs a trained {prepared.task.format} "
                         f"head (only retrieval tasks are evaluated straight from an encoder)")
    fmt = get_format(prepared.task.format)
    labels = meta["labels"] if with_head else None
    tags = {"xstilts.command": "evaluate", "xstilts.task": prepared.task.name, "xstilts.checkpoint": checkpoint,
            "xstilts.checkpoint_run_id": (meta or {}).get("run_id", ""), **config.tags}
    encoder, tokenizer = load_encoder(config.encoder)
    head = fmt.build_head(encoder, prepared.task, labels)
    if with_head:
        load_head(folder, head)
    with tracked_run(uri, config.experiment, config.run_name or f"evaluate-{prepared.task.name}", tags,
                     config.parent_run_id, config.spool_dir) as run:
        run.log_params({**config.params(), "checkpoint": checkpoint})
        datamodule = _datamodule(config, prepared, fmt, tokenizer, labels=labels)
        datamodule.setup("test")
        run.log_params({f"data.size.{name}": n for name, n in datamodule.sizes().items()})
        _log_provenance(run, [prepared.task], datamodule.data_dir)
        _log_robustness(run, datamodule)
        module = TaskModule(encoder, head, fmt, labels, tokenizer.pad_token_id,
                            on_predictions=prediction_sink(run, prepared.task, predictions_dir))
        trainer = _trainer(config, run.lightning_logger(), [], has_validation=False)
        trainer.test(module, datamodule=datamodule, verbose=False)
        run.log_dict(module.scores, "scores.json")
        return RunResult(run.run_id, dict(module.scores))
