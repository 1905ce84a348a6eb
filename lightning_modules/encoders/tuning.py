"""What a phase trains: the whole encoder, the encoder without its embeddings, parameter-efficient adapters with the
encoder frozen (LoRA or IA3 through peft), or bottleneck adapters (Houlsby or Pfeiffer placement,
lightning_modules/encoders/adapters.py) with the encoder frozen. The task head always trains.

A LoRA/IA3 phase's checkpoint holds only its adapter and the name of its base encoder (lightning_modules/
checkpoint.py); loading it merges the adapter into the base, so the next phase starts from a standard model and (if
it tunes with adapters too) trains a fresh adapter on top. Bottleneck adapters cannot be merged (they are not
linear): the checkpoint keeps them, stacked, and the next phase loads them with the encoder.
"""

from __future__ import annotations

TUNING_MODES = ("full", "frozen_embeddings", "lora", "ia3", "adapter")
ADAPTER_PLACEMENTS = ("houlsby", "pfeiffer")  # lightning_modules/encoders/adapters.py (imported when used: torch)
ATTENTION = ["query", "value"]  # BERT and XLM-R attention projections
FEED_FORWARD = ["output.dense"]


def apply_tuning(encoder, mode: str, lora_rank: int = 8, adapter_placement: str = "pfeiffer",
                 adapter_reduction_factor: int = 16):
    if mode not in TUNING_MODES:
        raise ValueError(f"unknown tuning mode {mode!r}; valid: {', '.join(TUNING_MODES)}")
    if mode == "full":
        return encoder
    if mode == "frozen_embeddings":
        encoder.get_input_embeddings().requires_grad_(False)
        return encoder
    if mode == "adapter":
        from lightning_modules.encoders.adapters import add_adapter

        encoder.requires_grad_(False)  # earlier adapters too: the new one stacks on them
        for parameter in add_adapter(encoder, adapter_placement, adapter_reduction_factor):
            parameter.requires_grad_(True)
        return encoder
    from peft import IA3Config, LoraConfig, get_peft_model

    if mode == "lora":
        config = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.1, target_modules=ATTENTION)
    else:
        config = IA3Config(target_modules=ATTENTION + FEED_FORWARD, feedforward_modules=FEED_FORWARD)
    return get_peft_model(encoder, config)


def adapter_parameters(encoder) -> int:
    """Parameters of the encoder's adapters (LoRA, IA3, bottleneck), trained now or carried from a phase before."""
    from lightning_modules.encoders.adapters import adapter_parameter_names

    bottleneck = set(adapter_parameter_names(encoder))
    return sum(p.numel() for name, p in encoder.named_parameters()
               if "lora_" in name or "ia3_" in name or name in bottleneck)
