import pytest

from lightning_modules.metrics import squad
from lightning_modules.metrics.mlqa import exact_match, f1, mixed_segmentation, mlqa_scores, normalize_answer


def test_chinese_mixed_segmentation_splits_ideographs_and_keeps_latin_words():
    # "。" is Unicode punctuation (Po) and is dropped; each ideograph becomes a token
    assert normalize_answer("北京大学 is big。", "zh") == "北 京 大 学 is big"
    assert mixed_segmentation("2008年北京") == ["2008", "年", "北", "京"]


def test_chinese_f1_counts_characters():
    # [北 京 大 学] vs [北 京 大 学 图 书 馆]: 4 shared, P = 1, R = 4/7 -> F1 = 8/11
    assert f1("北京大学", "北京大学图书馆", "zh") == pytest.approx(8 / 11)
    assert squad.f1("北京大学", "北京大学图书馆") == 0.0  # one whitespace token each, no overlap


def test_arabic_article_removed_everywhere_including_inside_words():
    # "ال" becomes a space wherever it occurs: "الكتاب" -> " كتاب", and "مال" (ends in ال) -> "م "
    assert normalize_answer("الكتاب", "ar") == "كتاب"
    assert normalize_answer("مال", "ar") == "م"
    assert exact_match("الكتاب", "كتاب", "ar") == 1.0
    assert squad.exact_match("الكتاب", "كتاب") == 0.0
    # [طرق ترابية] vs [طرق]: P = 1/2, R = 1 -> F1 = 2/3
    assert f1("الطرق الترابية", "الطرق", "ar") == pytest.approx(2 / 3)


def test_hindi_has_no_articles_and_loses_the_danda():
    # "।" (U+0964) is Unicode punctuation but not ASCII punctuation
    assert normalize_answer("उत्तर पूर्व।", "hi") == "उत्तर पूर्व"
    assert exact_match("उत्तर पूर्व।", "उत्तर पूर्व", "hi") == 1.0
    assert squad.exact_match("उत्तर पूर्व।", "उत्तर पूर्व") == 0.0
    assert normalize_answer("The answer", "hi") == "the answer"


def test_german_articles():
    # die and des are articles; "dieser" is not (whole words only)
    assert normalize_answer("Die Hauptstadt des Landes", "de") == "hauptstadt landes"
    assert normalize_answer("Dieser Hund", "de") == "dieser hund"
    # [rhein] vs [rhein und main]: P = 1, R = 1/3 -> F1 = 1/2
    assert f1("der Rhein", "Rhein und Main", "de") == pytest.approx(0.5)


def test_spanish_vietnamese_and_unicode_punctuation():
    assert normalize_answer("«La casa»", "es") == "casa"  # « » are Pi/Pf punctuation
    assert normalize_answer("¿Qué?", "es") == "qué"
    assert normalize_answer("những con mèo", "vi") == "con mèo"
    assert normalize_answer("$100 + tax", "en") == "100 tax"  # $ and + are in string.punctuation


def test_empty_answers_follow_the_v1_script():
    assert exact_match("", "", "en") == 1.0
    assert f1("", "", "en") == 0.0


def test_mlqa_scores_average_over_questions():
    # q1: "die Hauptstadt" -> "hauptstadt" == gold: EM 1, F1 1; q2 unanswered: 0
    scores = mlqa_scores({"q1": "die Hauptstadt"}, {"q1": ["Hauptstadt"], "q2": ["Berlin"]}, "de")
    assert scores == {"exact_match": pytest.approx(50.0), "f1": pytest.approx(50.0)}


def test_unknown_language_is_an_error():
    with pytest.raises(ValueError):
        mlqa_scores({"q": "a"}, {"q": ["a"]}, "fr")
