"""Tokenized features are cached: a second identical setup loads them from disk and tokenizes nothing."""

from pathlib import Path

from training import FIXTURES

from datamodules.datamodule import TaskDataModule
from lightning_modules.formats import get_format
from lightning_modules.formats.base import FeatureSettings


class CountingFormat:
    """The real classification format, counting the rows it tokenizes."""

    def __init__(self):
        self.inner, self.rows = get_format("classification"), 0
        self.name = self.inner.name

    def featurize(self, batch, *args):
        self.rows += len(batch["text_a"])
        return self.inner.featurize(batch, *args)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def setup(registry, tokenizer, fmt, tmp_path, max_length=64):
    datamodule = TaskDataModule(registry["pawsx"], fmt, tokenizer, data_dir=FIXTURES, eval_languages=["en", "de"],
                                settings=FeatureSettings(max_length=max_length), cache_root=tmp_path)
    datamodule.setup("fit")
    datamodule.setup("test")
    return datamodule


def test_second_identical_setup_does_not_tokenize(registry, tiny, tmp_path):
    first_format, second_format = CountingFormat(), CountingFormat()
    first = setup(registry, tiny[1], first_format, tmp_path)
    second = setup(registry, tiny[1], second_format, tmp_path)
    assert first_format.rows > 0 and not first.cache_hits["train/en"] and not first.cache_hits["test/de"]
    assert second_format.rows == 0 and all(second.cache_hits.values())
    assert second.train_features[:5] == first.train_features[:5]


def test_changed_settings_tokenize_again(registry, tiny, tmp_path):
    setup(registry, tiny[1], CountingFormat(), tmp_path)
    changed = setup(registry, tiny[1], CountingFormat(), tmp_path, max_length=32)
    assert not changed.cache_hits["train/en"] and not changed.cache_hits["test/de"]


def _build(cache_root: str, start: float, results) -> None:
    import hashlib
    import time

    from datamodules.tasks import load_registry
    from lightning_modules.encoders import load_encoder

    tokenizer = load_encoder("tiny-xlmr")[1]
    time.sleep(max(0.0, start - time.time()))
    datamodule = setup(load_registry(), tokenizer, get_format("classification"), Path(cache_root))
    rows = [str(datamodule.train_features[i]) for i in range(len(datamodule.train_features))]
    results.put(hashlib.sha256("\n".join(rows).encode()).hexdigest())


def test_processes_building_the_same_cache_at_once_all_succeed_alike(tiny, tmp_path):
    """Four processes set up the same data on one empty feature cache at the same moment (as sweep workers on a
    shared cache do): every one succeeds with the same features, and no partial folder is left."""
    import multiprocessing
    import time

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start = time.time() + 15  # every process has imported and loaded its tokenizer by then
    workers = [context.Process(target=_build, args=(str(tmp_path), start, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert len({results.get(timeout=5) for _ in workers}) == 1
    assert not [p for p in tmp_path.rglob("*") if ".partial-" in p.name]


def test_a_split_read_again_in_the_same_process_is_read_once_until_its_file_changes(registry, tmp_path):
    import shutil

    from datamodules.sources import load_split

    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "google" / "xtreme" / "PAWS-X.de", data / "google" / "xtreme" / "PAWS-X.de")
    first = load_split(registry["pawsx"], "test", "de", data)
    assert load_split(registry["pawsx"], "test", "de", data) is first
    test_file = data / "google" / "xtreme" / "PAWS-X.de" / "test.jsonl"
    lines = test_file.read_text(encoding="utf-8").splitlines(keepends=True)
    test_file.write_text("".join(lines[:3]), encoding="utf-8")
    changed = load_split(registry["pawsx"], "test", "de", data)
    assert len(changed) == 3 and len(first) == len(lines)
