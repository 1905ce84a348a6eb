"""`xstilts report EXPERIMENT --by FACTOR[,FACTOR]`: zero-shot transfer grouped by a factor of the runs.

A configuration is one target trained (or evaluated) from one chain of phases: an experiment, an encoder, the
intermediate task(s) before it, a seed. Its zero-shot score is the report's (sweeps/reporting/report.py: the mean
over the target's languages other than English, QA (F1+EM)/2) of its best run by English validation. Factors:

* of the intermediate phase(s), read from the tags of the phase runs the target started from:
  `complexity`, `domain` (a task without one is "general"), `order` (the sequence, e.g. squad_v1>mnli: orders are
  compared only with the permutations of the same tasks), `train_language` (the intermediate's source language),
  and any other task tag (`tags:` in tasks.yaml, e.g. `difficulty`); a sequence of several phases joins their
  values with ">";
* of the run: `encoder`, `experiment`, `tuning` (of the intermediate phase(s)), and any run tag (`xstilts.<name>`).

Configurations without an intermediate phase are the baseline: every group is shown beside the baselines of its own
configurations (same experiment, encoder, target and seed). Per target and group: mean ± std over seeds (a seed's
value is the mean over the group's configurations), the difference from the baseline and between groups that differ
in one factor, marked ≈ when smaller than the larger seed spread, and an exact two-sided sign test over the
target's zero-shot languages (each language's score averaged over seeds and configurations; ties dropped). Where
runs logged robustness drops (data.perturbations / data.adversarial), their zero-shot mean per variant too.
"""

from __future__ import annotations

import csv
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, stdev

from sweeps.reporting.report import language_table, log_to_sweeps, target_runs, training_language

INTERMEDIATE_FACTORS = ("complexity", "domain", "order", "train_language")
RUN_FACTORS = ("encoder", "experiment", "tuning")
NAMED_FACTORS = INTERMEDIATE_FACTORS + RUN_FACTORS
BASELINE = "none"
DEFAULT_DOMAIN = "general"
UNSET = "unset"


def sign_test(differences) -> tuple[int, int, float]:
    """(positive differences, non-zero differences, exact two-sided p) of the sign test; p = 1 without any."""
    from scipy.stats import binomtest

    nonzero = [d for d in differences if d != 0]
    positive = sum(d > 0 for d in nonzero)
    return positive, len(nonzero), (binomtest(positive, len(nonzero)).pvalue if nonzero else 1.0)


def _joined(values) -> str:
    return ">".join(dict.fromkeys(values))


@dataclass
class Configuration:
    experiment: str
    encoder: str
    target: str
    seed: str
    chain: list  # the intermediate phase runs, first to last; [] for the baseline
    run: object  # the target run
    group: tuple[str, ...] = ()

    @property
    def baseline(self) -> bool:
        return not self.chain

    @property
    def tasks(self) -> list[str]:
        return [r.data.tags.get("xstilts.task", "") for r in self.chain]


class Factors:
    """The factor names these runs can be grouped by, and each configuration's value of each."""

    def __init__(self, configurations: list[Configuration]):
        self.task_tags = sorted({k.removeprefix("xstilts.task.") for c in configurations for r in c.chain
                                 for k in r.data.tags if k.startswith("xstilts.task.")} - {"domain"})
        self.run_tags = sorted({k.removeprefix("xstilts.") for c in configurations for k in c.run.data.tags
                                if k.startswith("xstilts.") and k.count(".") == 1})

    def check(self, names: list[str]) -> None:
        for name in names:
            if name not in NAMED_FACTORS and name not in self.task_tags and name not in self.run_tags:
                raise ValueError(f"--by {name!r}: unknown factor; valid: {', '.join(NAMED_FACTORS)}, a task tag of "
                                 f"these runs ({', '.join(self.task_tags) or 'none'}) or a run tag "
                                 f"({', '.join(self.run_tags)})")

    def of_intermediates(self, name: str) -> bool:
        return name in INTERMEDIATE_FACTORS or name in self.task_tags

    def value(self, name: str, config: Configuration) -> str:
        tags = config.run.data.tags
        if name == "encoder":
            return config.encoder
        if name == "experiment":
            return config.experiment
        if name == "tuning":
            return _joined(r.data.params.get("train.tuning", "full") for r in config.chain)
        if name == "order":
            return ">".join(config.tasks)
        if name == "train_language":
            return _joined(r.data.tags.get("xstilts.train_language", "en") for r in config.chain)
        if name == "domain":
            return _joined(r.data.tags.get("xstilts.task.domain", DEFAULT_DOMAIN) for r in config.chain)
        if self.of_intermediates(name):
            return _joined(r.data.tags.get(f"xstilts.task.{name}", UNSET) for r in config.chain)
        return tags.get(f"xstilts.{name}", UNSET)


def _chain(run, phases: dict, client) -> list:
    """The intermediate phase runs a target run started from, first to last (an MLM phase is not one)."""
    chain, run_id = [], run.data.tags.get("xstilts.started_from_run_id")
    while run_id:
        if run_id not in phases:
            phases[run_id] = client.get_run(run_id)
        phase = phases[run_id]
        if phase.data.tags.get("xstilts.phase") == "intermediate":
            chain.insert(0, phase)
        run_id = phase.data.tags.get("xstilts.started_from_run_id")
    return chain


def configurations(client, experiments: list[str]) -> list[Configuration]:
    """Every configuration's best target run (by English validation) per seed."""
    best: dict[tuple, Configuration] = {}
    for experiment in experiments:
        runs = target_runs(client, experiment)
        found = client.get_experiment_by_name(experiment)
        phases = {r.info.run_id: r for r in client.search_runs(
            [found.experiment_id], "tags.`xstilts.kind` = 'phase'", max_results=50000)}
        for run in runs:
            tags = run.data.tags
            config = Configuration(experiment, tags.get("xstilts.encoder", ""), tags["xstilts.task"],
                                   tags.get("xstilts.seed", "0"), _chain(run, phases, client), run)
            key = (experiment, config.encoder, tuple(r.info.run_id for r in config.chain), config.target, config.seed)
            score = run.data.metrics.get("selection/score", float("-inf"))
            if key not in best or score > best[key].run.data.metrics.get("selection/score", float("-inf")):
                best[key] = config
    return list(best.values())


@dataclass
class Cell:
    """One group's numbers for one target."""

    per_seed: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    baseline_per_seed: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    languages: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    baseline_languages: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    drops: dict[str, dict[str, list[float]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    members: set = field(default_factory=set)

    @staticmethod
    def _stats(per_seed: dict[str, list[float]]) -> tuple[float | None, float, int]:
        values = [mean(v) for v in per_seed.values() if v]
        if not values:
            return None, 0.0, 0
        return mean(values), (stdev(values) if len(values) > 1 else 0.0), len(values)

    def score(self):
        return self._stats(self.per_seed)

    def baseline(self):
        return self._stats(self.baseline_per_seed)

    def drop(self, variant: str):
        return self._stats(self.drops[variant])

    def language_means(self, baseline: bool = False) -> dict[str, float]:
        values = self.baseline_languages if baseline else self.languages
        return {lang: mean(v) for lang, v in values.items() if v}


@dataclass
class Comparison:
    target: str
    first: str
    second: str  # a group, or "no intermediate" (the first group's own baselines)
    difference: float
    within_spread: bool
    positive: int
    languages: int
    p: float


def _scores(config: Configuration, registry):
    """(zero-shot score, per-language scores, robustness drops per variant) of a configuration's run."""
    from sweeps.reporting.benchmark import task_score as aggregate
    task = registry[config.target]
    table = language_table(config.run.data.metrics, task)
    table.pop(training_language(task, registry), None)
    if not table:
        return None, {}, {}
    per_language = {lang: aggregate({lang: row}, task.format, task.metric) for lang, row in table.items()}
    drops = defaultdict(list)
    for key, value in config.run.data.metrics.items():
        parts = key.split("/")  # robustness/<variant>/<lang>/<metric>_drop
        if len(parts) == 4 and parts[0] == "robustness" and parts[3] == f"{task.metric}_drop" \
                and parts[2] in table:
            drops[parts[1]].append(value)
    return aggregate(table, task.format, task.metric), per_language, {v: mean(d) for v, d in drops.items()}


class FactorView:
    def __init__(self, configs: list[Configuration], factors: Factors, names: list[str], registry):
        self.names = names
        self.cells: dict[tuple[str, str], Cell] = defaultdict(Cell)  # (target, group label) -> numbers
        self.groups_of: dict[str, tuple[str, ...]] = {}
        baselines = {(c.experiment, c.encoder, c.target, c.seed): c for c in configs if c.baseline}
        scored = {id(c): _scores(c, registry) for c in configs}
        for config in configs:
            if config.baseline:
                continue
            config.group = tuple(factors.value(name, config) for name in names)
            label = " · ".join(config.group)
            self.groups_of[label] = config.group
            score, languages, drops = scored[id(config)]
            if score is None:
                continue
            cell = self.cells[(config.target, label)]
            cell.members.add(" ".join(filter(None, [config.experiment if len({c.experiment for c in configs}) > 1
                                                    else "", ">".join(config.tasks)])))
            cell.per_seed[config.seed].append(score)
            for lang, value in languages.items():
                cell.languages[lang].append(value)
            for variant, value in drops.items():
                cell.drops[variant][config.seed].append(value)
            base = baselines.get((config.experiment, config.encoder, config.target, config.seed))
            if base is not None and scored[id(base)][0] is not None:
                base_score, base_languages, base_drops = scored[id(base)]
                cell.baseline_per_seed[config.seed].append(base_score)
                for lang, value in base_languages.items():
                    cell.baseline_languages[lang].append(value)
                for variant, value in base_drops.items():
                    cell.drops[f"{variant} (no intermediate)"][config.seed].append(value)
        self.targets = sorted({t for t, _ in self.cells})
        self.labels = sorted(self.groups_of)
        self.order_factor = [i for i, name in enumerate(names) if name == "order"]

    def comparable(self, a: str, b: str) -> bool:
        """Two groups are compared when they differ in one factor (orders: only permutations of the same tasks)."""
        first, second = self.groups_of[a], self.groups_of[b]
        differing = [i for i in range(len(first)) if first[i] != second[i]]
        if len(differing) != 1:
            return False
        return all(sorted(first[i].split(">")) == sorted(second[i].split(">")) for i in self.order_factor)

    def comparisons(self) -> list[Comparison]:
        found = []
        for target in self.targets:
            labels = [label for label in self.labels if (target, label) in self.cells]
            for label in labels:
                cell = self.cells[(target, label)]
                if cell.baseline()[0] is not None:
                    found.append(self._compare(target, label, "no intermediate", cell.score(), cell.baseline(),
                                               cell.language_means(), cell.language_means(baseline=True)))
            for a, b in itertools.combinations(labels, 2):
                if self.comparable(a, b):
                    first, second = self.cells[(target, a)], self.cells[(target, b)]
                    found.append(self._compare(target, a, b, first.score(), second.score(), first.language_means(),
                                               second.language_means()))
        return found

    @staticmethod
    def _compare(target, a, b, first, second, first_languages, second_languages) -> Comparison:
        difference = first[0] - second[0]
        spread = max(first[1], second[1])
        shared = sorted(set(first_languages) & set(second_languages))
        positive, n, p = sign_test([first_languages[lang] - second_languages[lang] for lang in shared])
        return Comparison(target, a, b, difference, spread > 0 and abs(difference) < spread, positive, n, p)

    def variants(self, target: str) -> list[str]:
        return sorted({v for (t, _), cell in self.cells.items() if t == target for v in cell.drops})

    # ------------------------------------------------------------------------------------------- output

    def markdown(self, title: str) -> str:
        by = ", ".join(self.names)
        lines = [f"# xstilts report: {title}, by {by}", "",
                 "Zero-shot score (mean over the target's languages other than English; QA: (F1+EM)/2) of each "
                 "group's configurations, mean ± std over seeds; beside it the same configurations without an "
                 "intermediate phase; ≈ marks a difference smaller than the larger seed spread; p: exact two-sided "
                 "sign test over the languages (k of n higher: in k of the n languages where the two differ, the "
                 "first scores higher).", ""]
        for target in self.targets:
            lines += [f"## {target}", "", f"| {by} | configurations | seeds | zero-shot | no intermediate | "
                      "difference |", "|---|---|---|---|---|---|"]
            for label in self.labels:
                cell = self.cells.get((target, label))
                if cell is None:
                    continue
                score, base = cell.score(), cell.baseline()
                difference = "–" if base[0] is None else _difference(score, base)
                lines.append(f"| {label} | {', '.join(sorted(cell.members))} | {score[2]} | {_cell(score)} | "
                             f"{_cell(base)} | {difference} |")
            lines += self._comparison_lines(target) + self._language_lines(target) + self._robustness_lines(target)
            lines.append("")
        return "\n".join(lines)

    def _comparison_lines(self, target: str) -> list[str]:
        rows = [c for c in self.comparisons() if c.target == target]
        if not rows:
            return []
        return ["", "| compared | difference | sign test |", "|---|---|---|"] + [
            f"| {c.first} vs {c.second} | {c.difference:+.1f}{' ≈' if c.within_spread else ''} | "
            f"{c.positive} of {c.languages} higher, p = {c.p:.3g} |" for c in rows]

    def _language_lines(self, target: str) -> list[str]:
        cells = {label: self.cells[(target, label)] for label in self.labels if (target, label) in self.cells}
        languages = sorted({lang for cell in cells.values() for lang in cell.languages})
        lines = ["", f"| {', '.join(self.names)} | " + " | ".join(languages) + " |", "|---" * (len(languages) + 1)
                 + "|"]
        for label, cell in cells.items():
            means = cell.language_means()
            lines.append(f"| {label} | " + " | ".join(f"{means[lang]:.1f}" if lang in means else "–"
                                                       for lang in languages) + " |")
        return lines

    def _robustness_lines(self, target: str) -> list[str]:
        variants = self.variants(target)
        if not variants:
            return []
        lines = ["", "Robustness: drop of the zero-shot score on perturbed or adversarial copies (clean − perturbed), "
                 "mean ± std over seeds.", "", f"| {', '.join(self.names)} | " + " | ".join(variants) + " |",
                 "|---" * (len(variants) + 1) + "|"]
        for label in self.labels:
            cell = self.cells.get((target, label))
            if cell is not None:
                lines.append(f"| {label} | " + " | ".join(_cell(cell.drop(v)) for v in variants) + " |")
        return lines

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["target", "group", "measure", "mean", "std", "seeds"])
            for (target, label), cell in sorted(self.cells.items()):
                measures = [("zero_shot", cell.score()), ("no_intermediate", cell.baseline())]
                measures += [(f"drop:{v}", cell.drop(v)) for v in sorted(cell.drops)]
                for measure, (value, spread, seeds) in measures:
                    if value is not None:
                        writer.writerow([target, label, measure, value, spread, seeds])
            writer.writerow([])
            writer.writerow(["target", "first", "second", "difference", "within_seed_spread", "positive",
                             "languages", "p"])
            for c in self.comparisons():
                writer.writerow([c.target, c.first, c.second, c.difference, c.within_spread, c.positive, c.languages,
                                 c.p])

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        robust = [t for t in self.targets if self.variants(t)]
        panels = [(t, "zero-shot") for t in self.targets] + [(t, "robustness") for t in robust]
        figure, axes = plt.subplots(1, len(panels), figsize=(max(4.0, 1.2 * len(self.labels) + 2) * len(panels), 4.5),
                                    squeeze=False)
        for axis, (target, kind) in zip(axes[0], panels):
            labels = [label for label in self.labels if (target, label) in self.cells]
            cells = [self.cells[(target, label)] for label in labels]
            series = [("intermediate", [c.score() for c in cells]), ("no intermediate", [c.baseline() for c in cells])] \
                if kind == "zero-shot" else [(v, [c.drop(v) for c in cells]) for v in self.variants(target)]
            width = 0.8 / len(series)
            for k, (name, stats) in enumerate(series):
                axis.bar([i + k * width for i in range(len(labels))], [s[0] or 0 for s in stats], width,
                         yerr=[s[1] for s in stats], capsize=3, label=name)
            axis.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, rotation=30, ha="right")
            axis.set_title(f"{target}: {'zero-shot score' if kind == 'zero-shot' else 'robustness drop'}")
            axis.legend(fontsize="small")
        figure.suptitle(f"by {', '.join(self.names)} (mean ± std over seeds)")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)


def _cell(stats) -> str:
    value, spread, seeds = stats
    if value is None:
        return "–"
    return f"{value:.1f}" + (f" ± {spread:.1f}" if seeds > 1 else "")


def _difference(first, second) -> str:
    difference, spread = first[0] - second[0], max(first[1], second[1])
    return f"{difference:+.1f}" + (" ≈" if spread > 0 and abs(difference) < spread else "")


def build(experiments: list[str], uri: str, out: Path, names: list[str]) -> dict[str, Path]:
    """The view by `names`, written into `out` and logged to each experiment's sweep run (report/)."""
    import mlflow

    from datamodules.tasks import load_registry

    client = mlflow.MlflowClient(uri)
    configs = configurations(client, experiments)
    factors = Factors(configs)
    factors.check(names)
    view = FactorView(configs, factors, names, load_registry())
    stem = "by_" + "_".join(names)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / f"{stem}.md", "csv": out / f"{stem}.csv", "plot": out / f"{stem}.png"}
    paths["markdown"].write_text(view.markdown(", ".join(experiments)))
    view.write_csv(paths["csv"])
    view.plot(paths["plot"])
    log_to_sweeps(client, experiments, paths.values())
    return paths
