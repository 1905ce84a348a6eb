import pytest

import random

from lightning_modules.metrics.tagging import chunk_scores, chunks_seqeval_0_0, tag_scores, token_accuracy


def test_panx_partial_entities_are_wrong_entities():
    gold = [
        ["B-PER", "I-PER", "O", "B-LOC"],
        ["B-ORG", "I-ORG", "I-ORG", "O"],
        ["B-LOC", "O"],
    ]
    predicted = [
        ["B-PER", "O", "O", "B-LOC"],    # PER cut after its first word: (PER 0-0) is not (PER 0-1)
        ["O", "I-ORG", "I-ORG", "O"],    # first word missed: the I- after O opens (ORG 1-2), also wrong
        ["B-LOC", "B-PER"],              # right LOC plus a spurious PER
    ]
    # gold entities: PER, LOC, ORG, LOC = 4; predicted: PER, LOC, ORG, LOC, PER = 5; right: the two LOCs
    # P = 2/5, R = 2/4, F1 = 2 * 0.4 * 0.5 / 0.9 = 4/9
    scores = tag_scores(gold, predicted)
    assert scores["precision"] == pytest.approx(40.0)
    assert scores["recall"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(400 / 9)


def test_pos_tags_are_scored_as_chunks_not_tokens():
    gold = [["DET", "NOUN", "NOUN", "VERB"]]
    predicted = [["DET", "NOUN", "VERB", "VERB"]]
    # runs of one tag merge: gold DET(0) NOUN(1-2) VERB(3), predicted DET(0) NOUN(1) VERB(2-3); only DET
    # matches: 1/3 everywhere, although 3 of the 4 tokens are right
    for scheme in ("0.0", "1.x"):
        assert tag_scores(gold, predicted, scheme) == pytest.approx(
            {"f1": 100 / 3, "precision": 100 / 3, "recall": 100 / 3, "accuracy": 75.0})
    assert token_accuracy(gold, predicted)["accuracy"] == pytest.approx(75.0)


def test_seqeval_1x_merges_cconj_and_sconj():
    # seqeval 1.x types a prefix-less tag by all but its first letter: CCONJ and SCONJ are both "CONJ",
    # so all three chunks match (seqeval 0.0.x, with whole-tag types, would give 2/3)
    assert tag_scores([["NOUN", "CCONJ", "NOUN"]], [["NOUN", "SCONJ", "NOUN"]], "1.x")["f1"] == pytest.approx(100.0)


def test_seqeval_1x_drops_a_sentence_final_x():
    # gold NOUN(0) VERB(1) X(2): X has the same type ("_") as the closing "O", so it never closes and is lost.
    # predicted NOUN(0) VERB(1) NOUN(2). Right 2 of 3 predicted and of 2 gold: P 2/3, R 1, F1 0.8
    # (seqeval 0.0.x keeps the X: 2/3 everywhere)
    scores = chunk_scores([["NOUN", "VERB", "X"]], [["NOUN", "VERB", "NOUN"]], "1.x")
    assert scores == pytest.approx({"f1": 80.0, "precision": 200 / 3, "recall": 100.0})


def test_ccg_token_accuracy():
    gold = [["NP", "S\\NP"], ["N"]]
    predicted = [["NP", "NP"], ["N"]]
    assert token_accuracy(gold, predicted) == pytest.approx({"accuracy": 200 / 3})  # 2 of 3 tokens


def test_misaligned_sequences_are_errors():
    with pytest.raises(ValueError):
        tag_scores([["O", "O"]], [["O"]])
    with pytest.raises(ValueError):
        token_accuracy([["N"]], [["N"], ["N"]])


def test_seqeval_0_0_keeps_cconj_and_sconj_apart():
    # whole-tag types: gold NOUN(0) CCONJ(1) NOUN(2), predicted NOUN(0) SCONJ(1) NOUN(2): 2 of 3 chunks match
    scores = tag_scores([["NOUN", "CCONJ", "NOUN"]], [["NOUN", "SCONJ", "NOUN"]])
    assert scores == pytest.approx({"f1": 200 / 3, "precision": 200 / 3, "recall": 200 / 3, "accuracy": 200 / 3})


def test_seqeval_0_0_keeps_a_sentence_final_x():
    # type "X" differs from the inserted "O": gold NOUN VERB X are three chunks; predicted NOUN VERB NOUN: 2 right
    scores = chunk_scores([["NOUN", "VERB", "X"]], [["NOUN", "VERB", "NOUN"]])
    assert scores == pytest.approx({"f1": 200 / 3, "precision": 200 / 3, "recall": 200 / 3})


def test_seqeval_0_0_chunks_of_pos_tags_by_hand():
    # first letters are read as prefixes: INTJ is an "I" (continues), SCONJ and SYM are "S" (single chunks that
    # close at once); a change of type always closes. Sentences are joined with an "O" after each (offsets count it).
    sentences = [["INTJ", "INTJ", "NOUN", "NOUN", "SCONJ", "SCONJ", "PUNCT"], ["X", "SYM"]]
    assert chunks_seqeval_0_0(sentences) == {("INTJ", 0, 1), ("NOUN", 2, 3), ("SCONJ", 4, 4), ("SCONJ", 5, 5),
                                             ("PUNCT", 6, 6), ("X", 8, 8), ("SYM", 9, 9)}
    # SCONJ CCONJ: 1.x would type both "CONJ" and lose the CCONJ; 0.0.x has two chunks. B-/I- prefixes as IOB2.
    assert chunks_seqeval_0_0([["SCONJ", "CCONJ", "B-PER", "I-PER", "I-LOC", "O", "I-ORG"]]) == {
        ("SCONJ", 0, 0), ("CCONJ", 1, 1), ("PER", 2, 3), ("LOC", 4, 4), ("ORG", 6, 6)}


def test_seqeval_0_0_precision_recall_by_hand():
    gold = [["DET", "NOUN", "VERB", "ADP", "DET", "NOUN"], ["PRON", "AUX", "ADJ"]]
    predicted = [["DET", "NOUN", "NOUN", "ADP", "DET", "NOUN"], ["PRON", "VERB", "ADJ"]]
    # gold chunks: DET NOUN VERB ADP DET NOUN | PRON AUX ADJ = 9; predicted: DET NOUN(1-2) ADP DET NOUN | PRON VERB
    # ADJ = 8; right: DET(0) ADP DET NOUN(5) PRON ADJ = 6. P = 6/8, R = 6/9, F1 = 12/17; 7 of 9 words right
    assert tag_scores(gold, predicted) == pytest.approx(
        {"precision": 75.0, "recall": 200 / 3, "f1": 1200 / 17, "accuracy": 700 / 9})


def test_seqeval_0_0_equals_1x_on_iob2_tags():
    # PAN-X's tag set: both behaviours read the same entities, malformed sequences (I- after O) included
    generator = random.Random(0)
    labels = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    for _ in range(200):
        lengths = [generator.randint(0, 8) for _ in range(generator.randint(1, 5))]
        gold = [[generator.choice(labels) for _ in range(n)] for n in lengths]
        predicted = [[generator.choice(labels) for _ in range(n)] for n in lengths]
        assert chunk_scores(gold, predicted, "0.0") == pytest.approx(chunk_scores(gold, predicted, "1.x"))


def test_unknown_scheme_is_an_error():
    with pytest.raises(ValueError, match="valid: 0.0, 1.x"):
        tag_scores([["O"]], [["O"]], "2.0")
