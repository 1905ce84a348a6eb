"""Checkpoints as small as what they hold: weights in the chosen dtype, a LoRA phase as its adapter on a named base;
both load back for evaluation and as the start of a later phase."""

import json
import struct

import mlflow
import pytest

from sweeps.cli import main

FIT = ["fit", "pawsx", "--data-dir", "fixtures", "--lr", "1e-3", "--epochs", "1", "--batch-size", "16",
       "--max-length", "48", "--max-train-examples", "64", "--max-eval-examples", "24", "--eval-splits", "test",
       "--languages", "en,de"]


def safetensors_dtypes(path) -> set[str]:
    """The dtypes of a safetensors file, read from its header (8-byte length, then JSON)."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    return {entry["dtype"] for name, entry in header.items() if name != "__metadata__"}


def fitted(uri, *flags):
    assert main(FIT + ["--tracking-uri", uri, *flags]) == 0
    client = mlflow.MlflowClient(uri)
    run = max(client.search_runs([client.get_experiment_by_name("xstilts").experiment_id]),
              key=lambda r: r.info.start_time)
    folder = client.get_run(run.info.run_id).info.artifact_uri.removeprefix("file://")
    return client, run, folder


def evaluated(client, run, uri):
    assert main(["evaluate", f"runs:/{run.info.run_id}/checkpoint", "--data-dir", "fixtures", "--max-length", "48",
                 "--max-eval-examples", "24", "--eval-splits", "test", "--languages", "en,de",
                 "--tracking-uri", uri]) == 0
    return max(client.search_runs([run.info.experiment_id]), key=lambda r: r.info.start_time)


def test_bfloat16_checkpoint_is_half_the_size_and_loads(tracking_uri, tmp_path):
    from lightning_modules.encoders import load_encoder

    client, full, full_folder = fitted(tracking_uri)
    _, half, half_folder = fitted(tracking_uri, "--save-dtype", "bfloat16")
    weights_32 = tmp_path.joinpath(full_folder, "checkpoint/encoder/model.safetensors")
    weights_16 = tmp_path.joinpath(half_folder, "checkpoint/encoder/model.safetensors")
    assert safetensors_dtypes(weights_32) == {"F32"} and safetensors_dtypes(weights_16) == {"BF16"}
    assert weights_16.stat().st_size == pytest.approx(weights_32.stat().st_size / 2, rel=0.01)
    encoder, _ = load_encoder(str(weights_16.parent))
    assert {p.dtype for p in encoder.parameters()} == {__import__("torch").float32}  # trains in float32 again
    evaluation = evaluated(client, half, tracking_uri)
    assert evaluation.info.status == "FINISHED" and "test/de/accuracy" in evaluation.data.metrics


def test_lora_checkpoint_is_its_adapter_on_a_named_base_and_evaluates_the_same(tracking_uri, tmp_path):
    client, run, folder = fitted(tracking_uri, "--tuning", "lora", "--lora-rank", "4")
    encoder = tmp_path.joinpath(folder, "checkpoint/encoder")
    files = {p.name for p in encoder.iterdir()}
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    assert json.loads((encoder / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-xlmr"
    evaluation = evaluated(client, run, tracking_uri)
    for key in ("test/en/accuracy", "test/de/accuracy"):  # the adapter merged back gives the fit's own scores
        assert evaluation.data.metrics[key] == pytest.approx(run.data.metrics[key], abs=1e-6), key
    # a later phase starts from it: its encoder is the base with the adapter merged in
    assert main(FIT + ["--tracking-uri", tracking_uri, "--encoder", f"runs:/{run.info.run_id}/checkpoint"]) == 0


def test_lightning_checkpoints_leave_out_frozen_parameters_and_load_them_back(tiny, registry):
    import torch

    from lightning_modules.encoders import load_encoder
    from lightning_modules.encoders.tuning import apply_tuning
    from lightning_modules.formats import get_format
    from lightning_modules.task_module import TaskModule

    def module():
        encoder, tokenizer = load_encoder("tiny-xlmr")
        encoder = apply_tuning(encoder, "frozen_embeddings")
        fmt = get_format("classification")
        labels = ["a", "b"]
        return TaskModule(encoder, fmt.build_head(encoder, registry["pawsx"], labels), fmt, labels,
                          tokenizer.pad_token_id)

    saved = module()
    with torch.no_grad():  # trained weights: every trainable parameter moved away from what a new module has
        for parameter in saved.parameters():
            if parameter.requires_grad:
                parameter.add_(1.0)
    full = {name: value.clone() for name, value in saved.state_dict().items()}
    checkpoint = {"state_dict": dict(saved.state_dict())}
    saved.on_save_checkpoint(checkpoint)
    frozen = {n for n, p in saved.named_parameters() if not p.requires_grad}
    assert frozen and set(full) - set(checkpoint["state_dict"]) == frozen  # the embeddings, nothing else
    loaded = module()
    loaded.load_selected(checkpoint)
    assert all(torch.equal(loaded.state_dict()[name], value) for name, value in full.items())
