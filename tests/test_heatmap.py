"""The report's heatmap stays readable at any grid size: on a 1 x 1, a 4 x 4 and the paper's 10 x 9 grid with long
labels, the title and every tick label lie inside the figure, and no two column labels or row labels overlap."""

import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from sweeps.reporting.report import Table  # noqa: E402

PAPER_INTERMEDIATES = ["anli_plus", "commonsenseqa", "cosmosqa", "hellaswag", "mnli", "qqp", "sst2", "squad_v1",
                       "squad_v2"]
PAPER_TARGETS = ["bucc2018", "mlqa", "panx", "pawsx", "tatoeba", "tydiqa", "udpos", "xnli", "xquad"]


def table(rows: list[str], targets: list[str]) -> Table:
    samples = {("none", t): [50.0] for t in targets}
    samples.update({(r, t): [50.0 + i - j] for (i, r), (j, t) in itertools.product(enumerate(rows),
                                                                                      enumerate(targets))})
    return Table(samples, {row: "none" for row in ["none", *rows]})


def overlapping(boxes) -> list:
    return [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]


@pytest.mark.parametrize("rows, targets", [
    (["mnli"], ["xnli"]),
    (["mnli", "squad_v1", "squad_v1>mnli", "mnli>squad_v1"], ["xnli", "panx", "gettext_programs", "pawsx"]),
    ([f"seed-sweep · {name}" for name in PAPER_INTERMEDIATES], PAPER_TARGETS),
], ids=["1x1", "4x4", "paper-10x9"])
def test_every_label_and_the_title_are_inside_and_apart(rows, targets):
    figure = table(rows, targets).heatmap_figure()
    try:
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        inside = figure.bbox.padded(1)
        axes = figure.axes[0]
        xlabels = [label.get_window_extent(renderer) for label in axes.get_xticklabels()]
        ylabels = [label.get_window_extent(renderer) for label in axes.get_yticklabels()]
        title = axes.title.get_window_extent(renderer)
        assert len(xlabels) == len(targets) and len(ylabels) == len(rows) + 1
        for box in [*xlabels, *ylabels, title]:
            assert inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1), box
        assert overlapping(xlabels) == [] and overlapping(ylabels) == []
        assert " ".join(axes.get_title().split()).endswith("without an intermediate task)")  # wrapped, not cut
    finally:
        plt.close(figure)
