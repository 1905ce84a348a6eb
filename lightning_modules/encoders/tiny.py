"""A tiny XLM-R (2 layers, hidden 64) with a real sentencepiece-style unigram tokenizer trained offline on the
fixture texts, so tests and a quick demo run anywhere. Its weights are random (seed 0): it learns, it does not
know anything."""

import functools
import hashlib
import json
import os
import shutil
from pathlib import Path

NAME = "tiny-xlmr"
FIXTURES = Path(__file__).resolve().parents[2] / "datamodules" / "fixtures"
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # XLM-R's ids 0-3
VOCAB_SIZE = 3000


def fixture_texts(root: Path | None = None):
    """Every string (and list of strings) in the fixture files: the tokenizer's training corpus."""
    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            if value and all(isinstance(v, str) for v in value):
                yield " ".join(value)
            else:
                for item in value:
                    yield from strings(item)
        elif isinstance(value, dict):
            for item in value.values():
                yield from strings(item)

    for path in sorted((root or FIXTURES).rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            yield from strings(json.loads(line))


def train_vocab(texts) -> list[tuple[str, float]]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIALS, unk_token="<unk>",
                                      shrinking_factor=0.75, max_piece_length=16)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return [tuple(piece) for piece in json.loads(tokenizer.to_str())["model"]["vocab"]] + [("<mask>", 0.0)]


@functools.cache
def fixtures_digest() -> str:
    """A digest of the fixture files (names and bytes), which name the tiny model's version: reading the bytes takes
    milliseconds where parsing every row for its texts took a third of a second, on every resolve."""
    digest = hashlib.sha256()
    for path in sorted(FIXTURES.rglob("*.jsonl")):
        digest.update(f"{path.relative_to(FIXTURES).as_posix()}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


SIZES = {"tiny-xlmr": (2, 64), "tiny-xlmr-large": (4, 128)}  # name -> (layers, hidden size)


def build_tiny(folder: Path) -> Path:
    """Write the tiny model named like `folder` and its tokenizer there (once per version of the fixtures)."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizer

    folder = folder.with_name(f"{folder.name}-{fixtures_digest()}")
    if (folder / "config.json").exists():
        return folder
    texts = list(fixture_texts())
    if not texts:
        raise FileNotFoundError(f"no fixture texts under {FIXTURES} to train the tiny model's tokenizer on")
    tokenizer = XLMRobertaTokenizer(vocab=train_vocab(texts))
    layers, hidden = SIZES[folder.name.rsplit("-", 1)[0]]
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                              num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=514,
                              type_vocab_size=1, pad_token_id=tokenizer.pad_token_id,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = XLMRobertaModel(config, add_pooling_layer=False)
    staging = folder.with_name(folder.name + f".partial-{os.getpid()}")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(folder)
    except OSError:  # another process built the same model first
        shutil.rmtree(staging)
    return folder
