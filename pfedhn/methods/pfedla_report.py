"""pFedLA's section of the results tables: the learned aggregation weights α its runs report
(``method_report["alpha"]``: per layer, a (clients, clients) matrix, row i client i's weights),
set against how many training classes each pair of clients shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pfedhn.report import Label, Run, Section, dataset_label, pair_weight_means, plot_pair_weights

PLOTTED_LAYER = "fc1"  # the layer drawn per run: most of the target's parameters


def reporting_alpha(found: list[Run], tabled: list[Run]) -> list[Run]:
    """The runs of the accuracy tables that report α."""
    return [r for r in tabled if r.result.get("method_report", {}).get("alpha")]


def alpha_means(run: Run, layer: str) -> tuple[float, float, float]:
    """The learned α for ``layer``: mean weight of a client on itself, on the other clients that
    share a class with it, and on those that share none."""
    return pair_weight_means(np.array(run.result["method_report"]["alpha"][layer]), run)


def alpha_table(runs: list[Run], tabled: list[Run], label: Label) -> str:
    """Per run and layer: mean α on self, on class-sharing clients, on the others."""
    lines = [
        "| method | dataset, clients | rounds | layer | α on itself | α on clients sharing a class | α on the others |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for layer in run.result["method_report"]["alpha"]:
            own, share, none = alpha_means(run, layer)
            lines.append(
                f"| {label(run.method)} | {dataset_label(run.dataset)}, "
                f"{run.clients} | {run.rounds_done} | {layer} | {own:.3f} | {share:.3f} | {none:.3f} |"
            )
    return "\n".join(lines)


def plot_alpha(run: Run, tabled: list[Run], label: Label, static: Path) -> Path:
    """α of ``PLOTTED_LAYER`` (row i: client i's weights) beside the shared-class counts."""
    alpha = np.array(run.result["method_report"]["alpha"][PLOTTED_LAYER])
    path = static / f"alpha_{run.path.parent.name}_{PLOTTED_LAYER}.png"  # one per run
    return plot_pair_weights(run, alpha, "α", f"learned α, layer {PLOTTED_LAYER}", label, path)


ALPHA = Section(
    select=reporting_alpha,
    caption=(
        "pFedLA's learned aggregation weights at the last evaluation (mean α per client pair; "
        "HeurpFedLA: as its hypernetworks give them, though a client's K local layers use its own copy):"
    ),
    table=alpha_table,
    plot=plot_alpha,
)
