"""What a phase trains: the whole encoder, the encoder without its embeddings, or parameter-efficient adapters
(LoRA or IA3 through peft) with the encoder frozen. The task head always trains.

Bottleneck (Houlsby/Pfeiffer) adapters are not offered: the maintained library for them (`adapters` 1.3) pins
transformers ~=4.57, and xstilts runs on transformers 5.

A LoRA/IA3 phase's checkpoint holds only its adapter and the name of its base encoder (lightning_modules/
checkpoint.py); loading it merges the adapter into the base, so the next phase starts from a standard model and (if
it tunes with adapters too) trains a fresh adapter on top.
"""

from __future__ import annotations

TUNING_MODES = ("full", "frozen_embeddings", "lora", "ia3")
ATTENTION = ["query", "value"]  # BERT and XLM-R attention projections
FEED_FORWARD = ["output.dense"]


def apply_tuning(encoder, mode: str, lora_rank: int = 8):
    if mode not in TUNING_MODES:
        raise ValueError(f"unknown tuning mode {mode!r}; valid: {', '.join(TUNING_MODES)}")
    if mode == "full":
        return encoder
    if mode == "frozen_embeddings":
        encoder.get_input_embeddings().requires_grad_(False)
        return encoder
    from peft import IA3Config, LoraConfig, get_peft_model

    if mode == "lora":
        config = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.1, target_modules=ATTENTION)
    else:
        config = IA3Config(target_modules=ATTENTION + FEED_FORWARD, feedforward_modules=FEED_FORWARD)
    return get_peft_model(encoder, config)


def adapter_parameters(encoder) -> int:
    return sum(p.numel() for name, p in encoder.named_parameters() if "lora_" in name or "ia3_" in name)
