"""pFedLA's section of the results tables: the learned aggregation weights α its runs report
(``method_report["alpha"]``: per layer, a (clients, clients) matrix, row i client i's weights),
set against how many training classes each pair of clients shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pfedhn.report import Label, Run, Section, dataset_label, save_figure

PLOTTED_LAYER = "fc1"  # the layer drawn per run: most of the target's parameters


def reporting_alpha(found: list[Run], tabled: list[Run]) -> list[Run]:
    """The runs of the accuracy tables that report α."""
    return [r for r in tabled if r.result.get("method_report", {}).get("alpha")]


def alpha_means(run: Run, layer: str) -> tuple[float, float, float]:
    """The learned α for ``layer``: mean weight of a client on itself, on the other clients that
    share a class with it, and on those that share none."""
    alpha = np.array(run.result["method_report"]["alpha"][layer])
    shared = shared_classes(run) > 0
    others = ~np.eye(len(alpha), dtype=bool)
    return float(alpha.diagonal().mean()), float(alpha[shared & others].mean()), float(alpha[~shared].mean())


def shared_classes(run: Run) -> np.ndarray:
    """(clients, clients): how many training classes two clients have in common."""
    classes = [set(c) for c in run.result["client_classes"]]
    return np.array([[len(a & b) for b in classes] for a in classes])


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
    import matplotlib.pyplot as plt

    alpha = np.array(run.result["method_report"]["alpha"][PLOTTED_LAYER])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    shown = axes[0].imshow(alpha, cmap="viridis")
    fig.colorbar(shown, ax=axes[0], fraction=0.046)
    axes[0].set(
        xlabel="client j (aggregated)", ylabel="client i (receiving)", title=f"learned α, layer {PLOTTED_LAYER}"
    )
    shared = shared_classes(run)
    counts = axes[1].imshow(shared, cmap="Greys")
    fig.colorbar(counts, ax=axes[1], fraction=0.046, ticks=range(int(shared.max()) + 1))
    axes[1].set(xlabel="client j", ylabel="client i", title="training classes in common")
    own, share, none = alpha_means(run, PLOTTED_LAYER)
    fig.suptitle(
        f"{label(run.method)}, {dataset_label(run.dataset)}, "
        f"{run.clients} clients, {run.rounds_done} rounds: mean α on itself {own:.3f}, "
        f"on class-sharing clients {share:.3f}, on the others {none:.3f}",
        fontsize=9,
    )
    return save_figure(fig, static / f"alpha_{run.path.parent.name}_{PLOTTED_LAYER}.png")  # one per run


ALPHA = Section(
    select=reporting_alpha,
    caption=(
        "pFedLA's learned aggregation weights at the last evaluation (mean α per client pair; "
        "HeurpFedLA: as its hypernetworks give them, though a client's K local layers use its own copy):"
    ),
    table=alpha_table,
    plot=plot_alpha,
)
