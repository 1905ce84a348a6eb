"""What a format declares about itself, free of torch: read by the task registry, the data loader, the
perturbations, checkpoint selection, Optuna's direction and the report. Each format file defines one `SPEC`."""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean

# what a canonical field holds; rows whose values do not fit are refused with file, row and field named
FIELD_KINDS = {"text": "a string", "texts": "a list of strings", "tokens": "a list of strings",
               "label": "a label", "labels": "a list of labels", "id": "a string or an integer",
               "answers": "{text: [...], answer_start: [...]}", "any": "any value"}


@dataclass(frozen=True)
class FormatSpec:
    name: str
    fields: dict[str, str]  # canonical field a task's `columns` must map -> its kind (FIELD_KINDS)
    metrics: dict[str, str]  # metric a task may name as its own -> "max" or "min" (which is better)
    optional_fields: dict[str, str] = field(default_factory=dict)
    input_fields: tuple[str, ...] = ()  # the input text that perturbations may change (none: not perturbed)
    trains: bool = True  # False: evaluation only (a task of this format has no head to train)
    needs_labels: bool = False  # tasks declare `labels` (a list, or `from_data`)
    label_field: str = "label"  # the field whose values `labels: from_data` collects
    windowed: bool = False  # long inputs are cut into windows overlapping by `doc_stride`
    aligned_words: bool = False  # a label per input word: perturbations keep the words' number and order
    score_metrics: tuple[str, ...] = ()  # a task's single score is the mean of these (default: its own metric)

    def __post_init__(self):
        for name, kind in {**self.fields, **self.optional_fields}.items():
            if kind not in FIELD_KINDS:
                raise ValueError(f"format {self.name}: field {name!r} has kind {kind!r}; valid: "
                                 f"{', '.join(FIELD_KINDS)}")

    def lower_is_better(self, metric: str) -> bool:
        return self.metrics.get(metric) == "min"

    def scored_by(self, metric: str) -> tuple[str, ...]:
        """The metrics a task's single score is made of (its own metric, or the format's score_metrics)."""
        return self.score_metrics or (metric,)

    def task_score(self, metric: str, values: dict[str, float]) -> float | None:
        """A task's one number (report, benchmark score) from its metric values: span QA's (F1 + EM) / 2."""
        names = self.scored_by(metric)
        if not all(name in values for name in names):
            return None
        return mean(values[name] for name in names)


def check_value(kind: str, value) -> bool:
    """Whether `value` fits a field of `kind` (labels are checked against the label set elsewhere)."""
    if kind == "text":
        return isinstance(value, str)
    if kind in ("texts", "tokens"):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "id":
        return isinstance(value, (str, int)) and not isinstance(value, bool)
    if kind == "labels":
        return isinstance(value, list)
    if kind == "answers":
        return isinstance(value, dict) and isinstance(value.get("text"), list) and \
            isinstance(value.get("answer_start"), list)
    return True
