"""Sub-token predictions mapped back to words and to answer text, and dynamic padding, checked on hand-made
cases."""

import numpy as np

from lightning_modules.formats.base import pad
from lightning_modules.formats.span_qa import answer_positions, best_answers
from lightning_modules.formats.tagging import IGNORE, first_subtoken_alignment, words_from_subtokens


def test_tag_labels_go_on_first_subtokens_and_back_to_words():
    # <s> Ber ##lin ist schön </s> for the words [Berlin, ist, schön] tagged [B-LOC=5, O=0, O=0]
    word_ids = [None, 0, 0, 1, 2, None]
    labels, word_index = first_subtoken_alignment(word_ids, [5, 0, 0])
    assert labels == [IGNORE, 5, IGNORE, 0, 0, IGNORE]
    assert word_index == [-1, 0, -1, 1, 2, -1]
    # the model's prediction on the second sub-token of "Berlin" (6 = I-LOC) is not the word's prediction
    assert words_from_subtokens([0, 5, 6, 0, 0, 0], word_index, 3, fallback=0) == [5, 0, 0]


def test_a_word_lost_to_truncation_gets_the_fallback_label():
    # only the first two of three words fit
    _, word_index = first_subtoken_alignment([None, 0, 1, None], [1, 2, 1])
    assert words_from_subtokens([0, 1, 2, 0], word_index, 3, fallback=0) == [1, 2, 0]


def test_batches_are_padded_to_their_longest_row():
    batch = pad([[5, 6, 7], [8], []], value=1)
    assert str(batch.dtype) == "torch.int64"
    assert batch.tolist() == [[5, 6, 7], [8, 1, 1], [1, 1, 1]]


def test_answer_positions_inside_and_outside_a_window():
    # context "Anna lives in Berlin ." ; tokens (question token first, then the context window)
    offsets = [(0, 0), (0, 4), (5, 10), (11, 13), (14, 17), (17, 20), (21, 22)]
    context_mask = [False, True, True, True, True, True, True]
    assert answer_positions(offsets, context_mask, 14, "Berlin") == (4, 5)
    assert answer_positions(offsets, context_mask, None, "") == (0, 0)  # SQuAD 2.0: no answer
    window = [False, True, True, False, False, False, False]  # a window holding "Anna lives" only
    assert answer_positions(offsets, window, 14, "Berlin") == (0, 0)


def logits(length, start, end):
    s, e = np.full(length, -5.0), np.full(length, -5.0)
    s[start], e[end] = 4.0, 4.0
    return s, e


def test_best_span_over_overlapping_windows_maps_back_to_context_text():
    context = "Anna was born in Vienna. She moved to Berlin in 2010."
    # two windows of the same question; the answer "Berlin in 2010" begins in the first window's last token
    # and is complete only in the second window, which must win on its higher score.
    first = {"example_index": 0, "offsets": [[-1, -1], [0, 4], [5, 8], [9, 13], [14, 16], [17, 23], [25, 28],
                                             [29, 34], [35, 37], [38, 44]]}
    second = {"example_index": 0, "offsets": [[-1, -1], [29, 34], [35, 37], [38, 44], [45, 47], [48, 52]]}
    first_logits = logits(10, 9, 9)  # "Berlin" alone: 4 + 4 = 8
    s, e = logits(6, 3, 5)
    s[3], e[5] = 5.0, 5.0  # "Berlin in 2010": 10
    examples = [{"id": "q1", "context": context}]
    assert best_answers([first_logits, (s, e)], [first, second], examples, allow_no_answer=False) == \
        {"q1": "Berlin in 2010"}


def test_no_answer_wins_when_the_null_score_beats_every_span():
    features = [{"example_index": 0, "offsets": [[-1, -1], [0, 4]]}]
    s, e = np.array([3.0, 0.0]), np.array([3.0, 0.0])  # null 6 > span 0
    examples = [{"id": "q", "context": "Anna"}]
    assert best_answers([(s, e)], features, examples, allow_no_answer=True) == {"q": ""}
    assert best_answers([(s, e)], features, examples, allow_no_answer=False) == {"q": "Anna"}
