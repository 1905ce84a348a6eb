import pytest

from lightning_modules.metrics.squad import exact_match, f1, f1_v2, normalize_answer, squad_scores


def test_normalize_answer_drops_case_ascii_punctuation_articles_and_extra_spaces():
    # "the  eiffel-tower!" -> punctuation gone: "the  eiffeltower" -> article gone, spaces collapsed
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("An apple, a day") == "apple day"
    assert normalize_answer("theater") == "theater"  # articles only as whole words


def test_exact_match_and_token_f1():
    assert exact_match("The Cat.", "cat") == 1.0
    assert exact_match("cats", "cat") == 0.0
    # pred -> [cat, sat, on, mat], gold -> [cat, on, mat]: 3 shared, P = 3/4, R = 1, F1 = 6/7
    assert f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)


def test_corpus_score_is_mean_over_all_reference_questions_of_best_gold():
    references = {
        "q1": ["Denver Broncos", "The Denver Broncos"],
        "q2": ["Carolina Panthers", "Panthers"],
        "q3": ["Santa Clara"],
    }
    # q1: EM 1, F1 1. q2: "carolina" vs "carolina panthers": P 1, R 1/2 -> F1 2/3 (vs "panthers": 0).
    # q3 is unanswered: 0. The extra prediction "q9" is ignored.
    predictions = {"q1": "Denver Broncos", "q2": "Carolina", "q9": "anything"}
    scores = squad_scores(predictions, references)
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)  # 55.56


def test_squad_v2_no_answer_cases():
    references = {"none-right": [], "none-wrong": [], "has-answer": ["Paris"], "article-only": ["the"]}
    predictions = {
        "none-right": "",      # gold [""] and "" predicted: EM 1, F1 1
        "none-wrong": "Lyon",  # answered an unanswerable question: 0, 0
        "has-answer": "",      # abstained on an answerable one: 0, 0
        "article-only": "",    # "the" normalises to nothing, so the question counts as unanswerable: 1, 1
    }
    scores = squad_scores(predictions, references, no_answer=True)
    assert scores == {"exact_match": pytest.approx(50.0), "f1": pytest.approx(50.0)}
    assert f1_v2("", "") == 1.0 and f1_v2("", "Paris") == 0.0 and f1_v2("Paris", "") == 0.0


def test_v1_empty_answers_score_f1_zero_and_em_one():
    # the SQuAD v1.1 script (XQuAD, TyDiQA): "the" and "An" normalise to "", so EM compares "" with "": 1;
    # F1 counts shared tokens, none: 0. The gold "the" is kept (v1 drops no gold answer).
    assert f1("An", "the") == 0.0 and exact_match("An", "the") == 1.0
    references = {"article": ["the"], "both": ["the", "Paris"], "plain": ["Paris"]}
    predictions = {"article": "a", "both": "", "plain": "Paris"}
    # article: EM 1, F1 0. both: EM max(1, 0) = 1, F1 max(0, 0) = 0. plain: 1, 1
    scores = squad_scores(predictions, references)
    assert scores == {"exact_match": pytest.approx(100.0), "f1": pytest.approx(100 / 3)}


def test_no_reference_questions_is_an_error():
    with pytest.raises(ValueError):
        squad_scores({}, {})
