"""Every setting of xstilts, written once: type, default, valid range and one line of help.

The command line's flags (sweeps/config/flags.py), the experiment file's keys (sweeps/engine/experiment.py), the
values logged as MLflow params and what the Lightning module and datamodule receive are all read from these
models. pydantic validates them: every value is type- and range-checked, and an error names the flag or key, the
value and what would be valid (sweeps/config/errors.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from datamodules.mixtures import Mixture
from lightning_modules.encoders.tuning import ADAPTER_PLACEMENTS, TUNING_MODES

FIXTURES = Path(__file__).resolve().parents[2] / "datamodules" / "fixtures"
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")
SPLITS = ("train", "validation", "test")
SAVE_DTYPES = ("training", "float32", "bfloat16", "float16")
KEEP_MODES = ("best", "all", "none")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@=-]*$")
GPU_ID = re.compile(r"^(\d+|(GPU|MIG)-[A-Za-z0-9/-]+)$")  # what CUDA_VISIBLE_DEVICES takes: index or UUID


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def safe_name(value: str, what: str) -> str:
    """A name that becomes a folder or file name (experiment, run, study): no separators, no '..'."""
    if not SAFE_NAME.match(value) or ".." in value:
        raise ValueError(f"{what} {value!r} is not a safe name: letters, digits and . _ + @ = - only, starting "
                         f"with a letter or digit, no '..' or '/'")
    return value


def gpu_ids(value: str) -> list[str]:
    """The GPUs of a `--gpus` list ('0,1,2,3', or GPU-/MIG- UUIDs), each once."""
    ids = [part.strip() for part in str(value).split(",")]
    wrong = next((part for part in ids if not GPU_ID.match(part)), None)
    if wrong is not None:
        raise ValueError(f"{wrong!r} is not a GPU; valid: comma-separated GPU indices (0,1,2,3) or GPU-/MIG- UUIDs, "
                         f"as CUDA_VISIBLE_DEVICES takes them")
    if len(set(ids)) < len(ids):
        raise ValueError("names a GPU twice")
    return ids


def gpu_list(value):
    """A `gpus` setting as given in YAML (0, [0, 1], "0,1") or on the command line, as one checked string."""
    if value is None:
        return None
    text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    gpu_ids(text)
    return text


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def evolve(self, **changes):
        """A copy with `changes`, validated like the original."""
        return type(self).model_validate({**self.model_dump(), **changes})


class DataConfig(Settings):
    data_dir: str | None = Field(None, description="local files in the hub layout (DIR/<dataset>/<config>/"
                                                   "<split>.jsonl); 'fixtures' for the bundled fixtures; "
                                                   "default: the hub")
    tasks_files: tuple[str, ...] = Field((), description="extra task declarations (YAML); repeat the flag",
                                         json_schema_extra={"flag": "--tasks-file", "append": True})
    languages: tuple[str, ...] = Field((), description="evaluation languages, comma-separated (default: all "
                                                       "of the task's)")
    eval_splits: tuple[Literal["validation", "test", "train"], ...] = Field(
        ("validation", "test"), min_length=1, description="evaluation splits, comma-separated")
    max_length: int = Field(256, ge=8, le=8192, description="maximum input length in sub-tokens")
    doc_stride: int = Field(128, ge=1, le=8192, description="span QA: overlap of the windows of a long context")
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="masked-LM phases: share of sub-tokens masked")
    whole_word_mask: bool = Field(False, description="masked-LM phases: mask whole words, not single sub-tokens")
    max_train_examples: int | None = Field(None, ge=1, description="use at most N training examples")
    max_eval_examples: int | None = Field(None, ge=1, description="use at most N examples per evaluation set")
    streaming: bool = Field(False, description="stream the training data (needs --max-steps)")
    num_workers: int = Field(0, ge=0, le=256, description="DataLoader worker processes")
    group_by_length: bool = Field(False, description="training batches of examples of similar lengths (less "
                                                     "padding, faster)")
    group_eval_by_length: bool = Field(True, description="evaluation batches of examples of similar lengths (the "
                                                         "same scores and predictions, faster)")
    seqeval: Literal["0.0", "1.x"] | None = Field(
        None, description="tagging chunk F1 as seqeval 0.0.x computes it (XTREME's published numbers; the default) "
                          "or as seqeval 1.x")
    perturbations: tuple[str, ...] = Field(
        (), description="also evaluate perturbed copies of every evaluation set, comma-separated: typos, "
                        "word_order, casing, code_switch (final evaluation only)",
        json_schema_extra={"flag": "--perturb"})
    perturb_seed: int = Field(0, ge=0, description="seed of the perturbations")
    perturb_dictionary: str | None = Field(
        None, description="code_switch's dictionary: JSON like datamodules/dictionaries/en-de-fr-es.json (the "
                          "default), or MUSE lines in <src>-<tgt>.txt", json_schema_extra={"flag": "--dictionary"})
    adversarial: tuple[str, ...] = Field((), description="also evaluate on these registered tasks of the same "
                                                         "format and labels, e.g. anli_plus for an XNLI checkpoint")
    mixture: Mixture | None = Field(None, description="a mixture task's definition, copied from its declaration "
                                                      "by the run (so its params and phase key record it); not set "
                                                      "by hand", json_schema_extra={"flag": None})

    def data_path(self) -> Path | None:
        if self.data_dir == "fixtures":
            return FIXTURES
        return Path(self.data_dir).expanduser() if self.data_dir else None


class TrainConfig(Settings):
    lr: float = Field(1e-5, gt=0, le=1, description="peak learning rate (AdamW)")
    epochs: int = Field(3, ge=1, le=1000, description="training epochs")
    max_steps: int = Field(-1, ge=-1, description="stop after N optimizer steps (-1: after --epochs)")
    batch_size: int = Field(32, ge=1, le=65536, description="training micro-batch size")
    eval_batch_size: int = Field(64, ge=1, le=65536, description="evaluation batch size")
    accumulate: int = Field(1, ge=1, le=4096, description="gradient accumulation steps")
    micro_batch: Annotated[int, Field(ge=1, le=65536)] | Literal["auto"] | None = Field(
        None, description="examples per forward pass, keeping the effective batch (batch size x accumulate) "
                                "and its loss, a mean over the whole effective batch; accumulation becomes "
                                "effective / micro-batch. auto: the largest that fits on the GPU (on CPU: the batch "
                                "size). Default: the batch size", json_schema_extra={"metavar": "N|auto"})
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of the steps with linear warm-up")
    weight_decay: float = Field(0.01, ge=0, lt=1, description="AdamW weight decay")
    adam_epsilon: float = Field(1e-8, gt=0, lt=1, description="AdamW epsilon")
    eval_every: int | None = Field(None, ge=1, description="validate on English every N steps (default: each "
                                                           "epoch)")
    patience: int | None = Field(None, ge=1, description="early stopping patience, in validations")
    precision: Literal[PRECISIONS] = Field("32-true", description="Lightning precision, e.g. bf16-mixed on GPU")
    compile: bool = Field(False, description="torch.compile the encoder (GPU; on CPU it only adds a minute or two "
                                             "of compiling)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="random seed")
    tuning: Literal[TUNING_MODES] = Field("full", description="what trains besides the head (lora/ia3: peft "
                                                              "adapters, saved as adapter weights on their base; "
                                                              "adapter: bottleneck adapters, kept in the checkpoint)")
    lora_rank: int = Field(8, ge=1, le=1024, description="LoRA rank")
    adapter_placement: Literal[ADAPTER_PLACEMENTS] = Field(
        "pfeiffer", description="--tuning adapter: after the feed-forward output of each layer (pfeiffer) or also "
                                "after its attention output (houlsby)")
    adapter_reduction_factor: int = Field(16, ge=1, le=4096, description="--tuning adapter: hidden size / "
                                                                          "bottleneck width")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less "
                                                            "memory, more time")
    devices: int = Field(1, ge=1, le=1024, description="devices (GPUs, or CPU processes) of this run per node; "
                                                       "above 1 a distributed fit: the batch size is per device")
    strategy: Literal["auto", "ddp", "fsdp"] = Field("auto", description="Lightning's strategy for several devices "
                                                     "(auto: ddp)")
    num_nodes: int = Field(1, ge=1, le=1024, description="machines of this run (one rank per device on each, "
                                                         "started by srun or torchrun)")
    save_dtype: Literal[SAVE_DTYPES] = Field(
        "training", description="dtype of the saved checkpoint's weights: 'training' (bfloat16 or float16 when "
                                "--precision is bf16-*/16-*, else float32), or float32, bfloat16, float16 (half the "
                                "disk of float32)")
    keep: Literal[KEEP_MODES] = Field(
        "best", description="sweeps: which of a study's phase checkpoints stay once it ends: best (the study's best "
                            "and any a later phase started from), all, or none (only those a later phase needs); "
                            "no part of the phase key")

    # settings that do not change what a phase trains: its key (sweeps/engine/pipeline.py) leaves them out
    NOT_IN_PHASE_KEY: ClassVar[frozenset[str]] = frozenset({"keep"})

    @field_validator("max_steps")
    @classmethod
    def _no_zero_steps(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be -1 (no limit) or at least 1")
        return value

    @field_validator("micro_batch")
    @classmethod
    def _micro_batch_divides(cls, value, info):
        effective = info.data.get("batch_size", 1) * info.data.get("accumulate", 1)
        if isinstance(value, int) and effective % value:
            raise ValueError(f"does not divide the effective batch {effective} (batch size x accumulate)")
        return value

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.accumulate


class TrackingConfig(Settings):
    tracking_uri: str | None = Field(None, description="MLflow store: sqlite:///…, postgresql://…, http(s)://… "
                                                       "(default: $MLFLOW_TRACKING_URI, else sqlite in mlruns/)")
    experiment: str = Field("xstilts", description="MLflow experiment name")
    run_name: str | None = Field(None, description="MLflow run name")
    tracking_timeout: float | None = Field(None, gt=0, le=3600, description="seconds a tracking call may take, "
                                           "retries included, before it fails or the run goes to the spool "
                                           "(default: $XSTILTS_TRACKING_TIMEOUT, else 60)")
    spool_dir: str | None = Field(None, description="where a run waits while the tracking store is out of reach "
                                                    "(default: $XSTILTS_SPOOL, else <xstilts cache>/spool)")
    artifact_root: str | None = Field(None, description="where a database tracking store (postgresql://…) keeps "
                                      "new experiments' checkpoints: a folder every host mounts, or s3://…, gs://… "
                                      "(default: $XSTILTS_ARTIFACT_ROOT; a server decides for itself)")
    system_metrics_interval: float | None = Field(
        None, ge=0, le=3600, description="seconds between samples of CPU, memory, disk, network (and GPU) use, "
                                         "logged as system/... metrics of every fit run; 0: none (default: "
                                         "$XSTILTS_SYSTEM_METRICS_INTERVAL, else 10)")

    @field_validator("experiment")
    @classmethod
    def _safe_experiment(cls, value: str) -> str:
        return safe_name(value, "experiment")


class ResumeConfig(Settings):
    """Resumable checkpoints (sweeps/runs/resume.py): a preempted or killed run continues from the last one."""

    checkpoint_every_steps: int | None = Field(None, ge=1, description="resumable checkpoint every N optimizer "
                                               "steps (default: $XSTILTS_CHECKPOINT_EVERY_STEPS)")
    checkpoint_every_minutes: float | None = Field(None, ge=0, description="resumable checkpoint every M minutes "
                                                   "(default: $XSTILTS_CHECKPOINT_EVERY_MINUTES, else 30; 0: only "
                                                   "on SIGTERM)")
    checkpoint_dir: str | None = Field(None, description="where resumable checkpoints are kept (default: "
                                                         "$XSTILTS_CHECKPOINT_DIR, else <xstilts cache>/resume)")


MODEL_NAME_FIELDS = ("task", "experiment")


class PromoteConfig(Settings):
    """`xstilts promote`: which runs compete, and the registered model the champion becomes a version of."""

    experiments: tuple[str, ...] = Field(
        (), description="rank the runs of these MLflow experiments only, comma-separated (default: the one "
                        "experiment holding finished fit runs of the task; an error names them when several do)",
        json_schema_extra={"flag": "--experiment"})
    model_name: str = Field("xstilts-{experiment}-{task}",
                            description="registered model name; {task} and {experiment} (the experiments' names "
                                        "joined by '+') are filled in")
    checkpoint_only: bool = Field(False, description="register the run's checkpoint folder itself, not an MLflow "
                                                     "pyfunc model holding a copy of it (no copy on disk; "
                                                     "mlflow.pyfunc.load_model and mlflow models serve cannot load "
                                                     "it)")

    @field_validator("experiments")
    @classmethod
    def _safe_experiments(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(safe_name(name, "experiment") for name in value)

    @field_validator("model_name")
    @classmethod
    def _fillable(cls, value: str) -> str:
        import string

        named = [field for _, field, _, _ in string.Formatter().parse(value) if field is not None]
        unknown = ["{" + field + "}" for field in named if field not in MODEL_NAME_FIELDS]
        if unknown:
            raise ValueError(f"names {', '.join(unknown)}: only {{task}} and {{experiment}} are filled in")
        if "task" not in named:
            raise ValueError("must contain {task} (one registered model per task)")
        safe_name(value.format(task="t", experiment="e"), "model name")
        return value

    def registered_name(self, task: str, experiments: list[str]) -> str:
        return self.model_name.format(task=task, experiment="+".join(experiments))


class SweepConfig(Settings):
    storage: str | None = Field(None, description="Optuna storage URL (default: sqlite in mlruns/; "
                                                  "postgresql://… to share)")
    workers: int = Field(1, ge=1, le=256, description="worker processes on this machine")
    worker_index: int = Field(0, ge=0, description="distinct per worker across machines")
    tracking_uri: str | None = Field(None, description="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite "
                                                       "in mlruns/)")
    check: bool = Field(False, description="only run the preflight: check every input of the experiment, create "
                                           "nothing")
    plan: bool = Field(False, description="print what the sweep will do (studies, trials finished and new, steps, "
                                          "GPU-hours) after the preflight, and create nothing")
    throughput: float | None = Field(None, gt=0, description="--plan: training examples per second per GPU for the "
                                                             "GPU-hours (default: measured from finished runs)")
    gpus: str | None = Field(None, description="GPUs of this machine for the sweep's workers, e.g. 0,1,2,3: each "
                                               "worker gets its share as CUDA_VISIBLE_DEVICES (default --workers: "
                                               "one per GPU)")

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value):
        return gpu_list(value)


class ReportConfig(Settings):
    by: tuple[str, ...] = Field((), description="group zero-shot transfer by these factors, comma-separated: "
                                               "complexity, domain, order, train_language, encoder, experiment, "
                                               "tuning, or any task or run tag (default: the intermediate x target "
                                               "table)")


class RunConfig(Settings):
    """One tracked run: what `xstilts fit` and `xstilts evaluate` do, and each phase of a sweep."""

    task: str = ""
    encoder: str = Field("tiny-xlmr", description="hub id, local folder, xstilts checkpoint, models:/… or runs:/… "
                                                  "URI, or a built-in: tiny-xlmr, multilingual-e5-small")
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    tracking_uri: str | None = None
    experiment: str = "xstilts"
    run_name: str | None = None
    tags: dict = {}
    parent_run_id: str | None = None
    # faults and preemption: TrackingConfig's and ResumeConfig's (not TrainConfig's: they do not change what a
    # phase trains, so they are no part of its key)
    tracking_timeout: float | None = None
    spool_dir: str | None = None
    system_metrics_interval: float | None = None
    checkpoint_every_steps: int | None = None
    checkpoint_every_minutes: float | None = None
    checkpoint_dir: str | None = None

    @field_validator("experiment")
    @classmethod
    def _safe_experiment(cls, value: str) -> str:
        return safe_name(value, "experiment")

    def params(self) -> dict:
        """The run's settings as flat MLflow params (`data.max_length`, `train.lr`, ...)."""
        flat = {"task": self.task, "encoder": self.encoder}
        flat.update({f"data.{k}": v for k, v in self.data.model_dump().items()})
        flat.update({f"train.{k}": v for k, v in self.train.model_dump().items()})
        return flat
