"""One Lightning DataModule for every task: English training data, English validation for checkpoint selection,
and one evaluation set per (language, split) for zero-shot evaluation. Tokenized features are cached on disk,
keyed by the data's fingerprint, the tokenizer and the feature settings, and memory-mapped on the next run."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from datamodules.resumable import EpochBatches, ResumableLoader, ShuffledBatches
from datamodules.pools import is_pool, limit_sources, with_calibration
from datamodules.sources import MissingData, collect_labels, load_split, split_key
from datamodules.tasks import TaskError, TaskSpec
from lightning_modules.formats import get_spec
from lightning_modules.formats.base import EvalSet, FeatureSettings
from datamodules.perturb import Robustness, changed_share, perturb_examples, samples, unsupported
from lightning_modules.metrics.robustness import perturbed_split

log = logging.getLogger(__name__)
FEATURES_VERSION = 2  # bump when a format's featurize changes, to invalidate cached features
SELECTION_SPLIT = "val"  # the name under which training-time (English) validation is logged


def tokenizer_fingerprint(tokenizer) -> str:
    """What decides the tokenizer's output; not its truncation/padding state, which each call changes."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        content = repr(sorted(tokenizer.get_vocab().items()))
    else:  # serialized without its truncation and padding, restored after (no JSON round trip: 0.6 s at 250k pieces)
        truncation, padding = backend.truncation, backend.padding
        backend.no_truncation()
        backend.no_padding()
        try:
            content = backend.to_str()
        finally:
            if truncation:
                backend.enable_truncation(**truncation)
            if padding:
                backend.enable_padding(**padding)
    return hashlib.sha256(f"{type(tokenizer).__name__}\n{content}".encode()).hexdigest()


@dataclass(frozen=True)
class ReadSet:
    """One set of rows a run read: task, split (`test.typos` for a perturbed copy), language, data key, size."""

    task: TaskSpec
    split: str
    lang: str
    key: dict
    rows: int | None  # None for a stream

    @property
    def base_split(self) -> str:
        """The split the rows come from (a perturbed copy's or an adversarial set's, without the suffix)."""
        return self.split.split(".", 1)[0]


def featurizer(fmt, tokenizer, task: TaskSpec, settings: FeatureSettings, training: bool):
    """The function `datasets.Dataset.map(batched=True, with_indices=True)` turns canonical rows into features with."""

    def featurize(batch, indices):
        return fmt.featurize({**batch, "_index": indices}, tokenizer, task, settings, training)
    return featurize


class TaskDataModule(L.LightningDataModule):
    def __init__(self, task: TaskSpec, fmt, tokenizer, train_task: TaskSpec | None = None,
                 data_dir: Path | None = None, eval_languages: list[str] | None = None,
                 eval_splits=("validation", "test"), settings: FeatureSettings = FeatureSettings(),
                 batch_size: int = 32, eval_batch_size: int = 64, num_workers: int = 0, streaming: bool = False,
                 max_train_examples: int | None = None, max_eval_examples: int | None = None,
                 cache_root: Path | None = None, labels: list[str] | None = None,
                 robustness: Robustness = Robustness(), group_by_length: bool = False, seed: int | None = None,
                 group_eval_by_length: bool = True, accumulate: int = 1):
        super().__init__()
        # the training order's seed: each epoch's order from (seed, epoch), and the loader's position resumable;
        # None: shuffled from the global generator, not resumable mid-epoch
        self.seed = seed
        self.task, self.fmt, self.tokenizer = task, fmt, tokenizer
        self.train_task = train_task or task
        self.data_dir = Path(data_dir) if data_dir else None
        self.eval_languages = eval_languages or list(task.languages)
        self.strict_languages = bool(eval_languages)  # languages asked for by name must all have data
        for lang in self.eval_languages:
            task.check_language(lang)
        self.missing: list[str] = []  # "<split>/<lang>" with no data, when evaluating all of a task's languages
        # the requested evaluation splits this task has; if it has none of them, the ones it has
        self.eval_splits = [s for s in eval_splits if task.has_split(s)] or \
            [s for s in ("validation", "test") if task.has_split(s)]
        self.settings, self.streaming = settings, streaming
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.max_train_examples, self.max_eval_examples = max_train_examples, max_eval_examples
        self.cache_root = cache_root
        self.group_by_length = group_by_length and not streaming  # a stream's lengths are not known in advance
        self.group_eval_by_length = group_eval_by_length
        self.accumulate = accumulate  # batches per optimizer step: the loss is a mean over all their units
        self.labels = labels or self._labels()
        self.cache_hits: dict[str, bool] = {}
        self.train_features = None
        self.train_key: dict | None = None  # what identifies the training rows (data_key)
        self.train_examples: int | None = None  # training rows (before featurizing: span QA windows are more)
        self.selection_set: EvalSet | None = None
        self.eval_sets: list[EvalSet] = []
        # perturbed copies and adversarial sets of the final evaluation (never of the `val` set that selects)
        self.robustness = robustness
        self.perturbed: dict[str, dict] = {}  # "<split>/<lang>" of a perturbed copy -> changed share, samples
        self._tokenizer_key = None

    def _labels(self) -> list[str] | None:
        if self.task.labels == "from_data":
            return collect_labels(self.train_task, self.data_dir)
        return self.task.labels

    # ------------------------------------------------------------------ loading and caching

    def examples(self, task: TaskSpec, split: str, lang: str, limit: int | None, streaming: bool = False,
                 labels: list[str] | None = None):
        rows = load_split(task, split, lang, self.data_dir, label_names=labels or self.labels, streaming=streaming)
        if limit is not None and is_pool(task):  # a retrieval pool keeps all its candidates
            return limit_sources(rows, limit)
        if limit is not None:
            rows = rows.take(limit) if streaming else rows.select(range(min(limit, len(rows))))
        return rows

    def data_key(self, task: TaskSpec, split: str, lang: str, limit: int | None, labels=None) -> dict:
        """What decides the rows `examples` returns (it keys the feature cache)."""
        return {**split_key(task, split, lang, self.data_dir, labels or self.labels), "limit": limit}

    def features(self, examples, training: bool, name: str, key: dict, variant: dict | None = None):
        """Tokenized features of `examples` (whose content `key` identifies), from the cache when the same data was
        tokenized before. Workers sharing the cache each write their own staging folder; the first rename wins."""
        import datasets

        featurize = self._featurizer(training)
        if self.streaming and training:
            return examples.map(featurize, batched=True, with_indices=True, remove_columns=examples.column_names)
        folder = self._cache_folder(key, training, variant)
        self.cache_hits[name] = folder.exists()
        if folder.exists():
            return datasets.load_from_disk(str(folder))
        features = examples.map(featurize, batched=True, with_indices=True, remove_columns=examples.column_names,
                                desc=f"tokenizing {name}", load_from_cache_file=False)
        staging = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
        features.save_to_disk(str(staging))
        try:
            staging.rename(folder)
        except OSError:  # another process cached the same features first
            shutil.rmtree(staging, ignore_errors=True)
        return datasets.load_from_disk(str(folder))

    def _featurizer(self, training: bool):
        return featurizer(self.fmt, self.tokenizer, self.task, self.settings, training)

    def _cache_folder(self, key: dict, training: bool, variant: dict | None = None) -> Path:
        from lightning_modules.encoders import cache_dir

        if self._tokenizer_key is None:
            self._tokenizer_key = tokenizer_fingerprint(self.tokenizer)
        content = {"data": key, "format": self.fmt.name, "training": training,
                   "settings": asdict(self.settings), "tokenizer": self._tokenizer_key, "version": FEATURES_VERSION}
        if variant is not None:  # a perturbed copy: the perturbation, its seed and dictionary
            content["variant"] = variant
        text = json.dumps(content, sort_keys=True, default=str)
        root = self.cache_root or cache_dir() / "features"
        return root / hashlib.sha256(text.encode()).hexdigest()[:32]

    def eval_set(self, task: TaskSpec, split: str, lang: str, name: str, labels: list[str] | None = None) -> EvalSet:
        examples = self.examples(task, split, lang, self.max_eval_examples, labels=labels)
        key = self.data_key(task, split, lang, self.max_eval_examples, labels)
        if task.calibration_split and split != task.calibration_split:  # BUCC: the threshold comes from dev
            calibration = self.examples(task, task.calibration_split, lang, self.max_eval_examples)
            examples = with_calibration(examples, calibration)
            key = {"eval": key, "calibration": self.data_key(task, task.calibration_split, lang,
                                                             self.max_eval_examples)}
        return EvalSet(task, lang, split, examples, self.features(examples, False, name, key), key)

    def check_data(self, training: bool) -> int | None:
        """Load and validate, without tokenizing, every split this module reads (the preflight of a run): a bad
        file, column, label or value fails here, before anything is created. Returns the number of training
        examples (None: not training, or a stream of unknown length)."""
        count = None
        if training:
            self._require_training()
            lang = self.train_task.train_language
            rows = self.examples(self.train_task, "train", lang, self.max_train_examples, self.streaming)
            count = None if self.streaming else len(rows)
            if self.train_task.has_split("validation"):
                self.examples(self.train_task, "validation", lang, self.max_eval_examples)
        for split in self.eval_splits:
            for lang in self.eval_languages:
                try:
                    self.examples(self.task, split, lang, self.max_eval_examples)
                except MissingData:
                    if self.strict_languages:
                        raise
        return count

    def _require_training(self) -> None:
        if not get_spec(self.task.format).trains:
            raise TaskError(f"task {self.task.name!r} ({self.task.format}) is evaluation only: it has no training")

    # ------------------------------------------------------------------ Lightning hooks

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and self.train_features is None:
            self._setup_fit()
        if stage == "test" and not self.eval_sets:
            for split in self.eval_splits:
                for lang in self.eval_languages:
                    self._add_eval_set(split, lang)
            self._add_robustness_sets()
            if self.missing:
                shown = ", ".join(self.missing[:8]) + (f" and {len(self.missing) - 8} more" if len(self.missing) > 8 else "")
                log.warning("%s: no data for %s (not evaluated)", self.task.name, shown)
            if not self.eval_sets:
                raise TaskError(f"task {self.task.name!r} has no evaluation split among {', '.join(self.eval_splits)}")

    def _add_eval_set(self, split: str, lang: str) -> None:
        try:
            self.eval_sets.append(self.eval_set(self.task, split, lang, f"{split}/{lang}"))
        except MissingData:
            if self.strict_languages:
                raise
            self.missing.append(f"{split}/{lang}")

    def _add_robustness_sets(self) -> None:
        """Adversarial tasks' sets, and a perturbed copy of every clean evaluation set: split `test` gives
        `test.anli_plus`, `test.typos` (datamodules/perturb.py)."""
        clean_sets = list(self.eval_sets)
        for task in self.robustness.adversarial:
            self._add_adversarial(task)
        for perturber in self.robustness.perturbers():
            reason = unsupported(self.task, perturber.name)
            if reason:
                log.warning("%s: not perturbed with %s: %s", self.task.name, perturber.name, reason)
                continue
            for clean in clean_sets:
                self.eval_sets.append(self.perturbed_set(clean, perturber))

    def perturbed_set(self, clean: EvalSet, perturber) -> EvalSet:
        examples = perturb_examples(clean.examples, clean.task, clean.lang, perturber, clean.key)
        split = perturbed_split(clean.split, perturber.name)
        name = f"{split}/{clean.lang}"
        self.perturbed[name] = {"changed": changed_share(clean.examples, examples, clean.task),
                                "samples": samples(clean.examples, examples, clean.task)}
        features = self.features(examples, False, name, clean.key, variant=perturber.key())
        return EvalSet(clean.task, clean.lang, split, examples, features, {"clean": clean.key, **perturber.key()})

    def _add_adversarial(self, task: TaskSpec) -> None:
        """Another task's sets (same format, labels matched by position), in the evaluation languages it has
        (else its training language)."""
        languages = [lang for lang in self.eval_languages if lang in task.languages] or [task.train_language]
        splits = [s for s in self.eval_splits if task.has_split(s)] or \
            [s for s in ("validation", "test") if task.has_split(s)]
        for split in splits:
            for lang in languages:
                name = f"{perturbed_split(split, task.name)}/{lang}"
                try:
                    eval_set = self.eval_set(task, split, lang, name,
                                             labels=task.labels if isinstance(task.labels, list) else None)
                except MissingData:
                    self.missing.append(name)
                    continue
                eval_set.split = perturbed_split(split, task.name)
                self.eval_sets.append(eval_set)

    def _setup_fit(self) -> None:
        self._require_training()
        train_lang = self.train_task.train_language
        examples = self.examples(self.train_task, "train", train_lang, self.max_train_examples, self.streaming)
        key = self.data_key(self.train_task, "train", train_lang, self.max_train_examples)
        self.train_key = key
        self.train_examples = None if self.streaming else len(examples)
        self.train_features = self.features(examples, True, f"train/{train_lang}", key)
        if self.train_task.has_split("validation"):
            self.selection_set = self.eval_set(self.train_task, "validation", train_lang,
                                               f"{SELECTION_SPLIT}/{train_lang}")
            self.selection_set.split = SELECTION_SPLIT

    def train_dataloader(self):
        """Each rank of a distributed fit gets its share of every epoch's batches (EpochBatches.shard); Lightning's
        own distributed sampler is off (evaluation sets stay whole on every rank)."""
        collate = self.fmt.collator(self.tokenizer, self.settings, training=True)
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        if world > 1 and self.streaming:
            raise ValueError("a streamed training set cannot be shared between the ranks of a distributed fit")
        if self.group_by_length:
            sampler = LengthGroupedBatches(feature_lengths(self.train_features, self.fmt.length_column),
                                           self.batch_size, seed=self.seed)
            return ResumableLoader(self.train_features, sampler.shard(rank, world), collate_fn=collate,
                                   loss_units=self.fmt.loss_units, accumulate=self.accumulate,
                                   **self._loader_options(persistent=True))
        if self.seed is not None and not self.streaming:  # a stream has no position to resume from
            sampler = ShuffledBatches(len(self.train_features), self.batch_size, self.seed)
            return ResumableLoader(self.train_features, sampler.shard(rank, world), collate_fn=collate,
                                   loss_units=self.fmt.loss_units, accumulate=self.accumulate,
                                   **self._loader_options(persistent=True))
        return DataLoader(self.train_features, batch_size=self.batch_size, shuffle=not self.streaming,
                          collate_fn=collate, **self._loader_options(persistent=True))

    def longest_batch(self, size: int) -> dict:
        """A training batch of the `size` longest training features (the most memory a batch of that size takes)."""
        lengths = feature_lengths(self.train_features, self.fmt.length_column)
        longest = sorted(range(len(lengths)), key=lambda i: -lengths[i])[:size]
        longest = (longest * size)[:size]  # fewer features than asked for: repeated
        collate = self.fmt.collator(self.tokenizer, self.settings, training=True)
        return collate([self.train_features[i] for i in longest])

    def _eval_loader(self, eval_set: EvalSet, persistent: bool = False):
        collate = self.fmt.collator(self.tokenizer, self.settings, training=False)
        eval_set.order = self._eval_order(eval_set.features)
        if eval_set.order is None:
            return DataLoader(eval_set.features, batch_size=self.eval_batch_size, shuffle=False, collate_fn=collate,
                              **self._loader_options(persistent))
        size = self.eval_batch_size
        batches = [eval_set.order[i: i + size] for i in range(0, len(eval_set.order), size)]
        return DataLoader(eval_set.features, batch_sampler=batches, collate_fn=collate,
                          **self._loader_options(persistent))

    def _eval_order(self, features) -> list[int] | None:
        """Longest first, so that batches pad little (the module restores the features' order before scoring);
        None: data order (grouping off, or a format whose outputs are per batch, such as masked LM's, whose
        masks depend on the batch)."""
        column = self.fmt.length_column
        if not (self.group_eval_by_length and self.fmt.per_example() and column in features.column_names):
            return None
        lengths = feature_lengths(features, column)
        return sorted(range(len(lengths)), key=lambda i: -lengths[i])

    def _loader_options(self, persistent: bool) -> dict:
        # workers of a loader used again (each epoch, each validation) stay alive; pinned batches copy to the GPU
        # without blocking
        return {"num_workers": self.num_workers, "persistent_workers": persistent and self.num_workers > 0,
                "pin_memory": torch.cuda.is_available()}

    @property
    def selection_sets(self) -> list[EvalSet]:
        """The English validation sets that select the checkpoint (one here; one per task in a mixture)."""
        return [self.selection_set] if self.selection_set else []

    def val_dataloader(self):
        return [self._eval_loader(self.selection_set, persistent=True)] if self.selection_set else []

    def test_dataloader(self):
        return [self._eval_loader(s) for s in self.eval_sets]

    def read_sets(self) -> list[ReadSet]:
        """Every set this module read, training first: the selection set as the validation split it is."""
        found = []
        if self.train_key is not None:
            lang = self.train_task.train_language
            found.append(ReadSet(self.train_task, "train", lang, self.train_key, len(self.train_features)
                                 if not self.streaming else None))
        sizes = self.sizes()
        for eval_set in ([self.selection_set] if self.selection_set else []) + self.eval_sets:
            selection = eval_set.split.split(".", 1)[0] == SELECTION_SPLIT  # a mixture's: val.<task>
            split = "validation" if selection else eval_set.split
            found.append(ReadSet(eval_set.task, split, eval_set.lang, eval_set.key,
                                 sizes[f"{eval_set.split}/{eval_set.lang}"]))
        return found

    def sizes(self) -> dict[str, int]:
        """Number of examples per set, for tracking."""
        sizes = {} if self.train_features is None or self.streaming else {"train": len(self.train_features)}
        for eval_set in ([self.selection_set] if self.selection_set else []) + self.eval_sets:
            examples = eval_set.examples  # not counting the calibration rows that travel with a split (BUCC)
            parts = examples["part"] if "part" in examples.column_names else None
            sizes[f"{eval_set.split}/{eval_set.lang}"] = parts.count("eval") if parts else len(examples)
        return sizes


def feature_lengths(features, column: str) -> list[int]:
    """Each feature's sequence length (the longest of its sequences, for multiple choice), read from Arrow."""
    import numpy as np
    import pyarrow.compute as pc

    values = features.with_format("arrow")[column]
    values = values.combine_chunks() if hasattr(values, "combine_chunks") else values
    if not hasattr(values.type, "value_type") or not hasattr(values.type.value_type, "value_type"):
        return pc.list_value_length(values).to_numpy(zero_copy_only=False).tolist()
    inner = pc.list_value_length(pc.list_flatten(values)).to_numpy(zero_copy_only=False)
    lengths = np.zeros(len(values), dtype=np.int64)
    np.maximum.at(lengths, pc.list_parent_indices(values).to_numpy(zero_copy_only=False), inner)
    return lengths.tolist()


class LengthGroupedBatches(EpochBatches):
    """Batches of similar lengths, for less padding: each epoch shuffles the examples, cuts them into mega-batches
    of `mega_batches` batches, sorts each mega-batch by length and cuts it into batches, and shuffles the batches.
    Every example is used once per epoch; each batch still comes from a random part of the data."""

    def __init__(self, lengths: list[int], batch_size: int, mega_batches: int = 50, seed: int | None = None):
        super().__init__(-(-len(lengths) // batch_size))
        self.lengths, self.batch_size, self.mega = lengths, batch_size, batch_size * mega_batches
        # default: from the global generator (seed_everything)
        self.seed = int(torch.randint(2 ** 31, ())) if seed is None else seed

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        batches = []
        for start in range(0, len(order), self.mega):
            group = sorted(order[start: start + self.mega], key=self.lengths.__getitem__, reverse=True)
            batches += [group[i: i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        return [batches[index] for index in torch.randperm(len(batches), generator=generator).tolist()]
