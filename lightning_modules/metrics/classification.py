"""Classification accuracy (XNLI, PAWS-X, multiple choice), as XTREME's `evaluate.py` computes it:
100 x the share of examples whose predicted label equals the gold one."""

from typing import Sequence

import numpy as np


def _as_array(values) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values).reshape(-1)


def accuracy(gold: Sequence[int], predicted: Sequence[int]) -> dict:
    """{"accuracy"} x100 for lists, numpy arrays or torch tensors of labels."""
    gold, predicted = _as_array(gold), _as_array(predicted)
    if gold.shape != predicted.shape:
        raise ValueError(f"{gold.size} gold labels but {predicted.size} predicted")
    if gold.size == 0:
        raise ValueError("no examples to score")
    return {"accuracy": 100.0 * float(np.mean(gold == predicted))}
