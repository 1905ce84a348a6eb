"""Extractive span QA (SQuAD 1.1/2.0, XQuAD, MLQA, TyDiQA-GoldP).

A long context is cut into overlapping windows (doc_stride); each window is a feature with start/end labels
(the first token when the answer is not inside it, which is also how SQuAD 2.0's "no answer" is learned).
At evaluation the best span over all windows of a question is mapped back to context text through the
tokenizer's character offsets.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.formats.base import Format, StepOutput, encode, hidden_size, pad
from lightning_modules.formats.spec import FormatSpec
from lightning_modules.metrics.mlqa import mlqa_scores
from lightning_modules.metrics.squad import squad_scores

NO_OFFSET = (-1, -1)
N_BEST = 20  # start and end candidates per window, as the SQuAD reference decoders
MAX_ANSWER_TOKENS = 30


def answer_positions(offsets, context_mask, answer_start: int | None, answer_text: str) -> tuple[int, int]:
    """Token positions of the answer inside this window, or (0, 0) when it is not wholly inside."""
    if answer_start is None:
        return 0, 0
    answer_end = answer_start + len(answer_text)
    tokens = [i for i, inside in enumerate(context_mask) if inside]
    if offsets[tokens[0]][0] > answer_start or offsets[tokens[-1]][1] < answer_end:
        return 0, 0
    start = next(i for i in tokens if offsets[i][1] > answer_start)
    end = next(i for i in reversed(tokens) if offsets[i][0] < answer_end)
    return start, end


SPEC = FormatSpec("span_qa", fields={"id": "id", "context": "text", "question": "text", "answers": "answers"},
                  metrics={"f1": "max", "exact_match": "max"}, input_fields=("question",), windowed=True,
                  score_metrics=("f1", "exact_match"))


class SpanQA(Format):
    name = "span_qa"

    def featurize(self, batch, tokenizer, task, settings, training):
        questions = [self._cut_question(q, tokenizer, settings) for q in batch["question"]]
        encoded = tokenizer(questions, batch["context"], truncation="only_second", max_length=settings.max_length,
                            stride=settings.doc_stride, return_overflowing_tokens=True,
                            return_offsets_mapping=True)
        features = {"input_ids": [], "start": [], "end": [], "example_index": [], "offsets": []}
        for i, example in enumerate(encoded["overflow_to_sample_mapping"]):
            context_mask = [s == 1 for s in encoded.sequence_ids(i)]
            offsets = encoded["offset_mapping"][i]
            answers = batch["answers"][example]
            first = (answers["answer_start"][0], answers["text"][0]) if answers["text"] else (None, "")
            start, end = answer_positions(offsets, context_mask, *first)
            features["input_ids"].append(encoded["input_ids"][i])
            features["start"].append(start)
            features["end"].append(end)
            features["example_index"].append(batch["_index"][example])
            features["offsets"].append([] if training else
                                       [list(o) if m else list(NO_OFFSET) for o, m in zip(offsets, context_mask)])
        return features

    @staticmethod
    def _cut_question(question: str, tokenizer, settings) -> str:
        limit = min(settings.max_query_length, settings.max_length // 4)  # leave most of the window to the context
        ids = tokenizer(question, add_special_tokens=False)["input_ids"]
        return question if len(ids) <= limit else tokenizer.decode(ids[:limit])

    def collate(self, rows, tokenizer):
        pad_id = tokenizer.pad_token_id
        return {"input_ids": pad([r["input_ids"] for r in rows], pad_id),
                "start": torch.tensor([r["start"] for r in rows]), "end": torch.tensor([r["end"] for r in rows])}

    def build_head(self, encoder, task, labels):
        return nn.Linear(hidden_size(encoder), 2)

    def step(self, encoder, head, batch, pad_id):
        mask = batch["input_ids"] != pad_id
        logits = head(encode(encoder, batch["input_ids"], pad_id)).float().masked_fill(~mask.unsqueeze(-1), -1e4)
        start_logits, end_logits = logits.unbind(-1)
        loss = (F.cross_entropy(start_logits, batch["start"]) + F.cross_entropy(end_logits, batch["end"])) / 2
        if head.training:  # outputs are for scoring: none while training (no copy to the CPU, no wait for a GPU)
            return StepOutput(loss, {})
        lengths = mask.sum(-1).tolist()
        rows = [(s[:n].detach().cpu().numpy(), e[:n].detach().cpu().numpy())
                for s, e, n in zip(start_logits, end_logits, lengths)]
        return StepOutput(loss, {"logits": rows})

    def predict(self, outputs, eval_set, labels):
        logits = [row for o in outputs for row in o["logits"]]
        examples, task = eval_set.examples, eval_set.task
        predictions = best_answers(logits, eval_set.features, examples, task.allow_no_answer)
        records = []
        for index, (qid, question, context, answers) in enumerate(zip(examples["id"], examples["question"],
                                                                      examples["context"], examples["answers"])):
            gold, prediction = list(answers["text"]), predictions[qid]
            scores = answer_scores({qid: prediction}, {qid: gold}, task, eval_set.lang)
            records.append({"index": index, "id": qid, "input": question, "context": context, "gold": gold,
                            "prediction": prediction, "exact_match": scores["exact_match"] / 100,
                            "f1": scores["f1"] / 100, "correct": scores["exact_match"] == 100})
        return records

    def score_predictions(self, records, task, lang):
        return answer_scores({r["id"]: r["prediction"] for r in records}, {r["id"]: list(r["gold"]) for r in records},
                             task, lang)


def answer_scores(predictions: dict[str, str], references: dict[str, list[str]], task, lang: str) -> dict:
    """The task's official QA scores: MLQA's language-specific normalisation, else SQuAD's (v2 rules where the
    task has unanswerable questions)."""
    if task.answer_normalization == "mlqa":
        return mlqa_scores(predictions, references, lang)
    return squad_scores(predictions, references, no_answer=task.allow_no_answer)


def best_answers(logits, features, examples, allow_no_answer: bool) -> dict[str, str]:
    """The highest-scoring span per question over all its windows ("" = no answer, SQuAD 2.0)."""
    best: dict[int, tuple[float, str]] = {}
    null: dict[int, float] = {}
    for (start_logits, end_logits), feature in zip(logits, features):
        example = feature["example_index"]
        context = examples[example]["context"]
        null[example] = min(null.get(example, np.inf), float(start_logits[0] + end_logits[0]))
        for score, text in candidate_spans(start_logits, end_logits, feature["offsets"], context):
            if example not in best or score > best[example][0]:
                best[example] = (score, text)
    answers = {}
    for index, example in enumerate(examples):
        score, text = best.get(index, (-np.inf, ""))
        answers[example["id"]] = "" if allow_no_answer and null.get(index, -np.inf) > score else text
    return answers


def candidate_spans(start_logits, end_logits, offsets, context: str):
    starts = np.argsort(start_logits)[::-1][:N_BEST]
    ends = np.argsort(end_logits)[::-1][:N_BEST]
    for s in starts:
        for e in ends:
            if s >= len(offsets) or e >= len(offsets) or offsets[s][0] < 0 or offsets[e][0] < 0:
                continue
            if e < s or e - s + 1 > MAX_ANSWER_TOKENS:
                continue
            yield float(start_logits[s] + end_logits[e]), context[offsets[s][0]: offsets[e][1]]


FORMAT = SpanQA()
