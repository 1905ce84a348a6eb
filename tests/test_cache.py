"""Tokenized features are cached: a second identical setup loads them from disk and tokenizes nothing."""

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
