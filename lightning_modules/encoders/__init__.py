"""Encoders by name: a built-in local model, a local folder (an xstilts checkpoint's included), or a hub id."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


ADAPTER_CONFIG = "adapter_config.json"  # peft's adapter folder


class EncoderError(ValueError):
    pass


def cache_dir() -> Path:
    """Where xstilts keeps converted models and tokenized data: $XSTILTS_CACHE, else ~/.cache/xstilts."""
    return Path(os.environ.get("XSTILTS_CACHE", Path.home() / ".cache" / "xstilts"))


def cache_folder(name: str, explicit: str | None = None, variable: str | None = None) -> Path:
    """A folder a flag names (`explicit`), else the environment variable `variable`, else <cache>/`name`."""
    chosen = explicit or (os.environ.get(variable) if variable else None)
    return Path(chosen) if chosen else cache_dir() / name


def _build_tiny(folder: Path) -> Path:
    from lightning_modules.encoders.tiny import build_tiny

    return build_tiny(folder)


def _import_e5(folder: Path) -> Path:
    from lightning_modules.encoders.e5_small import import_e5_small

    return import_e5_small(folder.parent)


BUILTIN = {"tiny-xlmr": _build_tiny, "tiny-xlmr-large": _build_tiny, "multilingual-e5-small": _import_e5}
ALIASES = {"e5-small": "multilingual-e5-small", "intfloat/multilingual-e5-small": "multilingual-e5-small"}


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def resolve(name: str) -> str:
    """A local folder or hub id that `from_pretrained` can load; fails early with a clear message."""
    name = ALIASES.get(name, name)
    if name in BUILTIN:
        return str(BUILTIN[name](cache_dir() / "models" / name))
    if name.startswith(("models:/", "runs:/")):
        raise EncoderError(f"encoder {name}: a tracked checkpoint is downloaded by the caller first "
                           f"(sweeps/tracking/artifacts.py)")
    path = Path(name).expanduser()
    if (path / "xstilts.json").exists():
        path = path / "encoder"  # a phase starts from an earlier phase's encoder, without its head
    if path.exists():
        if not (path / "config.json").exists() and not (path / ADAPTER_CONFIG).exists():
            raise EncoderError(f"encoder folder {path} has no config.json (expected a Hugging Face model folder"
                               f" or an xstilts checkpoint's encoder/ folder)")
        return str(path)
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep + os.sep in name
    if looks_like_path:
        raise EncoderError(f"encoder path {name} does not exist")
    if os.environ.get("HF_HUB_OFFLINE") == "1" and not _in_hub_cache(name):
        raise EncoderError(f"encoder {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1; "
                           f"built-in encoders: {', '.join(BUILTIN)}, or pass a local folder")
    return name


def load_encoder(name: str):
    """(encoder, tokenizer) for an encoder name, without any task head, in float32 whatever dtype it was saved in
    (training precision decides the rest). An adapter folder is merged onto its base encoder."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from transformers import AutoConfig

    from lightning_modules.encoders.adapters import has_adapters, restore_adapters

    location = resolve(name)
    if (Path(location) / ADAPTER_CONFIG).exists():
        return _merged_adapter(location), AutoTokenizer.from_pretrained(location)
    config = AutoConfig.from_pretrained(location)
    options = {"add_pooling_layer": False} if config.model_type in ("bert", "roberta", "xlm-roberta") else {}
    if has_adapters(config):  # an earlier phase's bottleneck adapters: rebuilt and loaded after the encoder
        with _quiet_transformers():  # its load report would call the adapters' weights unexpected
            encoder = AutoModel.from_pretrained(location, dtype=torch.float32, **options)
        restore_adapters(encoder, Path(location) / "model.safetensors")
    else:
        encoder = AutoModel.from_pretrained(location, dtype=torch.float32, **options)
    return encoder, AutoTokenizer.from_pretrained(location)


def _merged_adapter(location: str):
    """A peft adapter folder (a LoRA/IA3 phase's checkpoint) loaded onto its base encoder and merged into it."""
    from peft import PeftConfig, PeftModel

    base_name = PeftConfig.from_pretrained(location).base_model_name_or_path
    try:
        base, _ = load_encoder(base_name)
    except EncoderError as error:
        raise EncoderError(f"adapter {location}: its base encoder cannot be loaded ({error})") from None
    return PeftModel.from_pretrained(base, location).merge_and_unload()


@contextmanager
def _quiet_transformers():
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
