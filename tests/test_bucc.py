"""BUCC 2018 as XTREME scores it: the mining threshold is chosen on the labelled dev ("sample") split and applied
to test ("training"); the official files are read with their distractor sentences and mined in full."""

from pathlib import Path

import pytest
import torch

from datamodules.sources import load_split
from lightning_modules.formats import get_format
from lightning_modules.formats.base import EvalSet
from lightning_modules.metrics import retrieval as metrics

FIXTURES = Path(__file__).resolve().parents[1] / "datamodules" / "fixtures"
OFFICIAL = FIXTURES / "bucc2018_official"

# Hand-made candidates (source id, target id, margin score), best first, and gold pairs.
DEV = [("d1", "e1", 0.9), ("d2", "e2", 0.8), ("d3", "e9", 0.7), ("d4", "e8", 0.6)]
DEV_GOLD = {("d1", "e1"), ("d2", "e2"), ("d5", "e5")}
TEST = [("t1", "f1", 0.95), ("t4", "f9", 0.80), ("t2", "f2", 0.74), ("t3", "f3", 0.72)]
TEST_GOLD = {("t1", "f1"), ("t2", "f2"), ("t3", "f3")}


def pool_rows(candidates, gold, part=None):
    """Pool rows (datamodules/pools.py) holding the sentences of `candidates` and `gold`."""
    sources = sorted({s for s, _, _ in candidates} | {s for s, _ in gold})
    targets = sorted({t for _, t, _ in candidates} | {t for _, t in gold})
    rows = [{"side": "source", "id": s, "text": s, "gold": sorted(t for g, t in gold if g == s)} for s in sources]
    rows += [{"side": "target", "id": t, "text": t, "gold": []} for t in targets]
    return [{**r, "part": part} for r in rows] if part else rows


def score(task, rows, monkeypatch):
    """The retrieval format's scores of `rows`, with mining replaced by the hand-made candidates."""
    import datasets

    def mine(src_emb, tgt_emb, src_ids, tgt_ids, **_):
        return [c for c in DEV + TEST if c[0] in src_ids]

    monkeypatch.setattr(metrics, "bucc_mine", mine)
    examples = datasets.Dataset.from_list(rows)
    outputs = [{"embedding": torch.zeros(len(rows), 4)}]
    return get_format("retrieval").score(outputs, EvalSet(task, "de", "test", examples, None), None)


def test_threshold_is_chosen_on_dev_and_applied_to_test(registry, monkeypatch):
    task = registry["bucc2018_official"]
    # dev, by hand: F1 after each candidate .5 (cut .85), .8 (cut .75), .67, .57 -> threshold (0.8 + 0.7) / 2
    dev_only = score(task, pool_rows(DEV, DEV_GOLD), monkeypatch)
    assert dev_only == pytest.approx({"precision_own_threshold": 100.0, "recall_own_threshold": 200 / 3,
                                      "f1_own_threshold": 80.0, "threshold": 0.75})
    # test at the dev threshold 0.75 keeps t1 (gold) and t4 (wrong): P 1/2, R 1/3, F1 40; its own best cut would
    # keep all four (P 3/4, R 1, F1 85.71)
    rows = pool_rows(DEV, DEV_GOLD, "calibration") + pool_rows(TEST, TEST_GOLD, "eval")
    test = score(task, rows, monkeypatch)
    assert test == pytest.approx({"precision": 50.0, "recall": 100 / 3, "f1": 40.0, "threshold": 0.75,
                                  "f1_own_threshold": 600 / 7})


def test_hub_pairs_use_the_dev_threshold_too(registry, monkeypatch):
    """The hub's gold-pair rows (ids are row numbers) go through the same protocol."""
    import datasets

    seen = []

    def mine(src_emb, tgt_emb, src_ids, tgt_ids, **_):
        seen.append(len(src_ids))
        return [(i, i, 1.0 - 0.1 * i) for i in src_ids]

    monkeypatch.setattr(metrics, "bucc_mine", mine)
    examples = datasets.Dataset.from_dict({"source": list("abcde"), "target": list("ABCDE"),
                                           "part": ["calibration"] * 2 + ["eval"] * 3})
    outputs = [{"source": torch.zeros(5, 4), "target": torch.zeros(5, 4)}]
    scores = get_format("retrieval").score(outputs, EvalSet(registry["bucc2018"], "de", "test", examples, None), None)
    assert seen == [3, 2]  # the scored split (3 rows) and the calibration split (2 rows) are mined apart
    # dev: scores 1.0, 0.9, both gold -> keep both, threshold 0.9; test at 0.9 drops its third pair (0.8)
    assert scores == pytest.approx({"precision": 100.0, "recall": 200 / 3, "f1": 80.0, "threshold": 0.9,
                                    "f1_own_threshold": 100.0})


def read(path: Path) -> list[list[str]]:
    return [line.rstrip("\n").split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("lang", ["de", "fr"])
def test_official_files_are_read_whole_with_distractors(registry, lang):
    task = registry["bucc2018_official"]
    for split, stem in (("validation", "sample"), ("test", "training")):
        prefix = OFFICIAL / f"{lang}-en" / f"{lang}-en.{stem}"
        sources, targets = read(Path(f"{prefix}.{lang}")), read(Path(f"{prefix}.en"))
        gold = {tuple(pair) for pair in read(Path(f"{prefix}.gold"))}
        assert len(gold) < len(sources) and len(gold) < len(targets)  # distractors on both sides
        rows = load_split(task, split, lang, FIXTURES)
        assert rows["side"].count("source") == len(sources) and rows["side"].count("target") == len(targets)
        assert {(i, t) for i, side, g in zip(rows["id"], rows["side"], rows["gold"]) for t in g} == gold


def test_official_files_need_a_data_dir(registry):
    from datamodules.tasks import TaskError

    with pytest.raises(TaskError, match="local files only"):
        load_split(registry["bucc2018_official"], "test", "de", None)


def embed(texts, encoder, tokenizer):
    from lightning_modules.formats.base import encode, pad

    ids = pad(tokenizer(texts, truncation=True, max_length=256)["input_ids"], tokenizer.pad_token_id)
    layer = metrics.retrieval_layer(encoder.config.num_hidden_layers)
    with torch.no_grad():
        hidden = encode(encoder, ids, tokenizer.pad_token_id, hidden_layer=layer)
    return metrics.mean_pool(hidden, ids != tokenizer.pad_token_id)


def mine_file(stem: str, encoder, tokenizer):
    prefix = OFFICIAL / "de-en" / f"de-en.{stem}"
    sources, targets = read(Path(f"{prefix}.de")), read(Path(f"{prefix}.en"))
    candidates = metrics.bucc_mine(embed([s for _, s in sources], encoder, tokenizer),
                                   embed([t for _, t in targets], encoder, tokenizer),
                                   [i for i, _ in sources], [i for i, _ in targets],
                                   src_texts=[s for _, s in sources], tgt_texts=[t for _, t in targets])
    return candidates, {tuple(pair) for pair in read(Path(f"{prefix}.gold"))}


def test_evaluation_mines_every_sentence_and_scores_test_at_the_dev_threshold(registry, tiny):
    import lightning as L

    from datamodules.datamodule import TaskDataModule
    from lightning_modules.task_module import TaskModule

    encoder, tokenizer = tiny
    task, fmt = registry["bucc2018_official"], get_format("retrieval")
    datamodule = TaskDataModule(task, fmt, tokenizer, data_dir=FIXTURES, eval_languages=["de"], eval_batch_size=512)
    datamodule.setup("test")
    test_set = next(s for s in datamodule.eval_sets if s.split == "test")
    sample = len(read(OFFICIAL / "de-en" / "de-en.sample.de")) + len(read(OFFICIAL / "de-en" / "de-en.sample.en"))
    assert test_set.examples["part"].count("calibration") == sample  # the dev sentences travel with test
    module = TaskModule(encoder, fmt.build_head(encoder, task, None), fmt, None, tokenizer.pad_token_id)
    L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu").test(
        module, datamodule=datamodule, verbose=False)
    scores = module.scores
    encoder.eval()  # Lightning puts back the training mode TaskModule set

    # the same protocol recomputed from the files: threshold from sample, applied to training
    dev, dev_gold = mine_file("sample", encoder, tokenizer)
    test, test_gold = mine_file("training", encoder, tokenizer)
    threshold = metrics.bucc_threshold(dev, dev_gold)
    expected = metrics.bucc_scores(test, test_gold, threshold)
    assert scores["validation/de/threshold"] == pytest.approx(threshold, abs=1e-5)
    assert scores["test/de/threshold"] == pytest.approx(threshold, abs=1e-5)
    assert scores["test/de/f1"] == pytest.approx(expected["f1"], abs=1e-3)
    assert scores["validation/de/f1_own_threshold"] == pytest.approx(
        metrics.bucc_scores(dev, dev_gold, threshold)["f1"], abs=1e-3)
    assert "validation/de/f1" not in scores  # dev scored with its own threshold is named so
