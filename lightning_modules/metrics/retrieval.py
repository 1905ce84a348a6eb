"""Sentence retrieval scores (Tatoeba, BUCC 2018) as XTREME computes them (`third_party/evaluate_retrieval.py`,
`third_party/utils_retrieve.py`, `evaluate.py`), with exact cosine search done block by block in torch
instead of faiss: neither a query x key similarity matrix nor normalised copies of the inputs are ever
held whole, and the search runs where the tensors are (GPU included).

Embeddings: masked mean of one hidden layer; XTREME pools over all non-padding positions, <s> and </s>
included (its `pool_skip_special_token` is off), so pass the attention mask as it is.
"""

from collections import Counter
from typing import Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

XTREME_LAYER, XTREME_DEPTH = 14, 24
TATOEBA_DIRECTIONS = ("en->xx", "xx->en")
DEFAULT_BATCH = 4096


def mean_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L, H] x [B, L] -> [B, H] float32 mean over unmasked positions (a fully masked row gives zeros)."""
    mask = attention_mask.to(torch.float32).unsqueeze(-1)
    return (hidden_states.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def retrieval_layer(num_hidden_layers: int) -> int:
    """Index into HF `hidden_states` (0 = embeddings, i = output of layer i) used for retrieval.

    XTREME's run_tatoeba.sh embeds XLM-R large (24 layers) with `--num_layers 24 --specific_layer 13`,
    an index into the last 24 hidden states, i.e. hidden_states[14]; jiant uses the same layer. Other
    depths keep that relative depth, 14/24, rounded half up: 12 layers -> 7, 6 -> 4. (XTREME's mBERT
    setting, hidden_states[8] of 12, is not this ratio; the rule is anchored on XLM-R.)
    """
    if num_hidden_layers < 1:
        raise ValueError(f"need at least one hidden layer, got {num_hidden_layers}")
    return (2 * num_hidden_layers * XTREME_LAYER + XTREME_DEPTH) // (2 * XTREME_DEPTH)


def _unit_rows(rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    return F.normalize(rows.to(device=device, dtype=torch.float32), dim=1)


CHUNK = 8  # a row's scores fall in CHUNK-long strided groups (see _block_topk); 8 leaves 512 groups in a 4,096-wide
# block, where torch's CPU topk runs 2-3x faster per row than on the 128 that 32 left (benchmarks/README.md, *retrieval*)


def _block_topk(similarities: torch.Tensor, k: int, columns: bool = False):
    """Top-k of each row of one block (of each column with `columns`), best first, exactly tied scores in index
    order: the lowest indices are kept when a tie straddles the k-th place (topk alone leaves both unspecified).

    A row's k best lie in the k groups (every (n / CHUNK)-th score: one pass of maxima, in memory order) with the
    highest maxima, so a top-k of those groups' scores replaces a top-k of the whole row. A row is settled by a
    stable sort of all of it when a score outside those groups, or a (k + 1)-th candidate, ties the k-th best."""
    lines = similarities.T if columns else similarities
    if k == 1:  # max() returns the first of tied maxima, so the lowest index wins, as with faiss
        return lines.max(dim=1, keepdim=True)
    rows, width = lines.shape
    if width % CHUNK or width // CHUNK <= k:
        scores, indices = lines.topk(min(k + 1, width), dim=1)
        straddling = scores[:, k] == scores[:, k - 1] if width > k else torch.zeros(rows, dtype=torch.bool, device=lines.device)
    else:
        groups = width // CHUNK  # score j is in group j % groups
        maxima = (similarities.view(CHUNK, groups, rows).amax(dim=0).T if columns
                  else similarities.view(rows, CHUNK, groups).amax(dim=1))
        group_max, best_groups = maxima.contiguous().topk(k + 1, dim=1)
        members = groups * torch.arange(CHUNK, device=lines.device)
        candidates = (best_groups[:, :k, None] + members).flatten(1)
        scores, position = lines.gather(1, candidates).topk(k + 1, dim=1)
        indices = candidates.gather(1, position)
        straddling = (scores[:, k] == scores[:, k - 1]) | (group_max[:, k] == scores[:, k - 1])
    scores, indices = scores[:, :k], indices[:, :k]
    settle = straddling.nonzero()[:, 0]
    if len(settle):  # rare outside constructed data: a stable sort of just these rows
        ordered, order = torch.sort(lines[settle], dim=1, descending=True, stable=True)
        scores[settle], indices[settle] = ordered[:, :k], order[:, :k]
    indices, by_index = indices.sort(dim=1)
    scores, by_score = scores.gather(1, by_index).sort(dim=1, descending=True, stable=True)
    return scores, indices.gather(1, by_score)


def _merge(best, new, k: int):
    """Keep the k best of a running top-k and a block's top-k; on ties the earlier (running) entry wins."""
    scores, indices = torch.cat([best[0], new[0]], dim=1), torch.cat([best[1], new[1]], dim=1)
    scores, order = torch.sort(scores, dim=1, descending=True, stable=True)
    return scores[:, :k], indices.gather(1, order[:, :k])


def _empty(rows: int, device: torch.device):
    return torch.empty(rows, 0, device=device), torch.empty(rows, 0, dtype=torch.long, device=device)


def block_similarities(block: torch.Tensor, keys: torch.Tensor, buffers: dict) -> torch.Tensor:
    """block @ keys.T. On a CPU the product runs in numpy's BLAS (OpenBLAS, on as many threads as torch) into a
    buffer of `buffers` reused from block to block: 1.2-1.3x torch's product there, which also pays for a fresh
    300 MB result per block (benchmarks/README.md, *retrieval*). The result is overwritten by the next product of
    the same shape."""
    if block.device.type != "cpu":
        return block @ keys.T
    from threadpoolctl import threadpool_limits

    shape = (len(block), len(keys))
    if shape not in buffers:
        buffers[shape] = torch.empty(shape)
    with threadpool_limits(torch.get_num_threads(), user_api="blas"):
        np.matmul(block.numpy(), keys.numpy().T, out=buffers[shape].numpy())
    return buffers[shape]


def _scan(queries, keys, k: int, batch_size: int, key_batch_size: int | None, device, both: bool):
    queries, keys = torch.as_tensor(queries), torch.as_tensor(keys)
    if len(queries) == 0 or len(keys) == 0:
        raise ValueError("cannot search with no queries or no keys")
    device = torch.device(device) if device is not None else queries.device
    key_batch_size = key_batch_size or batch_size
    k_keys, k_queries = min(k, len(keys)), min(k, len(queries))
    key_starts = range(0, len(keys), key_batch_size)
    key_best = [_empty(min(key_batch_size, len(keys) - start), device) for start in key_starts]
    query_best, buffers = [], {}
    for q_start in range(0, len(queries), batch_size):
        block = _unit_rows(queries[q_start:q_start + batch_size], device)
        best = _empty(len(block), device)
        for slot, k_start in enumerate(key_starts):
            similarities = block_similarities(block, _unit_rows(keys[k_start:k_start + key_batch_size], device),
                                              buffers)
            scores, indices = _block_topk(similarities, min(k_keys, similarities.shape[1]))
            best = _merge(best, (scores, indices + k_start), k_keys)
            if both:  # top-k down the columns
                scores, indices = _block_topk(similarities, min(k_queries, len(block)), columns=True)
                key_best[slot] = _merge(key_best[slot], (scores, indices + q_start), k_queries)
        query_best.append(best)
    return _concat(query_best), _concat(key_best) if both else None


def _concat(blocks):
    return torch.cat([scores for scores, _ in blocks]), torch.cat([indices for _, indices in blocks])


def knn(queries, keys, k: int, batch_size: int = DEFAULT_BATCH, key_batch_size: int | None = None, device=None):
    """Cosine k nearest keys of every query -> (scores [Nq, k], indices [Nq, k]), best first.

    Works on blocks of `batch_size` queries x `key_batch_size` keys (default: the same) with a running
    top-k, so memory stays O(block + Nq k). Runs on `device` (default: the queries' device) and returns
    there. k is capped at the number of keys. Exactly tied keys rank by index, the lowest first, and the
    lowest are the ones kept when a tie crosses the k-th place, whatever the block sizes: results never
    depend on topk's unspecified order among ties.
    """
    return _scan(queries, keys, k, batch_size, key_batch_size, device, both=False)[0]


def mutual_knn(x, y, k: int, batch_size: int = DEFAULT_BATCH, key_batch_size: int | None = None, device=None):
    """Both directions of `knn` from one pass over the x . y blocks: ((x->y scores, indices), (y->x ...))."""
    return _scan(x, y, k, batch_size, key_batch_size, device, both=True)


def tatoeba_accuracy(source_emb, target_emb, direction: str = "en->xx", batch_size: int = DEFAULT_BATCH,
                     device=None) -> dict:
    """{"accuracy"} x100 of nearest-neighbour translation retrieval.

    Row i of `source_emb` (the non-English sentences) translates row i of `target_emb` (English).
    "en->xx" is XTREME's direction: `similarity_search` indexes the non-English side and queries it
    with each English sentence. "xx->en" is the reverse. A retrieval is right only if it returns the
    row with the same index: XTREME neither merges nor forgives duplicate sentences, so when one
    sentence occurs twice on the searched side, both queries retrieve the first copy and the query
    aligned with the second copy counts as wrong.
    """
    if direction not in TATOEBA_DIRECTIONS:
        raise ValueError(f"direction must be one of {TATOEBA_DIRECTIONS}, got {direction!r}")
    queries, keys = (target_emb, source_emb) if direction == "en->xx" else (source_emb, target_emb)
    if len(queries) != len(keys):
        raise ValueError(f"{len(source_emb)} source but {len(target_emb)} target sentences")
    _, nearest = knn(queries, keys, 1, batch_size=batch_size, device=device)
    hits = nearest[:, 0].cpu() == torch.arange(len(queries))
    return {"accuracy": 100.0 * hits.double().mean().item()}


def margin_scores(similarities: torch.Tensor, candidates: torch.Tensor, row_means: torch.Tensor,
                  candidate_means: torch.Tensor) -> torch.Tensor:
    """Ratio margin of each row x with each of its candidates y (utils_retrieve.py, `margin='ratio'`):
    cos(x, y) / ((mean_k cos(x, NN_k(x)) + mean_k cos(y, NN_k(y))) / 2).

    similarities [N, K]: cos(x, candidate); candidates [N, K]: candidate indices on the other side;
    row_means [N]: each x's mean cosine to its k nearest neighbours; candidate_means [M]: the same for
    the other side.
    """
    return similarities / ((row_means.unsqueeze(1) + candidate_means[candidates]) / 2)


def _unify(embeddings, ids: Sequence[Hashable], texts: Sequence[str] | None):
    """XTREME mines over distinct sentences (one embedding per text: the last copy's) and then drops
    every candidate whose sentence occurs more than once in its file (compared after strip())."""
    embeddings = torch.as_tensor(embeddings)
    if len(ids) != len(embeddings) or (texts is not None and len(texts) != len(ids)):
        raise ValueError("embeddings, ids and texts must have one entry per sentence")
    if texts is None:
        return embeddings, list(ids)
    last_row = {}
    for row, text in enumerate(texts):
        last_row[text] = row
    rows = list(last_row.values())
    stripped = Counter(text.strip() for text in texts)
    kept_ids = [ids[row] if stripped[texts[row].strip()] == 1 else None for row in rows]
    return embeddings[torch.tensor(rows)], kept_ids


def _best_candidates(similarities, candidates, row_means, candidate_means):
    scores, position = margin_scores(similarities, candidates, row_means, candidate_means).max(dim=1)
    return scores.cpu().numpy(), candidates.gather(1, position.unsqueeze(1))[:, 0].cpu().numpy()


def _max_retrieval(fwd_scores, fwd_best, bwd_scores, bwd_best):
    """utils_retrieve's default `retrieval='max'`: pool each source's best target and each target's best
    source, then take pairs by falling score, skipping any whose source or target is already taken;
    pairs scoring above 0 (its default threshold) are kept."""
    sources = np.concatenate([np.arange(len(fwd_best)), bwd_best])
    targets = np.concatenate([fwd_best, np.arange(len(bwd_best))])
    scores = np.concatenate([fwd_scores, bwd_scores])
    used_source, used_target = np.zeros(len(fwd_best), bool), np.zeros(len(bwd_best), bool)
    pairs = []
    for c in np.argsort(-scores, kind="stable"):
        if not scores[c] > 0:
            break
        if not (used_source[sources[c]] or used_target[targets[c]]):
            used_source[sources[c]] = used_target[targets[c]] = True
            pairs.append((int(sources[c]), int(targets[c]), float(scores[c])))
    return pairs


def bucc_mine(src_emb, tgt_emb, src_ids: Sequence[Hashable], tgt_ids: Sequence[Hashable], k: int = 4,
              batch_size: int = DEFAULT_BATCH, device=None, src_texts: Sequence[str] | None = None,
              tgt_texts: Sequence[str] | None = None) -> list[tuple]:
    """Candidate pairs [(src_id, tgt_id, margin score)] as XTREME's mine_bitext (mode 'mine', cosine,
    ratio margin over k = 4 neighbours, retrieval 'max'). Give the sentence texts to reproduce its
    handling of repeated sentences (see `_unify`); without them every row is a distinct sentence."""
    src, src_keys = _unify(src_emb, src_ids, src_texts)
    tgt, tgt_keys = _unify(tgt_emb, tgt_ids, tgt_texts)
    (x2y_sim, x2y_idx), (y2x_sim, y2x_idx) = mutual_knn(src, tgt, k, batch_size=batch_size, device=device)
    x_means, y_means = x2y_sim.mean(dim=1), y2x_sim.mean(dim=1)
    fwd = _best_candidates(x2y_sim, x2y_idx, x_means, y_means)
    bwd = _best_candidates(y2x_sim, y2x_idx, y_means, x_means)
    pairs = _max_retrieval(*fwd, *bwd)
    return [(src_keys[i], tgt_keys[j], score) for i, j, score in pairs
            if src_keys[i] is not None and tgt_keys[j] is not None]


def bucc_threshold(candidates: Sequence[tuple], gold_pairs) -> float:
    """The score threshold with the best F1 on labelled pairs (utils_retrieve.bucc_optimize): walk the
    candidates by falling score and, at each strict F1 improvement, take the midpoint between that
    candidate's score and the next one's. If the best cut keeps every candidate, the threshold is the
    lowest score (XTREME's script would index past the end there). 0 when no candidate is gold."""
    gold = set(gold_pairs)
    ranked = sorted(candidates, key=lambda candidate: -candidate[2])
    best_f1, threshold, correct = 0.0, 0.0, 0
    for extracted, (src_id, tgt_id, score) in enumerate(ranked, start=1):
        correct += (src_id, tgt_id) in gold
        f1 = _f1(correct / extracted, correct / len(gold)) if correct else 0.0
        if f1 > best_f1:
            best_f1 = f1
            threshold = (score + ranked[extracted][2]) / 2 if extracted < len(ranked) else score
    return threshold


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall)


def bucc_scores(candidates: Sequence[tuple], gold_pairs, threshold: float) -> dict:
    """{"precision", "recall", "f1"} x100 of the candidate pairs scoring >= threshold against the gold
    pairs (utils_retrieve.bucc_eval, evaluate.bucc_f1); all 0 when none is right."""
    gold = set(gold_pairs)
    predicted = {(src_id, tgt_id) for src_id, tgt_id, score in candidates if score >= threshold}
    correct = len(predicted & gold)
    if correct == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    precision, recall = correct / len(predicted), correct / len(gold)
    return {"precision": 100 * precision, "recall": 100 * recall, "f1": 100 * _f1(precision, recall)}


def average_precision_at_k(gold: Sequence[Hashable], ranked: Sequence[Hashable], k: int | None = None) -> float:
    """AP@k as XTREME's `utils_lareqa.average_precision_at_k`: over the first k ranked items, the precision at
    each new gold hit, summed and divided by min(#gold, k). With one gold item it is the reciprocal rank at k
    (Mewsli-X's `mean_reciprocal_rank` over the top 20)."""
    if not gold:
        raise ValueError("average precision needs at least one gold item")
    gold = set(gold)
    ranked = list(ranked[:k] if k else ranked)
    hits, total, seen = 0, 0.0, set()
    for position, item in enumerate(ranked, start=1):
        if item in gold and item not in seen:
            hits += 1
            total += hits / position
        seen.add(item)
    return total / (min(len(gold), k) if k else len(gold))


def mean_average_precision_at_k(query_emb, candidate_emb, gold: Sequence[Sequence[Hashable]],
                                candidate_ids: Sequence[Hashable], k: int = 20, batch_size: int = DEFAULT_BATCH,
                                device=None) -> float:
    """x100 mean over queries of AP@k of the candidates ranked by cosine similarity (block-wise exact search).

    gold[i] lists the ids of query i's correct candidates (ids absent from `candidate_ids` can never be hit, and
    still count in the divisor, as a missing prediction does in the official scores); queries without gold are
    left out, as LAReQA leaves out a question whose answer lies in no sentence."""
    if len(gold) != len(query_emb) or len(candidate_ids) != len(candidate_emb):
        raise ValueError("need one gold list per query and one id per candidate")
    scored = [i for i, g in enumerate(gold) if g]
    if not scored:
        raise ValueError("no query has a gold candidate")
    queries = torch.as_tensor(query_emb)[torch.tensor(scored, dtype=torch.long)]
    _, nearest = knn(queries, candidate_emb, k, batch_size=batch_size, device=device)
    nearest = nearest.cpu().tolist()
    return 100.0 * sum(average_precision_at_k(gold[i], [candidate_ids[j] for j in row], k)
                       for i, row in zip(scored, nearest)) / len(scored)
