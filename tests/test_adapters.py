"""Bottleneck adapters (--tuning adapter): what trains, counted from the module and by hand; the checkpoint keeps the
adapters and a later phase loads them (full fine-tuning trains them further, another adapter stacks on them)."""

import mlflow
import torch
from safetensors.torch import load_file

from lightning_modules.encoders import load_encoder
from lightning_modules.encoders.adapters import PREFIX
from lightning_modules.encoders.tuning import apply_tuning
from sweeps.config import DataConfig, RunConfig, TrainConfig
from sweeps.tracking.artifacts import local_checkpoint

DATA = DataConfig(data_dir="fixtures", max_length=32, max_train_examples=32, max_eval_examples=8, languages=("en",))


def adapter_weights(folder) -> dict:
    return {k: v for k, v in load_file(str(folder / "encoder" / "model.safetensors")).items() if PREFIX in k}


def test_houlsby_adapters_train_under_ten_percent_and_start_a_later_phase(tracking_uri):
    from sweeps.runs.run import fit

    adapter = TrainConfig(lr=1e-2, epochs=1, batch_size=8, tuning="adapter", adapter_placement="houlsby",
                          adapter_reduction_factor=16)
    first = fit(RunConfig(task="pawsx", encoder="tiny-xlmr", data=DATA, train=adapter, tracking_uri=tracking_uri))
    params = mlflow.MlflowClient(tracking_uri).get_run(first.run_id).data.params

    # by hand, the tiny model (2 layers, hidden 64): a bottleneck of 64/16 = 4 is 64·4 + 4 + 4·64 + 64 = 580
    # parameters; Houlsby puts two per layer. The head: dense 64·64 + 64, out 64·2 + 2 (PAWS-X has 2 labels).
    hand_adapters, hand_head = 2 * 2 * 580, 64 * 64 + 64 + 64 * 2 + 2
    encoder, _ = load_encoder("tiny-xlmr")
    total_encoder = sum(p.numel() for p in encoder.parameters())
    apply_tuning(encoder, "adapter", adapter_placement="houlsby", adapter_reduction_factor=16)
    assert sum(p.numel() for p in encoder.parameters() if p.requires_grad) == hand_adapters
    assert int(params["model.trainable_parameters"]) == hand_adapters + hand_head
    assert int(params["model.parameters"]) == total_encoder + hand_adapters + hand_head
    fraction = (hand_adapters + hand_head) / (total_encoder + hand_adapters + hand_head)
    assert fraction < 0.10 and float(params["model.trainable_fraction"]) == round(fraction, 6)
    assert int(params["model.adapter_parameters"]) == hand_adapters

    checkpoint = local_checkpoint(first.checkpoint_uri, tracking_uri)
    trained = adapter_weights(checkpoint)
    assert len(trained) == 2 * 2 * 4 and any(v.abs().sum() > 0 for k, v in trained.items() if ".up.weight" in k)
    loaded, _ = load_encoder(str(checkpoint))  # what a later phase starts from
    state = loaded.state_dict()
    assert all(torch.equal(state[key], value) for key, value in trained.items())

    full = TrainConfig(lr=1e-2, epochs=1, batch_size=8, tuning="full")
    second = fit(RunConfig(task="pawsx", encoder=first.checkpoint_uri, data=DATA, train=full,
                           tracking_uri=tracking_uri))
    assert mlflow.MlflowClient(tracking_uri).get_run(second.run_id).info.status == "FINISHED"
    further = adapter_weights(local_checkpoint(second.checkpoint_uri, tracking_uri))
    assert further.keys() == trained.keys()
    assert any(not torch.equal(further[key], trained[key]) for key in trained)  # full tuning trained them on

    stacked, _ = load_encoder(str(checkpoint))
    apply_tuning(stacked, "adapter", adapter_placement="pfeiffer", adapter_reduction_factor=16)
    assert stacked.config.xstilts_adapters == [{"placement": "houlsby", "reduction_factor": 16},
                                               {"placement": "pfeiffer", "reduction_factor": 16}]
    trainable = [name for name, p in stacked.named_parameters() if p.requires_grad]
    assert trainable and all(f"{PREFIX}1." in name for name in trainable)  # the earlier adapter stays frozen
    assert sum(p.numel() for p in stacked.parameters() if p.requires_grad) == 2 * 580  # Pfeiffer: one per layer
