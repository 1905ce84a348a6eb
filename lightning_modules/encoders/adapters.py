"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021) for BERT-style encoders (XLM-R, BERT, E5).

An adapter is down-projection -> ReLU -> up-projection with a residual connection, on the output of a sublayer's
projection, before that sublayer's own residual and LayerNorm. Placement `houlsby`: after the attention output and
after the feed-forward output of every layer; `pfeiffer`: after the feed-forward output only. The bottleneck is
hidden size / reduction factor. The up-projection starts at zero, so a fresh adapter is the identity.

Written here because the maintained library (`adapters` 1.3, AdapterHub) pins transformers ~=4.57 and xstilts runs
on transformers 5; peft has no bottleneck adapter. Adapters are modules named `xstilts_adapter_<n>` beside each
projection, applied by a forward hook on it (torch's public hook API), so the encoder's own weights keep their names.

A checkpoint keeps its adapters (they are not linear: nothing to merge): the encoder's config lists them
(`xstilts_adapters`), and `restore_adapters` rebuilds and loads them when a later phase loads that encoder. The later
phase trains them with everything else (full tuning) or freezes them and stacks a new adapter on top (adapter tuning).
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

CONFIG_KEY = "xstilts_adapters"  # the encoder config's list of its adapters, oldest first
PREFIX = "xstilts_adapter_"
ATTENTION_OUTPUT = re.compile(r"(^|\.)layer\.\d+\.attention\.output$")
FEED_FORWARD_OUTPUT = re.compile(r"(^|\.)layer\.\d+\.output$")


class AdapterError(ValueError):
    pass


class Bottleneck(nn.Module):
    def __init__(self, hidden_size: int, reduction_factor: int):
        super().__init__()
        width = max(hidden_size // reduction_factor, 1)
        self.down = nn.Linear(hidden_size, width)
        self.up = nn.Linear(width, hidden_size)
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden):
        return hidden + self.up(nn.functional.relu(self.down(hidden)))


def _sublayers(encoder, placement: str) -> list[nn.Module]:
    """The sublayer output modules (each with a `dense` projection) an adapter follows."""
    patterns = (ATTENTION_OUTPUT, FEED_FORWARD_OUTPUT) if placement == "houlsby" else (FEED_FORWARD_OUTPUT,)
    found = [module for name, module in encoder.named_modules()
             if any(p.search(name) for p in patterns) and isinstance(getattr(module, "dense", None), nn.Linear)]
    if not found:
        raise AdapterError(f"bottleneck adapters need a BERT-style encoder (layer.N.output.dense); "
                           f"{type(encoder).__name__} has none")
    return found


def _apply(adapter: Bottleneck):
    return lambda module, inputs, output: adapter(output)


def add_adapter(encoder, placement: str, reduction_factor: int) -> list[nn.Parameter]:
    """A new adapter after every sublayer of `placement`, stacked on any the encoder already has; returns its
    parameters. The encoder's config records it, so a saved encoder can be rebuilt with `restore_adapters`."""
    if placement not in ("houlsby", "pfeiffer"):
        raise AdapterError(f"unknown adapter placement {placement!r}; valid: houlsby, pfeiffer")
    existing = list(getattr(encoder.config, CONFIG_KEY, None) or [])
    name = f"{PREFIX}{len(existing)}"
    parameters = []
    for sublayer in _sublayers(encoder, placement):
        adapter = Bottleneck(sublayer.dense.out_features, reduction_factor).to(sublayer.dense.weight.device)
        sublayer.add_module(name, adapter)
        sublayer.dense.register_forward_hook(_apply(adapter))
        parameters += list(adapter.parameters())
    setattr(encoder.config, CONFIG_KEY, existing + [{"placement": placement, "reduction_factor": reduction_factor}])
    return parameters


def has_adapters(config) -> bool:
    return bool(getattr(config, CONFIG_KEY, None))


def restore_adapters(encoder, weights_file) -> None:
    """Rebuild the adapters a saved encoder's config lists and load their weights from its safetensors file."""
    from safetensors.torch import load_file

    saved = list(getattr(encoder.config, CONFIG_KEY, None) or [])
    if not saved:
        return
    if not Path(weights_file).is_file():
        raise AdapterError(f"{weights_file} does not exist (an encoder with adapters is saved as one safetensors "
                           f"file)")
    setattr(encoder.config, CONFIG_KEY, [])
    for adapter in saved:
        add_adapter(encoder, adapter["placement"], adapter["reduction_factor"])
    state = {key: value for key, value in load_file(str(weights_file)).items() if PREFIX in key}
    missing = [key for key in encoder.state_dict() if PREFIX in key and key not in state]
    if missing:
        raise AdapterError(f"{weights_file}: adapter weights missing ({missing[0]} and {len(missing) - 1} more)")
    encoder.load_state_dict(state, strict=False)


def adapter_parameter_names(encoder) -> list[str]:
    return [name for name, _ in encoder.named_parameters() if PREFIX in name]
