"""The xstilts checkpoint: a folder anyone can load.

    encoder/         a Hugging Face model folder (config, model.safetensors, tokenizer): the encoder alone,
                     which is how a later phase starts from an earlier one (AutoModel.from_pretrained works); for
                     a LoRA/IA3 phase a peft adapter folder (adapter_config.json naming the base encoder,
                     adapter_model.safetensors, tokenizer), which load_encoder merges onto its base
    head.safetensors the task head's weights
    xstilts.json     task, format, labels, feature settings and where the encoder came from
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

META_FILE = "xstilts.json"
HEAD_FILE = "head.safetensors"


def save_checkpoint(folder: Path, encoder, tokenizer, head, meta: dict, dtype=None, base: str | None = None) -> Path:
    """`dtype` (a torch dtype) is the saved encoder weights' (the encoder is cast in place: save last). A peft
    encoder (LoRA, IA3) is saved as its adapter alone, with `base`, the encoder name it was applied to, as its
    base_model_name_or_path: lightning_modules/encoders loads the base and merges the adapter back."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    if dtype is not None:
        encoder.to(dtype)
    adapters = getattr(encoder, "peft_config", {})
    for adapter in adapters.values():
        adapter.base_model_name_or_path = base
    # an adapter's embeddings are the base's (peft freezes them): no need to look the base up to compare
    encoder.save_pretrained(folder / "encoder", **({"save_embedding_layers": False} if adapters else {}))
    tokenizer.save_pretrained(folder / "encoder")
    save_model(head, str(folder / HEAD_FILE))
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=_jsonable))
    return folder


def _jsonable(value):
    return asdict(value) if hasattr(value, "__dataclass_fields__") else str(value)


def is_checkpoint(folder: Path) -> bool:
    return (folder / META_FILE).exists() and (folder / "encoder").is_dir()


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be read."""


def read_meta(folder: Path) -> dict:
    if not is_checkpoint(folder):
        raise FileNotFoundError(f"{folder} is not an xstilts checkpoint (no {META_FILE} and encoder/)")
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except json.JSONDecodeError as error:
        raise CorruptCheckpoint(f"{folder / META_FILE}: not valid JSON ({error})") from None
    missing = [key for key in ("task", "format", "labels", "max_length", "doc_stride") if key not in meta]
    if missing:
        raise CorruptCheckpoint(f"{folder / META_FILE}: missing {', '.join(missing)}")
    return meta


def load_head(folder: Path, head) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    path = folder / HEAD_FILE
    if not path.exists():
        raise CorruptCheckpoint(f"{path} does not exist")
    try:
        load_model(head, str(path))
    except (SafetensorError, RuntimeError, OSError) as error:
        raise CorruptCheckpoint(f"{path} cannot be loaded ({str(error).splitlines()[0]})") from None
