import pytest

from lightning_modules.metrics.tagging import tag_scores, token_accuracy


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
    assert tag_scores(gold, predicted) == pytest.approx({"f1": 100 / 3, "precision": 100 / 3, "recall": 100 / 3})
    assert token_accuracy(gold, predicted)["accuracy"] == pytest.approx(75.0)


def test_seqeval_1x_merges_cconj_and_sconj():
    # seqeval 1.x types a prefix-less tag by all but its first letter: CCONJ and SCONJ are both "CONJ",
    # so all three chunks match (seqeval 0.0.x, with whole-tag types, would give 2/3)
    assert tag_scores([["NOUN", "CCONJ", "NOUN"]], [["NOUN", "SCONJ", "NOUN"]])["f1"] == pytest.approx(100.0)


def test_seqeval_1x_drops_a_sentence_final_x():
    # gold NOUN(0) VERB(1) X(2): X has the same type ("_") as the closing "O", so it never closes and is lost.
    # predicted NOUN(0) VERB(1) NOUN(2). Right 2 of 3 predicted and of 2 gold: P 2/3, R 1, F1 0.8
    # (seqeval 0.0.x keeps the X: 2/3 everywhere)
    scores = tag_scores([["NOUN", "VERB", "X"]], [["NOUN", "VERB", "NOUN"]])
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
