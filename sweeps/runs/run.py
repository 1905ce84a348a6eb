"""One tracked run: train an encoder on a task (English), select on English validation, evaluate every language
zero-shot, and save the checkpoint; or evaluate a saved checkpoint. Everything that can be checked is checked
before the MLflow run starts (sweeps/runs/preflight.py); what fails after it started marks it FAILED."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from datamodules.tasks import TaskSpec
from lightning_modules.formats import get_spec
from sweeps.config import DataConfig, RunConfig
from sweeps.runs.preflight import Prepared, check_artifacts, check_run, check_tracking, local_encoder

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_id: str
    scores: dict[str, float]
    checkpoint_uri: str | None = None
    selection_score: float | None = None  # the English validation score the checkpoint was selected on


def _datamodule(config: RunConfig, prepared: Prepared, fmt, tokenizer, labels=None):
    from datamodules.mixture_data import task_datamodule
    from lightning_modules.formats.base import FeatureSettings

    data = config.data
    return task_datamodule(
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
    """The Lightning Trainer of a run; on several devices (sweeps/runs/distributed.py) every rank validates on the
    whole English validation set (the training batches are shared out by the datamodule), so that every rank selects
    the same checkpoint."""
    import lightning as L

    from sweeps.runs.distributed import strategy

    train = config.train
    periodic = train.eval_every is not None and has_validation
    return L.Trainer(
        max_epochs=train.epochs, max_steps=train.max_steps, accumulate_grad_batches=train.accumulate,
        precision=train.precision, logger=logger, callbacks=list(callbacks), accelerator="auto",
        **strategy(train), use_distributed_sampler=False, val_check_interval=train.eval_every if periodic else None,
        check_val_every_n_epoch=None if periodic else 1, limit_val_batches=1.0 if has_validation else 0,
        num_sanity_val_steps=0, log_every_n_steps=10, enable_model_summary=False, deterministic=False,
        enable_progress_bar=False)


def _selection_callbacks(datamodule, train_task: TaskSpec, workdir: Path, patience: int | None):
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from datamodules.datamodule import SELECTION_SPLIT

    if not datamodule.selection_sets:
        return [], None
    monitor = f"{SELECTION_SPLIT}/{train_task.train_language}/{train_task.metric}"
    mode = "min" if get_spec(train_task.format).lower_is_better(train_task.metric) else "max"
    best = ModelCheckpoint(dirpath=workdir / "selection", monitor=monitor, mode=mode, save_top_k=1,
                           save_weights_only=True, filename="best")
    callbacks = [best] + ([EarlyStopping(monitor, mode=mode, patience=patience)] if patience else [])
    return callbacks, best


def _checkpoint_meta(config: RunConfig, prepared: Prepared, labels, run_id: str) -> dict:
    return {"task": prepared.task.name, "format": prepared.task.format, "labels": labels,
            "train_task": prepared.train_task.name, "encoder_source": config.encoder,
            "max_length": config.data.max_length, "doc_stride": config.data.doc_stride, "run_id": run_id}


def fit(config: RunConfig, callbacks=()) -> RunResult | None:
    """Train on the task's English data, select on English validation, evaluate every language.

    `callbacks` are extra Lightning callbacks (a sweep's pruning callback). A fit on several devices trains in a child
    process unless a launcher started this process as one of its ranks (sweeps/runs/distributed.py); `callbacks` do
    not reach that child (a multi-device phase of a sweep is not pruned). A rank other than 0 returns None."""
    from sweeps.runs import distributed

    if distributed.world_size(config.train) > 1 and not distributed.started_as_rank(config.train):
        if callbacks:
            log.warning("a fit on %d devices is not pruned: it trains in a child process",
                        distributed.world_size(config.train))
        return RunResult(**distributed.fit_in_child(config))
    return _fit(config, callbacks, distributed.launched_rank(config.train))


def _module(config: RunConfig, prepared: Prepared, fmt, encoder, tokenizer, labels, on_predictions):
    """The run's LightningModule: `encoder` (tuned as configured) and the format's head."""
    from lightning_modules.encoders.tuning import apply_tuning
    from lightning_modules.task_module import TaskModule

    if config.train.gradient_checkpointing:
        # transformers 5 renamed it activation checkpointing (the old name warns and goes in 6)
        enable = getattr(encoder, "activation_checkpointing_enable", None) or encoder.gradient_checkpointing_enable
        enable()
    encoder = apply_tuning(encoder, config.train.tuning, config.train.lora_rank, config.train.adapter_placement,
                           config.train.adapter_reduction_factor)
    head = fmt.build_head(encoder, prepared.task, labels)
    return TaskModule(encoder, head, fmt, labels, tokenizer.pad_token_id, config.train, on_predictions=on_predictions)


def _fit(config: RunConfig, callbacks, rank: int) -> RunResult | None:
    import lightning as L
    import torch

    from lightning_modules.checkpoint import save_checkpoint
    from lightning_modules.encoders import load_encoder
    from lightning_modules.encoders.tuning import adapter_parameters
    from lightning_modules.formats import get_format
    from sweeps.runs import distributed
    from sweeps.runs.console import ProgressLine, once_per_process
    from sweeps.runs.predictions import prediction_sink
    from sweeps.runs.preemption import preempted
    from sweeps.runs.resume import Resume
    from sweeps.tracking import faults
    from sweeps.tracking.store import system_metrics, tracked_run, tracking_uri, untracked_run

    once_per_process()
    uri = tracking_uri(config.tracking_uri)
    faults.configure(config.tracking_timeout)
    check_tracking(uri)
    check_artifacts(uri)
    config = config.evolve(encoder=local_encoder(config.encoder, uri))
    prepared = check_run(config)
    config = config.evolve(data=config.data.evolve(mixture=prepared.task.mixture))  # params and key record it
    fmt = get_format(prepared.task.format)
    tags = {"xstilts.command": "fit", "xstilts.task": prepared.task.name, "xstilts.encoder": config.encoder,
            "xstilts.train_task": prepared.train_task.name, "xstilts.seed": config.train.seed,
            "xstilts.train_language": prepared.train_task.train_language, **_metadata_tags(prepared.train_task),
            **config.tags}
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    encoder, tokenizer = load_encoder(config.encoder)
    ranks = distributed.world_size(config.train)
    track = tracked_run if rank == 0 else untracked_run  # one run, tracked by rank 0
    with track(uri, config.experiment, config.run_name or f"fit-{prepared.task.name}", tags,
               config.parent_run_id, config.spool_dir) as run, \
            tempfile.TemporaryDirectory(prefix="xstilts-") as tmp, \
            system_metrics(run, config.system_metrics_interval), run.tables() as tables:
        run.log_params(config.params())
        datamodule = _datamodule(config, prepared, fmt, tokenizer)
        datamodule.setup("fit")
        datamodule.setup("test")
        _log_data(run, prepared, datamodule)
        sink = prediction_sink(tables, prepared.task)
        module = _module(config, prepared, fmt, encoder, tokenizer, datamodule.labels, sink)
        if config.train.compile:
            module.encoder.compile(dynamic=True)  # in place: the state dict keeps its keys
        training = _with_micro_batches(config, module, datamodule)
        run.log_params({"train.micro_batch_used": training.train.batch_size,
                        "train.accumulate_used": training.train.accumulate})
        total = sum(p.numel() for p in module.parameters())
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        run.log_params({"model.parameters": total, "model.trainable_parameters": trainable,
                        "model.trainable_fraction": round(trainable / total, 6),
                        "model.adapter_parameters": adapter_parameters(module.encoder)})
        resume = Resume(run, config.params(), config.train.seed, config.checkpoint_dir,
                        config.checkpoint_every_steps, config.checkpoint_every_minutes, rank=rank)
        if ranks > 1:  # for the ranks Lightning starts from here
            os.environ[distributed.RESUME_FOLDER_ENV] = str(resume.folder.folder)
            distributed.quiet_score_warnings()
        selection, best = _selection_callbacks(datamodule, prepared.train_task, resume.selection_folder(),
                                               config.train.patience)
        progress = ProgressLine(_progress_label(config, prepared), best.monitor if best else None)
        trainer = _trainer(training, run.lightning_logger(), [*selection, resume.callback, progress, *callbacks],
                           bool(datamodule.selection_sets))
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume.ckpt_path)
            weights = best.best_model_path if best is not None and best.best_model_path else None
            selection_score = float(best.best_model_score) if weights else None
            if ranks > 1:
                if weights is None:  # every rank takes part in writing the weights (sharded under FSDP)
                    weights = str(resume.selection_folder() / "final.ckpt")
                    trainer.save_checkpoint(weights, weights_only=True)
                torch.distributed.destroy_process_group()  # the ranks are done together; rank 0 goes on alone
                if rank != 0:
                    return None
                # rank 0 evaluates alone, on one device, with a module the strategy has not wrapped
                module = _module(config, prepared, fmt, load_encoder(config.encoder)[0], tokenizer,
                                 datamodule.labels, sink)
                trainer = _trainer(distributed.one_device(config), run.lightning_logger(), [], has_validation=False)
            if weights is not None:
                module.load_selected(torch.load(weights, weights_only=True))
            trainer.test(module, datamodule=datamodule, verbose=False)
            run.log_metrics(module.final_scores, step=trainer.global_step)
            in_place = run.artifact_folder("checkpoint")
            checkpoint = save_checkpoint(in_place or Path(tmp) / "checkpoint", module.encoder, tokenizer, module.head,
                                         _checkpoint_meta(config, prepared, datamodule.labels, run.run_id),
                                         saved_dtype(config.train), base=config.encoder)
            if in_place is None:
                run.log_artifacts(checkpoint, "checkpoint")
            run.log_dict(module.scores, "scores.json")
            if selection_score is None:  # no English validation data: the final English score stands in
                selection_score = module.scores.get(f"validation/{prepared.train_task.train_language}/"
                                                    f"{prepared.train_task.metric}")
            if selection_score is not None:
                run.log_metrics({"selection/score": selection_score})
        except BaseException as error:  # a SIGTERM after training (testing, saving) too: the retry resumes
            if preempted(error):
                resume.interrupted()
            else:
                resume.folder.release()
            raise
        resume.finished()
        return RunResult(run.run_id, dict(module.scores), f"runs:/{run.run_id}/checkpoint", selection_score)


def _progress_label(config: RunConfig, prepared: Prepared) -> str:
    """A sweep's trial by its study and number; any other fit by its run name."""
    study, trial = config.tags.get("xstilts.study"), config.tags.get("xstilts.trial")
    return f"{study} trial {trial}" if study is not None else config.run_name or f"fit {prepared.task.name}"


def saved_dtype(train):
    """The torch dtype a fit's checkpoint is saved in: TrainConfig.save_dtype, or its training precision's."""
    import torch

    name = train.save_dtype
    if name == "training":
        name = "bfloat16" if train.precision.startswith("bf16") else \
            "float16" if train.precision.startswith("16") else "float32"
    return getattr(torch, name)


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
    if prepared.task.mixture is not None:
        _log_mixture(run, prepared.task, datamodule)
    _log_read_data(run, datamodule, [*prepared.task.members, prepared.train_task, prepared.task])


def _log_read_data(run, datamodule, tasks) -> None:
    """What the run read: MLflow datasets (sweeps/tracking/datasets.py), provenance, perturbed samples."""
    from sweeps.tracking.datasets import dataset_inputs

    run.log_inputs(dataset_inputs(datamodule.read_sets(), datamodule.data_dir))
    _log_provenance(run, tasks, datamodule.data_dir)
    _log_robustness(run, datamodule)


def _log_mixture(run, task: TaskSpec, datamodule) -> None:
    """A mixture's tasks, sampling rule, temperature, cap and resulting rates: params, and tags (xstilts.mixture.*)."""
    from datamodules.mixtures import describe

    described = describe(task.mixture, datamodule.train_sizes)
    run.log_params(described)
    run.set_tags({f"xstilts.{key}": value for key, value in described.items()})


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
    from sweeps.runs.console import once_per_process
    from sweeps.runs.predictions import prediction_sink
    from sweeps.tracking import faults
    from sweeps.tracking.artifacts import CheckpointError, is_tracked, local_checkpoint
    from sweeps.tracking.store import tracked_run, tracking_uri

    once_per_process()
    uri = tracking_uri(config.tracking_uri)
    faults.configure(config.tracking_timeout)
    check_tracking(uri)
    check_artifacts(uri)
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
                     config.parent_run_id, config.spool_dir) as run, run.tables() as tables:
        run.log_params({**config.params(), "checkpoint": checkpoint})
        datamodule = _datamodule(config, prepared, fmt, tokenizer, labels=labels)
        datamodule.setup("test")
        run.log_params({f"data.size.{name}": n for name, n in datamodule.sizes().items()})
        _log_read_data(run, datamodule, [prepared.task])
        module = TaskModule(encoder, head, fmt, labels, tokenizer.pad_token_id,
                            on_predictions=prediction_sink(tables, prepared.task, predictions_dir))
        trainer = _trainer(config, run.lightning_logger(), [], has_validation=False)
        trainer.test(module, datamodule=datamodule, verbose=False)
        run.log_metrics(module.final_scores)
        run.log_dict(module.scores, "scores.json")
        return RunResult(run.run_id, dict(module.scores))


def main(request: str, answer: str) -> None:
    """A fit on several devices, in the child process `fit_in_child` starts (`python -m sweeps.runs.run CONFIG
    RESULT`), and in each rank Lightning starts from it: rank 0 writes how it ended into RESULT."""
    from sweeps.runs import distributed, preemption

    preemption.handle_sigterm()
    config = RunConfig.model_validate_json(Path(request).read_text())
    rank = distributed.launched_rank(config.train)
    try:
        result, error = _fit(config, (), rank), None
    except BaseException as raised:  # noqa: BLE001 - reported to the parent, which raises it again
        result, error = None, raised
    if rank == 0:
        Path(answer).write_text(json.dumps(distributed.outcome(error, result)))
    sys.exit(0 if error is None else preemption.PREEMPTED if preemption.preempted(error) else 1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
