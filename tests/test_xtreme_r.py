"""XTREME-R's retrieval tasks as XTREME's scripts score them: AP@k (third_party/utils_lareqa.py), Mewsli-X's
query strings (third_party/utils_mewslix.py), and the LAReQA / Mewsli-X pools built from the fixtures."""

from pathlib import Path

import pytest
import torch

from datamodules.pools import mention_query, sentence_breaks
from datamodules.sources import load_split
from lightning_modules.metrics.retrieval import average_precision_at_k, mean_average_precision_at_k

FIXTURES = Path(__file__).resolve().parents[1] / "datamodules" / "fixtures"


def test_average_precision_at_k_by_hand():
    assert average_precision_at_k(range(1, 6), [6, 4, 7, 1, 2], 2) == pytest.approx(0.25)  # 1/2 over min(5, 2)
    assert average_precision_at_k([1, 3], range(1, 6), 3) == pytest.approx(5 / 6)  # (1 + 2/3) / 2
    assert average_precision_at_k(["q7"], ["q1", "q7", "q9"], 20) == pytest.approx(0.5)  # reciprocal rank


def test_mean_average_precision_ranks_by_cosine():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.7, 0.7]])
    # query 0 ranks a, c, b: gold {a, b} -> (1 + 2/3) / 2; query 1 ranks b, c, a: gold {c} -> 1/2
    score = mean_average_precision_at_k(queries, candidates, [["a", "b"], ["c"]], ["a", "b", "c"], k=20)
    assert score == pytest.approx(100 * ((1 + 2 / 3) / 2 + 1 / 2) / 2)


def test_mewslix_query_marks_the_mention_in_its_sentence():
    text = "First sentence {x}.\nThe verdict came back for Smith, who stepped down."
    context = {"text": text, "sentence_spans": [{"start": 0, "end": 19}, {"start": 20, "end": len(text)}]}
    start = text.index("Smith")
    mention = {"example_id": "e1", "mention_span": {"start": start, "end": start + 5, "text": "Smith"}}
    # the sentence alone, braces around the mention (double spaces collapsed once, as the official code does)
    assert mention_query(context, mention) == "Smith: The verdict came back for { Smith } , who stepped down."


def test_sentences_are_cut_at_final_punctuation():
    text = "Anna works for Nokia in Rome. Nokia was founded in 1900! 東京です。次"
    assert [text[a:b] for a, b in sentence_breaks(text)] == [
        "Anna works for Nokia in Rome.", "Nokia was founded in 1900!", "東京です。", "次"]


def test_lareqa_pool_has_every_languages_sentences_and_one_gold_answer_per_language(registry):
    rows = load_split(registry["lareqa"], "validation", "de", FIXTURES)
    queries = [i for i, side in enumerate(rows["side"]) if side == "source"]
    candidates = {rows["id"][i] for i, side in enumerate(rows["side"]) if side == "target"}
    assert len(queries) == 40 and {c.split("_")[0] for c in candidates} == {"de", "en", "es", "ru"}
    for i in queries:
        gold = rows["gold"][i]
        assert rows["id"][i].endswith("_de") and set(gold) <= candidates
        assert sorted(g.split("_")[0] for g in gold) == ["de", "en", "es", "ru"]  # the parallel answers
        assert len({g.split("_", 1)[1] for g in gold}) == 1  # the same paragraph and sentence in every language


def test_mewslix_pool_has_the_languages_mentions_and_every_candidate(registry):
    rows = load_split(registry["mewslix"], "test", "es", FIXTURES)
    queries = [i for i, side in enumerate(rows["side"]) if side == "source"]
    candidates = {rows["id"][i] for i, side in enumerate(rows["side"]) if side == "target"}
    assert len(queries) == 40 and len(candidates) == 49  # 10 articles x 4 mentions; the lexicon's entities
    assert all(rows["id"][i].startswith("es-") and set(rows["gold"][i]) <= candidates for i in queries)
    assert all("{ " in rows["text"][i] and " }" in rows["text"][i] for i in queries)


# google-research/xtreme evaluate.py: XTREME_TASK2LANGS and XTREME_R_TASK2LANGS (LAReQA lists none there)
OFFICIAL_LANGUAGES = {
    "xtreme": {
        "pawsx": "de en es fr ja ko zh", "xnli": "ar bg de el en es fr hi ru sw th tr ur vi zh",
        "panx": "ar he vi id jv ms tl eu ml ta te af nl en de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw yo my "
                "zh kk tr et fi hu",
        "udpos": "af ar bg de el en es et eu fa fi fr he hi hu id it ja kk ko mr nl pt ru ta te th tl tr ur vi yo zh",
        "bucc2018": "de fr ru zh",
        "tatoeba": "ar he vi id jv tl eu ml ta te af nl de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw zh kk "
                   "tr et fi hu",
        "xquad": "en es de el ru tr ar vi th zh hi", "mlqa": "en es de ar hi vi zh",
        "tydiqa": "en ar bn fi id ko ru sw te",
    },
    "xtreme-r": {
        "xnli": "ar bg de el en es fr hi ru sw th tr ur vi zh",
        "panx": "ar he vi id jv ms tl eu ml ta te af nl en de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw yo my "
                "zh kk tr et fi hu qu pl uk az lt pa gu ro",
        "udpos": "af ar bg de el en es et eu fa fi fr he hi hu id it ja kk ko mr nl pt ru ta te th tl tr ur vi yo zh "
                 "lt pl uk wo ro",
        "tatoeba": "ar he vi id jv tl eu ml ta te af nl de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw zh kk "
                   "tr et fi hu az lt pl uk ro",
        "xcopa": "et ht id it qu sw ta th tr vi zh", "mewslix": "ar de en es fa ja pl ro ta tr uk",
        "xquad": "en es de el ru tr ar vi th zh hi ro", "mlqa": "en es de ar hi vi zh",
        "tydiqa": "en ar bn fi id ko ru sw te",
    },
}


@pytest.mark.parametrize("benchmark", sorted(OFFICIAL_LANGUAGES))
def test_benchmark_language_lists_are_the_official_ones(registry, benchmark):
    from sweeps.reporting.benchmark import benchmark_tasks

    tasks = {t.name: set(t.benchmark_languages(benchmark)) for t in benchmark_tasks(registry, benchmark)}
    official = {task: set(langs.split()) for task, langs in OFFICIAL_LANGUAGES[benchmark].items()}
    assert {task: langs for task, langs in tasks.items() if task != "lareqa"} == official
    assert ("ro" in tasks["xquad"]) == (benchmark == "xtreme-r")
