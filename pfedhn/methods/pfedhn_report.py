"""pFedHN's sections of the results tables: clients with targets of different sizes (paper
Sec. 5.2, ``method.sizes``: the run's client groups ``k<n_kernels>``) beside the one-size run of
the same split, and novel clients (paper Sec. 5.3, ``method.novel``: the groups ``seen`` and
``novel``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pfedhn.provenance import versions_label
from pfedhn.report import Label, Run, Section, dataset_label, finish_round_axes, largest_budget, save_figure
from pfedhn.results import SplitMetrics, evaluation_at


def novel_lr(cfg: Mapping[str, Any]) -> float:
    """The novel phase's embedding rate of a config (composed or saved): ``method.novel.lr``,
    else the hypernetwork's embedding rate (``method.server.embed_lr``, else ``method.server.lr``)."""
    server = cfg["method"]["server"]
    rate = cfg["method"]["novel"].get("lr")
    return rate if rate is not None else (server["embed_lr"] if server.get("embed_lr") is not None else server["lr"])


# ------------------------------------------------------------------ target sizes


def sized(found: list[Run], tabled: list[Run]) -> list[Run]:
    """The runs of the accuracy tables whose clients have targets of several sizes."""
    return [r for r in tabled if r.result["config"]["method"].get("sizes")]


def single_size_twin(run: Run, runs: list[Run]) -> Run | None:
    """The one-size run on the same split as multi-size ``run``: its method without sizes, its
    dataset, clients and seed (so the same partition); None without one."""
    name = run.result["config"]["method"]["name"]
    twins = [
        r
        for r in runs
        if (r.result["config"]["method"]["name"], r.dataset, r.clients, r.seed)
        == (name, run.dataset, run.clients, run.seed)
        and not r.result["config"]["method"].get("sizes")
    ]
    return largest_budget(twins)[0] if twins else None


def group_test_accuracy(evaluation: dict[str, Any], clients: list[int], counts: list[int]) -> float:
    """Pooled test accuracy of ``clients`` in one evaluation of a ``results.json``, each client
    weighted by ``counts`` (its test-set size: runs from before sizes were recorded lack them)."""
    test = evaluation["test"]
    return SplitMetrics(test["loss"], test["accuracy"], test["client_accuracy"], counts).pooled_accuracy(clients)


def client_test_sizes(run: Run, twin: Run | None) -> list[int]:
    """Each client's test-set size, from multi-size ``run``'s last evaluation; refused if its
    one-size ``twin`` recorded other sizes (then the two are not the same split)."""
    counts = run.result["history"][-1]["test"]["client_count"]
    theirs = twin.result["history"][-1]["test"].get("client_count", counts) if twin else counts
    if theirs != counts:
        raise ValueError(f"{run.path} and {twin.path} have other client test sets: not the same split")
    return counts


def twin_kernels(twin: Run) -> int:
    """The one target size of a one-size run."""
    return twin.result["config"]["model"]["n_kernels"]


def sizes_table(runs: list[Run], tabled: list[Run], label: Label) -> str:
    """Per multi-size run: each size group's pooled test accuracy at the run's best-validation
    round, beside the same clients' in its one-size twin (at the twin's best round) where there is one."""
    lines = [
        "| method | dataset, clients | rounds | size (n_kernels) | clients | test accuracy "
        "| the same clients, one-size run |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        twin = single_size_twin(run, tabled)
        counts = client_test_sizes(run, twin)
        best = evaluation_at(run.result, run.result["best_val_round"])
        twin_best = evaluation_at(twin.result, twin.result["best_val_round"]) if twin else None
        for name, group in run.result["groups"].items():
            clients = group["clients"]
            accuracy = 100 * group_test_accuracy(best, clients, counts)
            beside = "–"
            if twin is not None:
                accuracy_there = 100 * group_test_accuracy(twin_best, clients, counts)
                beside = f"{accuracy_there:.2f} (n_kernels {twin_kernels(twin)}, {twin.rounds_done} rounds)"
            lines.append(
                f"| {label(run.method)} | {dataset_label(run.dataset)}, "
                f"{run.clients} | {run.rounds_done} | {name.lstrip('k')} | {len(clients)} | {accuracy:.2f} "
                f"| {beside} |"
            )
    return "\n".join(lines)


def plot_sizes(run: Run, tabled: list[Run], label: Label, static: Path) -> Path:
    """Each size group's pooled test accuracy vs round (solid), and the same clients in the
    one-size run of the same split (dashed, same colour) where there is one."""
    import matplotlib.pyplot as plt

    twin = single_size_twin(run, tabled)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    counts = client_test_sizes(run, twin)
    own, theirs = run.result["history"], twin.result["history"] if twin else []
    own_rounds, their_rounds = [e["round"] for e in own], [e["round"] for e in theirs]
    for i, (name, group) in enumerate(run.result["groups"].items()):
        colour, clients = f"C{i}", group["clients"]
        accuracy = [100 * group_test_accuracy(e, clients, counts) for e in own]
        ax.plot(own_rounds, accuracy, color=colour, label=f"n_kernels {name.lstrip('k')} ({len(clients)} clients)")
        if twin is not None:
            ax.plot(
                their_rounds,
                [100 * group_test_accuracy(e, clients, counts) for e in theirs],
                color=colour,
                linestyle="--",
                label=f"same clients, all at n_kernels {twin_kernels(twin)}",
            )
    title = f"{label(run.method)}, {dataset_label(run.dataset)}, {run.clients} clients, seed {run.seed}"
    finish_round_axes(ax, title, legend_columns=len(run.result["groups"]))  # a column per group
    return save_figure(fig, static / f"sizes_{run.path.parent.name}.png")  # one per run


SIZES = Section(
    select=sized,
    caption=(
        "Clients with targets of different sizes (paper Sec. 5.2): test accuracy (%) of each size's "
        "clients at the run's best validation round, beside the same clients in the one-size run of the "
        "same split (same seed; test-set sizes from the multi-size run)."
    ),
    table=sizes_table,
    plot=plot_sizes,
)


# ------------------------------------------------------------------ novel clients


def with_novel_accuracy(found: list[Run], tabled: list[Run]) -> list[Run]:
    """Every run whose novel phase has been evaluated (a seen phase alone, ``method.novel.rounds=0``,
    has no novel accuracy yet)."""
    return [r for r in found if "test_accuracy" in r.result.get("groups", {}).get("novel", {})]


def novel_table(runs: list[Run], tabled: list[Run], label: Label) -> str:
    """Seen vs novel clients' test accuracy (each at its group's best validation)."""
    lines = [
        "| method | dataset, clients (novel) | rounds (+ novel rounds) | novel-phase embedding lr | seen clients "
        "| novel clients | gap | versions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        cfg, groups = run.result["config"], run.result["groups"]
        seen, novel = 100 * groups["seen"]["test_accuracy"], 100 * groups["novel"]["test_accuracy"]
        phase = cfg["method"]["novel"]
        lines.append(
            f"| {label(run.method)} | {dataset_label(run.dataset)}, "
            f"{run.clients} ({phase['clients']}) | {cfg['num_rounds']} (+ {phase['rounds']}) | "
            f"{novel_lr(cfg):g} | {seen:.2f} | {novel:.2f} | {seen - novel:.2f} | "
            f"{versions_label(run.result.get('provenance', []))} |"
        )
    return "\n".join(lines)


def plot_novel(run: Run, tabled: list[Run], label: Label, static: Path) -> Path:
    """Pooled test accuracy of the seen and the novel clients vs round."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in ("seen", "novel"):
        group = run.result["groups"][name]
        rounds = [e["round"] for e in group["history"]]
        ax.plot(rounds, [100 * e["test"] for e in group["history"]], label=f"{name} clients ({len(group['clients'])})")
    ax.axvline(
        run.result["groups"]["novel"]["rounds"][0] - 0.5, color="grey", linestyle=":", label="hypernetwork frozen"
    )
    title = f"{dataset_label(run.dataset)}, {run.clients} clients: novel vs seen clients"
    finish_round_axes(ax, f"{title} (novel-phase lr {novel_lr(run.result['config']):g})", legend_columns=3)
    return save_figure(fig, static / f"novel_{run.path.parent.name}.png")  # one per run: runs differ in their phases


NOVEL = Section(
    select=with_novel_accuracy,
    caption="Novel clients (paper Sec. 5.3): test accuracy (%) of each group at its best validation.",
    table=novel_table,
    plot=plot_novel,
)
