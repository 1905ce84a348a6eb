"""The catalog tasks built from the gettext catalogs installed on this machine (datamodules/fixtures/catalogs.py):
sizes, languages, every evaluation example traced to its message id through Python's own .mo reader, and the
Tatoeba accuracy that xstilts logs on the built bitext recomputed here with numpy."""

import gettext
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.fixtures import catalogs
from datamodules.fixtures.catalogs import PROGRAMS, Settings, build, clean
from datamodules.sources import load_split
from datamodules.tasks import TaskError

SMALL = Settings(train=40, validation=10, test=20, pairs_validation=40, pairs_test=80)


def installed(registry) -> list[str]:
    """The classification task's non-English languages whose every program catalog is installed."""
    task = registry[catalogs.CLASSIFICATION]
    return [lang for lang in task.languages if lang != "en" and all(
        (catalogs.locale_folder(catalogs.LOCALES, task.language_name(lang)) / f"{d}.mo").exists() for d in PROGRAMS)]


@pytest.fixture(scope="module")
def built(tmp_path_factory, registry):
    if not installed(registry):
        pytest.skip(catalogs.missing_line(catalogs.LOCALES))
    out = tmp_path_factory.mktemp("catalogs")
    return out, build(out, settings=SMALL)


def translation(locale: str, domain: str, msgid: str) -> str:
    """The catalog's translation of msgid, read by the standard library's gettext (not the builder's reader)."""
    with open(catalogs.locale_folder(catalogs.LOCALES, locale) / f"{domain}.mo", "rb") as handle:
        return gettext.GNUTranslations(handle).gettext(msgid)


def rows(out: Path, config: str, split: str) -> list[dict]:
    path = out / catalogs.DATASET / config / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_programs_task_sizes_languages_and_message_ids(built, registry):
    out, provenance = built
    task = registry[catalogs.CLASSIFICATION]
    langs = installed(registry)
    assert {"de", "fr", "es", "ru", "zh", "tr", "fi"} & set(task.languages) <= set(langs) | set(
        provenance["tasks"][task.name]["left_out"])
    train = load_split(task, "train", "en", out)
    assert len(train) == SMALL.train * len(PROGRAMS)
    assert Counter(train["label"]) == {label: SMALL.train for label in PROGRAMS}  # labels: from_data
    english = {split: {r["msgid"]: r for r in rows(out, "programs.en", split)} for split in ("validation", "test")}
    train_texts = {r["text"].casefold() for r in rows(out, "programs.en", "train")}
    for split, per_label in (("validation", SMALL.validation), ("test", SMALL.test)):
        assert not train_texts & {r["text"].casefold() for r in english[split].values()}
        for lang in ["en", *langs]:
            loaded = load_split(task, split, lang, out)  # through the registry, as a run reads it
            assert Counter(loaded["label"]) == {label: per_label for label in PROGRAMS}
            for row in rows(out, f"programs.{lang}", split):
                assert english[split][row["msgid"]]["label"] == row["label"]  # the same message as English's
                expected = row["msgid"] if lang == "en" else translation(task.language_name(lang), row["label"],
                                                                         row["msgid"])
                assert row["text"] == clean(expected)
        assert provenance["sizes"][f"programs.en/{split}"] == per_label * len(PROGRAMS)


def test_tatoeba_task_sizes_languages_and_message_ids(built, registry):
    out, provenance = built
    task = registry[catalogs.RETRIEVAL]
    assert set(installed(registry)) <= {lang for lang in task.languages if f"tatoeba.{lang}/test" in provenance["sizes"]}
    for lang in task.languages:
        if lang in provenance["tasks"][task.name]["left_out"]:
            continue
        for split, size in (("validation", SMALL.pairs_validation), ("test", SMALL.pairs_test)):
            pairs = rows(out, f"tatoeba.{lang}", split)
            assert len(pairs) == size == len(load_split(task, split, lang, out))
            for side in ("source_sentence", "target_sentence"):
                assert len({p[side].casefold() for p in pairs}) == size  # no duplicate on either side
            for pair in pairs:
                assert pair["target_sentence"] == clean(pair["msgid"])
                assert pair["source_sentence"] == clean(translation(task.language_name(lang), pair["domain"],
                                                                    pair["msgid"]))
    used = set(provenance["tasks"][task.name]["catalogs"])
    assert used <= set(provenance["catalogs"])
    if shutil.which("dpkg"):  # Debian: every catalog's package and version is known
        assert all(info["package"] != "unknown" and info["version"] != "unknown"
                   for info in provenance["catalogs"].values())
        assert "gnupg-l10n " in provenance["params"]["packages"] and "wget " in provenance["params"]["packages"]


def test_build_is_deterministic(built, tmp_path):
    out, _ = built
    build(tmp_path, settings=SMALL)
    first, second = out / catalogs.DATASET, tmp_path / catalogs.DATASET
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)


def test_clean_strips_placeholders_markup_and_accelerators():
    assert clean("%s: cannot open '%s': %s\n") == "cannot open"
    assert clean("Use %(prog)s {0} to <b>_Open</b> the %-10lu files ${name}") == "Use to Open the files"
    assert clean("打开(_O)") == "打开" and clean("Ö_ffnen") == "Öffnen" and clean("&Save &amp; quit") == "Save & quit"
    assert clean("GIT_DIR and GIT_WORK_TREE differ") == "GIT_DIR and GIT_WORK_TREE differ"


def test_missing_catalogs_name_their_packages(tmp_path, registry, capsys):
    assert catalogs.main(["--out", str(tmp_path / "out"), "--locales", str(tmp_path)]) == 1
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and all(package in line for package in set(PROGRAMS.values()))
    with pytest.raises(TaskError, match="python -m datamodules.fixtures.catalogs"):
        load_split(registry[catalogs.RETRIEVAL], "test", "de", tmp_path)


def test_logged_tatoeba_accuracy_equals_numpy_cosine_argmax(built, tracking_uri):
    import mlflow

    from lightning_modules.encoders import load_encoder
    from sweeps.runs.run import DataConfig, RunConfig, evaluate

    out, provenance = built
    langs = ("de", "fr")
    config = RunConfig(task=catalogs.RETRIEVAL, tracking_uri=tracking_uri,
                       data=DataConfig(data_dir=str(out), languages=langs, eval_splits=("test",), max_length=64))
    result = evaluate("tiny-xlmr", config)
    run = mlflow.MlflowClient(tracking_uri).get_run(result.run_id)

    encoder, tokenizer = load_encoder("tiny-xlmr")
    encoder.eval()
    layer = int(np.floor(encoder.config.num_hidden_layers * 14 / 24 + 0.5))  # XTREME: layer 14 of 24

    def embed(texts):
        vectors = []
        for text in texts:
            encoded = tokenizer(text, truncation=True, max_length=64, return_tensors="pt")
            with torch.no_grad():
                hidden = encoder(**encoded, output_hidden_states=True).hidden_states[layer][0].numpy()
            vectors.append(hidden.mean(axis=0))
        vectors = np.stack(vectors).astype(np.float64)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    for lang in langs:
        pairs = rows(out, f"tatoeba.{lang}", "test")
        xx, en = embed([p["source_sentence"] for p in pairs]), embed([p["target_sentence"] for p in pairs])
        similarities = en @ xx.T
        expected = 100 * np.mean(similarities.argmax(axis=1) == np.arange(len(pairs)))  # English queries
        reverse = 100 * np.mean(similarities.T.argmax(axis=1) == np.arange(len(pairs)))
        assert 0 < expected < 100  # neither all nor no hits: the comparison decides something
        assert run.data.metrics[f"test/{lang}/accuracy"] == pytest.approx(expected, abs=1e-9)
        assert run.data.metrics[f"test/{lang}/accuracy_xx_to_en"] == pytest.approx(reverse, abs=1e-9)
        assert run.data.params[f"data.size.test/{lang}"] == str(SMALL.pairs_test)
    assert run.data.params["data.provenance.gettext_catalogs.packages"] == provenance["params"]["packages"]
    artifact = mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/data/gettext_catalogs/provenance.json",
                                                   tracking_uri=tracking_uri)
    assert json.loads(Path(artifact).read_text())["sizes"][f"tatoeba.de/test"] == SMALL.pairs_test


def test_demo_skips_catalog_targets_with_one_line_when_catalogs_are_missing(tmp_path, capsys):
    from dataclasses import replace

    from sweeps.demo import DEMO, with_catalogs
    from sweeps.engine.experiment import load_experiment

    experiment = load_experiment(DEMO)
    assert {catalogs.CLASSIFICATION, catalogs.RETRIEVAL} <= set(experiment.targets)
    kept = with_catalogs(replace(experiment), locales=tmp_path)
    assert kept.targets == tuple(t for t in experiment.targets if t not in (catalogs.CLASSIFICATION, catalogs.RETRIEVAL))
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("demo: skipping gettext_programs, gettext_tatoeba: ")


def test_sweep_preflight_accepts_the_catalog_targets(built, tmp_path, tracking_uri):
    from sweeps.config import SweepConfig
    from sweeps.engine.sweep import preflight

    out, _ = built
    path = tmp_path / "catalogs.yaml"
    path.write_text(f"name: catalogs\nencoder: tiny-xlmr\ndata: {{data_dir: {out}, max_length: 32}}\n"
                    f"phases: {{baseline: true, targets: [{catalogs.CLASSIFICATION}, {catalogs.RETRIEVAL}]}}\n"
                    f"train: {{target: {{lr: 1.0e-3, epochs: 1}}}}\n")
    settings = SweepConfig(storage=f"sqlite:///{tmp_path / 'optuna.db'}", tracking_uri=tracking_uri)
    assert preflight(str(path), settings).targets == (catalogs.CLASSIFICATION, catalogs.RETRIEVAL)
