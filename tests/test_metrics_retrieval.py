import math

import numpy as np
import pytest
import torch

from lightning_modules.metrics.retrieval import (bucc_mine, bucc_scores, bucc_threshold, knn, margin_scores,
                                                 mean_pool, mutual_knn, retrieval_layer, tatoeba_accuracy)


def test_mean_pool_ignores_masked_positions():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                           [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    # row 0: mean of the first two positions; row 1: nothing to pool -> zeros
    assert torch.equal(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0], [0.0, 0.0]]))


def test_retrieval_layer_scales_xlmr_large_layer_14_of_24():
    assert retrieval_layer(24) == 14
    assert retrieval_layer(12) == 7   # 7.0
    assert retrieval_layer(6) == 4    # 3.5 rounds up
    with pytest.raises(ValueError):
        retrieval_layer(0)


def test_knn_by_hand():
    # cosines of [1, 0] with the keys: 0, 1/sqrt(2), 1
    scores, indices = knn(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 0.0]]), 2)
    assert indices.tolist() == [[2, 1]]
    assert scores[0].tolist() == pytest.approx([1.0, 1 / math.sqrt(2)])


def _brute_force(queries, keys, k):
    similarities = (queries / queries.norm(dim=1, keepdim=True)) @ (keys / keys.norm(dim=1, keepdim=True)).T
    return similarities.topk(k, dim=1)


@pytest.mark.parametrize("batch_size, key_batch_size", [(1, 101), (3, 16), (7, 5), (32, 50), (1000, 1000), (120, 1)])
def test_chunked_knn_equals_brute_force(batch_size, key_batch_size):
    generator = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(120, 16, generator=generator), torch.randn(101, 16, generator=generator)
    expected_scores, expected_indices = _brute_force(queries, keys, 5)
    scores, indices = knn(queries, keys, 5, batch_size=batch_size, key_batch_size=key_batch_size)
    assert torch.equal(indices, expected_indices)
    assert torch.allclose(scores, expected_scores, atol=1e-5)
    (_, forward), (_, backward) = mutual_knn(queries, keys, 5, batch_size=batch_size, key_batch_size=key_batch_size)
    assert torch.equal(forward, expected_indices)
    assert torch.equal(backward, _brute_force(keys, queries, 5)[1])


def test_knn_accepts_numpy_and_caps_k_at_the_number_of_keys():
    scores, indices = knn(np.eye(3, 2, dtype=np.float32), np.eye(2, dtype=np.float32), 4)
    assert scores.shape == indices.shape == (3, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_knn_runs_on_the_gpu_when_the_tensors_are_there():
    queries, keys = torch.randn(100, 8), torch.randn(90, 8)
    scores, indices = knn(queries.cuda(), keys.cuda(), 3, batch_size=16)
    assert indices.is_cuda
    assert torch.equal(indices.cpu(), knn(queries, keys, 3)[1])


def test_tatoeba_direction():
    source = torch.tensor([[1.0, 0.0], [0.0, 1.0]])   # non-English side
    target = torch.tensor([[1.0, 0.0], [1.0, 0.9]])   # English side
    # en->xx: target 1 is nearer source 0 (cos 1/sqrt(1.81) = 0.743) than source 1 (0.669): 1 of 2 right
    assert tatoeba_accuracy(source, target) == pytest.approx({"accuracy": 50.0})
    # xx->en: source 0 -> target 0 (cos 1), source 1 -> target 1 (0.669 > 0): both right
    assert tatoeba_accuracy(source, target, direction="xx->en") == pytest.approx({"accuracy": 100.0})


def test_tatoeba_duplicate_sentences_count_once():
    # source rows 1 and 2 are the same sentence (identical embeddings); English rows 1 and 2 differ
    source = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.1], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    # en->xx: English 1 and 2 tie on source 1 and 2 and both get the first copy (1): English 2 is wrong.
    # (English 2's cosine with source 3 is 0.5 / sqrt(1.25) = 0.447 < 1 / sqrt(1.25) = 0.894.) 3 of 4.
    assert tatoeba_accuracy(source, target)["accuracy"] == pytest.approx(75.0)
    # xx->en: source 1 and 2 are one query twice; both retrieve English 1 (0.995 > 0.894): 3 of 4.
    assert tatoeba_accuracy(source, target, direction="xx->en")["accuracy"] == pytest.approx(75.0)


def test_margin_scores_by_hand():
    # 0.9 / ((0.7 + 0.3) / 2) = 1.8 and 0.5 / ((0.7 + 0.5) / 2) = 0.8333
    scores = margin_scores(torch.tensor([[0.9, 0.5]]), torch.tensor([[1, 0]]), torch.tensor([0.7]),
                           torch.tensor([0.5, 0.3]))
    assert scores[0].tolist() == pytest.approx([1.8, 0.5 / 0.6])


# x0 = [1, 0], x1 = [0, 1]; y0 = [0.8, 0.6], y1 = [0, 1]. Cosines: x0.y0 0.8, x0.y1 0, x1.y0 0.6, x1.y1 1.
# With k = 4 capped at 2, the neighbourhood means are x0 0.4, x1 0.8, y0 0.7, y1 0.5.
# x0-y0: 0.8 / ((0.4 + 0.7) / 2) = 1.4545 (x0-y1: 0); x1-y1: 1 / ((0.8 + 0.5) / 2) = 1.5385 (x1-y0: 0.6 / 0.75
# = 0.8); y0 and y1 choose x0 and x1 with the same scores. Max retrieval takes x1-y1, then x0-y0.
SOURCE = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
TARGET = np.array([[0.8, 0.6], [0.0, 1.0]], dtype=np.float32)


def test_bucc_mine_by_hand():
    pairs = bucc_mine(SOURCE, TARGET, ["s0", "s1"], ["t0", "t1"])
    assert [(s, t) for s, t, _ in pairs] == [("s1", "t1"), ("s0", "t0")]
    assert [score for *_, score in pairs] == pytest.approx([1 / 0.65, 0.8 / 0.55], rel=1e-6)


def test_bucc_mine_drops_repeated_sentences():
    # target "c" occurs twice (rows 0 and 2): it is mined as one sentence, then its pairs are dropped
    target = np.stack([TARGET[0], TARGET[1], TARGET[0]])
    pairs = bucc_mine(SOURCE, target, ["s0", "s1"], ["t0", "t1", "t2"], src_texts=["a", "b"],
                      tgt_texts=["c", "d", "c"])
    assert [(s, t) for s, t, _ in pairs] == [("s1", "t1")]


CANDIDATES = [("a", "x", 0.9), ("b", "y", 0.8), ("c", "z", 0.7), ("d", "w", 0.6)]
GOLD = {("a", "x"), ("b", "y"), ("e", "v")}


def test_bucc_threshold_falls_midway_between_candidate_scores():
    # top 1: P 1, R 1/3, F1 0.5; top 2: P 1, R 2/3, F1 0.8 (best); top 3: F1 2/3; top 4: F1 4/7
    # -> midway between the 2nd and 3rd scores: (0.8 + 0.7) / 2
    assert bucc_threshold(CANDIDATES, GOLD) == pytest.approx(0.75)
    # the best cut keeps everything: the lowest score; nothing gold at all: 0
    assert bucc_threshold(CANDIDATES[:2], GOLD) == pytest.approx(0.8)
    assert bucc_threshold(CANDIDATES[2:], GOLD) == 0.0


def test_bucc_scores_keep_candidates_at_or_above_the_threshold():
    # >= 0.75 keeps a-x and b-y: 2 right of 2 predicted and 3 gold: P 100, R 66.67, F1 80
    assert bucc_scores(CANDIDATES, GOLD, 0.75) == pytest.approx({"precision": 100.0, "recall": 200 / 3, "f1": 80.0})
    # a score equal to the threshold counts: >= 0.8 still keeps b-y
    assert bucc_scores(CANDIDATES, GOLD, 0.8)["recall"] == pytest.approx(200 / 3)
    assert bucc_scores(CANDIDATES, GOLD, 0.95) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # CUDA's topk orders ties its own way


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("key_batch_size", [1, 2, 3, 100])
def test_tied_keys_rank_by_lower_index(key_batch_size, device):
    # cosines of the query [1, 0] with the keys: 0, 1, 1, 0, 1, 1, 1/sqrt(2): keys 1, 2, 4, 5 tie at 1
    keys = torch.tensor([[0, 3], [1, 0], [2, 0], [0, 1], [5, 0], [1, 0], [1, 1]], dtype=torch.float32)
    query = torch.tensor([[1, 0]], dtype=torch.float32)
    for k, expected in ((1, [1]), (2, [1, 2]), (3, [1, 2, 4]), (4, [1, 2, 4, 5]), (5, [1, 2, 4, 5, 6])):
        _, indices = knn(query, keys, k, key_batch_size=key_batch_size, device=device)
        assert indices.tolist() == [expected]
    # the other direction: key 1 = [1, 0] against queries that tie in pairs ([2, 0] = [1, 0], [0, 1] = [0, 2])
    queries = torch.tensor([[0, 1], [2, 0], [0, 2], [1, 0]], dtype=torch.float32)
    (_, forward), (_, backward) = mutual_knn(queries, keys, 2, batch_size=key_batch_size, key_batch_size=2,
                                             device=device)
    assert backward[1].tolist() == [1, 3]  # queries 1 and 3 tie at cosine 1
    assert backward[0].tolist() == [0, 2]  # key 0 = [0, 3]: queries 0 and 2 tie
    assert forward[0].tolist() == [0, 3]   # query [0, 1]: keys 0 and 3 tie at 1


def _stable_reference(queries, keys, k):
    """Brute force with the documented tie rule: by score, best first, then by index (a stable sort)."""
    similarities = (queries / queries.norm(dim=1, keepdim=True)) @ (keys / keys.norm(dim=1, keepdim=True)).T
    scores, indices = torch.sort(similarities, dim=1, descending=True, stable=True)
    return scores[:, :k], indices[:, :k]


@pytest.mark.parametrize("k", [1, 2, 4, 7])
@pytest.mark.parametrize("batch_size, key_batch_size", [(256, 256), (64, 320), (100, 96)])
def test_knn_in_chunks_equals_brute_force_with_many_ties(k, batch_size, key_batch_size):
    """Blocks whose widths are multiples of the chunk size take the chunked search; integer embeddings on few
    directions make ties common, across chunks and blocks and at the k-th place."""
    generator = torch.Generator().manual_seed(1)
    queries = torch.randint(-2, 3, (300, 3), generator=generator).float()
    keys = torch.randint(-2, 3, (640, 3), generator=generator).float()
    queries[queries.norm(dim=1) == 0] = 1.0
    keys[keys.norm(dim=1) == 0] = 1.0
    (forward_scores, forward), (backward_scores, backward) = mutual_knn(
        queries, keys, k, batch_size=batch_size, key_batch_size=key_batch_size)
    expected_scores, expected = _stable_reference(queries, keys, k)
    assert torch.equal(forward, expected)
    assert torch.allclose(forward_scores, expected_scores, atol=1e-6)
    assert torch.equal(backward, _stable_reference(keys, queries, k)[1])
    # and on continuous data, where no tie settles a row
    queries, keys = torch.randn(256, 16, generator=generator), torch.randn(512, 16, generator=generator)
    _, indices = knn(queries, keys, k, batch_size=batch_size, key_batch_size=key_batch_size)
    assert torch.equal(indices, _stable_reference(queries, keys, k)[1])
