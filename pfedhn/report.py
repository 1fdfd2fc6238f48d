"""What results tables read off runs, shared by the summarizer and the methods' own report sections.

A ``Run`` is one ``results.json`` as ``pfedhn.summarize`` found it. The summarizer makes the
accuracy tables and cell plots every method shares; a method whose runs record more (its own
``method_report``, client groups) adds ``Section``s of its own (``TableRows.sections``), built
from the pieces here. matplotlib is imported by the functions that draw, not by this module:
methods import their sections, and a client process never draws.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

DATASET_LABELS = {"mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}

Label = Callable[[str], str]  # a row key → its label in tables (``pfedhn.methods.row_place``)


@dataclass(frozen=True)
class Run:
    """One run: its ``results.json`` (``result``, config migrated), its table row (``method``, a
    row key), its table column (``dataset``, a dataset key), client count and seed."""

    path: Path
    method: str
    dataset: str
    clients: int
    seed: int
    result: dict[str, Any]

    @property
    def rounds_done(self) -> int:
        return self.result["history"][-1]["round"] if self.result["history"] else 0


@dataclass(frozen=True)
class Section:
    """A part of ``results/table.md`` (and figures in ``_static/``) a method adds after the
    accuracy tables, for what its runs record beyond accuracy.

    ``select(found, tabled)``: the runs it reports, from every run summarized (``found``) or
    those of the accuracy tables (``tabled``); it is left out where it selects none.
    ``caption``: the paragraph above its table. ``table(selected, tabled, label)``: its markdown
    table. ``plot(run, tabled, label, static)``: one selected run's figure, written under
    ``static``; returns its path. ``tabled`` lets a section find a run's twin (the same split
    run otherwise); ``label`` names rows as tables do.
    """

    select: Callable[[list[Run], list[Run]], list[Run]]
    caption: str
    table: Callable[[list[Run], list[Run], Label], str]
    plot: Callable[[Run, list[Run], Label, Path], Path]


def dataset_label(key: str) -> str:
    """A dataset key's label: ``cifar10_c4`` → "CIFAR-10 (4 classes per client)"."""
    name, _, classes = key.partition("_c")
    label = DATASET_LABELS.get(name, name)
    return f"{label} ({classes} classes per client)" if classes else label


def seeds_label(n: int) -> str:
    return f"{n} seed{'s' if n > 1 else ''}"


def steps_per_round(run: Run) -> int | None:
    """Local steps of all clients in one round (clients per round × steps each), or None when
    the run counts local work in epochs (its steps depend on each client's data size)."""
    cfg = run.result["config"]
    client = cfg.get("client", {})
    if client.get("epochs") is not None or "inner_steps" not in client:
        return None
    return cfg.get("clients_per_round", 1) * client["inner_steps"]


def largest_budget(runs: list[Run]) -> list[Run]:
    """The runs of one cell that the table and plots show: finished ones first, then those with
    the most planned local steps (or rounds, where steps are not counted), then rounds; seeds
    are pooled only at one scale (the others stay in the settings table)."""

    def scale(run: Run) -> tuple[bool, int, int]:
        rounds = run.result["config"]["num_rounds"]
        return bool(run.result.get("finished", True)), rounds * (steps_per_round(run) or 1), rounds

    top = max(scale(r) for r in runs)
    shown = [r for r in runs if scale(r) == top]
    seeds: dict[int, Path] = {}
    for run in shown:  # pooling a seed twice would count one run as two seeds
        if run.seed in seeds:
            raise ValueError(
                f"{seeds[run.seed]} and {run.path} are one table cell at one scale with the same seed "
                f"({run.seed}); keep one of them out of the directories summarized"
            )
        seeds[run.seed] = run.path
    return shown


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write ``fig`` (tight layout, 120 dpi) to ``path``, close it, return ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def finish_round_axes(ax: plt.Axes, title: str, legend_columns: int) -> None:
    """Axis labels, title, grid and a legend below the axes of a pooled-test-accuracy-vs-round plot."""
    ax.set(xlabel="round", ylabel="pooled test accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=legend_columns)


def shared_classes(run: Run) -> np.ndarray:
    """(clients, clients): how many training classes two clients of ``run`` have in common."""
    classes = [set(c) for c in run.result["client_classes"]]
    return np.array([[len(a & b) for b in classes] for a in classes])


def pair_weight_means(weights: np.ndarray, run: Run) -> tuple[float, float, float]:
    """Of a (clients, clients) matrix of aggregation weights (row i: client i's weights on every
    client): the mean weight of a client on itself, on the other clients that share a training
    class with it, and on those that share none."""
    shared = shared_classes(run) > 0
    others = ~np.eye(len(weights), dtype=bool)
    return float(weights.diagonal().mean()), float(weights[shared & others].mean()), float(weights[~shared].mean())


def plot_pair_weights(run: Run, weights: np.ndarray, symbol: str, title: str, label: Label, path: Path) -> Path:
    """A (clients, clients) weight matrix ``symbol`` (row i: client i's weights; ``title`` above
    it) beside the shared-class counts, with ``pair_weight_means`` in the figure's title."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    shown = axes[0].imshow(weights, cmap="viridis")
    fig.colorbar(shown, ax=axes[0], fraction=0.046)
    axes[0].set(xlabel="client j (aggregated)", ylabel="client i (receiving)", title=title)
    shared = shared_classes(run)
    counts = axes[1].imshow(shared, cmap="Greys")
    fig.colorbar(counts, ax=axes[1], fraction=0.046, ticks=range(int(shared.max()) + 1))
    axes[1].set(xlabel="client j", ylabel="client i", title="training classes in common")
    own, share, none = pair_weight_means(weights, run)
    fig.suptitle(
        f"{label(run.method)}, {dataset_label(run.dataset)}, "
        f"{run.clients} clients, {run.rounds_done} rounds: mean {symbol} on itself {own:.3f}, "
        f"on class-sharing clients {share:.3f}, on the others {none:.3f}",
        fontsize=9,
    )
    return save_figure(fig, path)


def pair_weights_section(
    key: str, symbol: str, title: str, caption: str, columns: tuple[tuple[str, Callable[[Run], str]], ...] = ()
) -> Section:
    """The section of a method whose runs report one (clients, clients) weight matrix,
    ``method_report[key]`` (row i: client i's weights on every client): a table row a run with
    ``columns`` (header, a run's value) and ``pair_weight_means``, and a figure a run,
    ``<key>_<run dir>.png`` (``plot_pair_weights``, ``title`` above the matrix)."""

    def select(found: list[Run], tabled: list[Run]) -> list[Run]:
        return [r for r in tabled if r.result.get("method_report", {}).get(key)]

    def table(runs: list[Run], tabled: list[Run], label: Label) -> str:
        headers = ["method", "dataset, clients", "rounds", *(h for h, _ in columns)]
        headers += [f"{symbol} on itself", f"{symbol} on clients sharing a class", f"{symbol} on the others"]
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        for run in runs:
            means = pair_weight_means(np.array(run.result["method_report"][key]), run)
            cells = [label(run.method), f"{dataset_label(run.dataset)}, {run.clients}", str(run.rounds_done)]
            cells += [value(run) for _, value in columns] + [f"{m:.3f}" for m in means]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def plot(run: Run, tabled: list[Run], label: Label, static: Path) -> Path:
        weights = np.array(run.result["method_report"][key])
        return plot_pair_weights(run, weights, symbol, title, label, static / f"{key}_{run.path.parent.name}.png")

    return Section(select=select, caption=caption, table=table, plot=plot)
