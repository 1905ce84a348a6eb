import numpy as np
import pytest
import torch

from lightning_modules.metrics.classification import accuracy


def test_accuracy_on_lists_arrays_and_tensors():
    # 3 of 4 labels right
    assert accuracy([0, 1, 2, 1], [0, 2, 2, 1]) == pytest.approx({"accuracy": 75.0})
    assert accuracy(np.array([0, 1, 2, 1]), torch.tensor([0, 2, 2, 1])) == pytest.approx({"accuracy": 75.0})


def test_accuracy_rejects_mismatched_or_empty_inputs():
    with pytest.raises(ValueError):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError):
        accuracy([], [])
