"""Turn run directories into the paper-style table and plots.

    python -m pfedhn.summarize results/runs [more dirs ...]

Finds every ``results.json`` under the given directories, groups runs by
(method, dataset, clients), and writes ``results/table.md`` (mean ± std of the
test accuracy at the best-validation round over seeds, with each cell's scale)
and, in ``_static/``, per (dataset, clients): accuracy vs local steps or client-rounds (mean ± band over
seeds, validation dashed, test solid) and the per-client test accuracy at the
best round. After the shared tables come the methods' own sections (``TableRows.sections``:
their tables here, their plots in ``_static/``).
"""

from __future__ import annotations

import argparse
import functools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from pfedhn.methods import paper_values, row_key, row_place, sections, table_settings, unread_keys  # noqa: E402
from pfedhn.migration import migrate  # noqa: E402
from pfedhn.provenance import versions_label  # noqa: E402
from pfedhn.report import (  # noqa: E402
    DATASET_LABELS,
    Run,
    dataset_label,
    largest_budget,
    save_figure,
    seeds_label,
    steps_per_round,
)
from pfedhn.results import evaluation_at  # noqa: E402
from pfedhn.utils import flatten  # noqa: E402

DATASET_CONF = Path(__file__).resolve().parent.parent / "conf" / "dataset"  # one <name>.yaml per dataset
FALL_SHOWN = 10.0  # points: a cell whose runs end this far below the reported accuracy shows their end


def find_runs(dirs: list[Path]) -> list[Run]:
    runs = []
    for directory in dirs:
        for path in sorted(directory.rglob("results.json")):
            result = json.loads(path.read_text())
            cfg = result["config"] = migrate(result["config"])
            runs.append(Run(path, row_key(cfg), dataset_key(cfg["dataset"]), cfg["num_clients"], cfg["seed"], result))
    return runs


def tabled(found: list[Run]) -> list[Run]:
    """The runs of the accuracy table: all but those with a novel-client phase (their own table)."""
    return [r for r in found if "novel" not in r.result.get("groups", {})]


def dataset_key(dataset: dict[str, Any]) -> str:
    """A run's table column: its dataset, split apart when its clients hold another number of
    classes than the dataset's default (pFedLA's presets: 4 on CIFAR-10), e.g. ``cifar10_c4``."""
    name, classes = dataset["name"], dataset.get("classes_per_client")
    return name if classes in (None, default_classes(name)) else f"{name}_c{classes}"


@functools.cache
def default_classes(name: str) -> int | None:
    """``dataset.classes_per_client`` of ``conf/dataset/<name>.yaml`` (None without one)."""
    path = DATASET_CONF / f"{name}.yaml"
    return OmegaConf.load(path).dataset.classes_per_client if path.is_file() else None


def _dataset_order(key: str) -> tuple[int, str]:
    name = key.partition("_c")[0]
    return (list(DATASET_LABELS).index(name) if name in DATASET_LABELS else 99, key)


def method_label(key: str) -> str:
    """A row key's label, as its method declares it."""
    return row_place(key)[1]


def cell_text(runs: list[Run]) -> str:
    """``mean ± std`` in percent, then the scale: rounds (planned), seeds, and whether finished;
    and the last evaluation's mean test accuracy when it is more than ``FALL_SHOWN`` points below
    the reported one (a run that collapsed after its best-validation round)."""
    accs = 100 * np.array([r.result["test_accuracy"] for r in runs])
    value = f"{accs.mean():.2f} ± {accs.std():.2f}" if len(accs) > 1 else f"{accs[0]:.2f}"
    return f"{value} ({_scale(runs)}, {seeds_label(len(runs))}{_fall(runs, accs.mean())})"


def _fall(runs: list[Run], reported: float) -> str:
    """``; last round <mean>`` when the runs' last test accuracy fell past ``FALL_SHOWN``, else ""."""
    finals = [r.result.get("final_test_accuracy") for r in runs]
    if None in finals:  # runs that do not record it
        return ""
    last = 100 * float(np.mean(finals))
    return f"; last round {last:.2f}" if reported - last > FALL_SHOWN else ""


def _scale(runs: list[Run]) -> str:
    """Rounds done (of planned, when unfinished) and the budget in steps or client-epochs."""
    planned = {r.result["config"]["num_rounds"] for r in runs}
    done = {r.rounds_done for r in runs}
    scale = f"{max(done)} rounds" if done == planned else f"{max(done)} of {max(planned)} rounds, unfinished"
    steps = {steps_per_round(r) for r in runs}
    epochs = {epochs_per_round(r) for r in runs}
    if len(steps) == 1 and None not in steps:  # the budget in local steps, comparable across methods
        scale += f", {_thousands(max(done) * steps.pop())} steps"
    elif len(epochs) == 1 and None not in epochs:  # or in epochs over clients' data (pFedLA's setting)
        scale += f", {_thousands(max(done) * epochs.pop())} client-epochs"
    return scale


def _thousands(steps: int) -> str:
    return f"{steps / 1000:g}k" if steps >= 1000 else str(steps)


def by_cell(runs: list[Run]) -> dict[tuple[str, str, int], list[Run]]:
    """(row key, dataset column, clients) → that cell's runs."""
    cells: dict[tuple[str, str, int], list[Run]] = defaultdict(list)
    for run in runs:
        cells[(run.method, run.dataset, run.clients)].append(run)
    return cells


def accuracy_tables(runs: list[Run]) -> tuple[str, str]:
    """(the table of the runs on their dataset's default split, that of the runs whose clients hold
    another number of classes: pFedLA's setting); "" where there are no such runs. Such a run's
    column (``dataset_key``) is not its dataset's name."""
    split: dict[bool, list[Run]] = {False: [], True: []}
    for run in runs:
        split[run.dataset != run.result["config"]["dataset"]["name"]].append(run)
    shared, own = split[False], split[True]
    return (table(shared) if shared else "", table(own) if own else "")


def table(runs: list[Run]) -> str:
    """One row per method, one column per (split, clients), a cell per ``cell_text``."""
    cells = by_cell(runs)
    columns = sorted({(d, n) for _, d, n in cells}, key=lambda c: (_dataset_order(c[0]), c[1]))
    methods = sorted({m for m, _, _ in cells}, key=_row_order)
    header = "| method | " + " | ".join(f"{dataset_label(d)}, {n} clients" for d, n in columns) + " |"
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    for method in methods:
        row = [cell_text(largest_budget(cells[(method, d, n)])) if (method, d, n) in cells else "–" for d, n in columns]
        lines.append(f"| {method_label(method)} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def paper_table(runs: list[Run]) -> str:
    """Each published value (``methods.paper_values``) beside our cell: the mean ± std over seeds
    of its row (of several rows, the one with the best mean: a listing that does not say which),
    our mean minus the value, and whether that is within one point."""
    cells = by_cell(runs)
    lines = [
        "| cell | published | source | ours: row | ours | ours − published | within 1 point |",
        "|---|---|---|---|---|---|---|",
    ]
    for paper in paper_values():
        cell = f"{dataset_label(paper.dataset)}, {paper.clients} clients"
        published = f"{paper.value:.2f}" + ("" if paper.std is None else f" ± {paper.std:.2f}") + f" | {paper.source}"
        shown = {
            row: largest_budget(cells[(row, paper.dataset, paper.clients)])
            for row in paper.rows
            if (row, paper.dataset, paper.clients) in cells
        }
        if not shown:
            lines.append(f"| {cell} | {published} | – | no run | – | – |")
            continue
        means = {row: 100 * float(np.mean([r.result["test_accuracy"] for r in found])) for row, found in shown.items()}
        best = max(means, key=lambda row: means[row])
        row = method_label(best)
        if len(shown) > 1:
            row += f" (the better of {' / '.join(method_label(r) for r in shown)})"
        row += "".join(f" ({method_label(r)} not run)" for r in paper.rows if r not in shown)
        ours = "; ".join(  # every compared row, the better first: their seeds may differ
            f"{method_label(r)} {cell_text(shown[r])}" if len(shown) > 1 else cell_text(shown[r])
            for r in sorted(shown, key=lambda r: -means[r])
        )
        difference = round(means[best] - paper.value, 2)
        within = "yes" if abs(difference) <= 1 else "no"
        lines.append(f"| {cell} | {published} | {row} | {ours} | {difference:+.2f} | {within} |")
    return "\n".join(lines)


def settings_table(runs: list[Run]) -> str:
    """The budget and hyperparameters behind each row and column: rounds × clients per round ×
    local steps, the client optimizer ("–" for a value its method does not read), and the
    method's own keys (as each run's config has them)."""
    lines = [
        "| method | dataset, clients | rounds × clients/round × local steps = total "
        "| batch, client SGD (lr, momentum, wd) | eval every | method settings |",
        "|---|---|---|---|---|---|",
    ]
    seen = set()
    for run in sorted(runs, key=lambda r: (_row_order(r.method), _dataset_order(r.dataset), r.clients)):
        cfg = run.result["config"]
        client = cfg.get("client", {})
        steps = client.get("inner_steps")
        work = f"{client['epochs']} epochs" if client.get("epochs") else f"{steps}"
        per_round = steps_per_round(run)
        total = "" if per_round is None else f" = {cfg['num_rounds'] * per_round:,}"
        own = table_settings(cfg)
        own_text = ", ".join(f"{key}={value}" for key, value in flatten(own).items()) or "–"
        unread = unread_keys(cfg)
        lr, momentum, wd = (
            "–" if f"client.{k}" in unread else client.get(k) for k in ("lr", "momentum", "weight_decay")
        )
        line = (
            f"| {method_label(run.method)} | {dataset_label(run.dataset)}, {run.clients} "
            f"| {cfg['num_rounds']} × {cfg.get('clients_per_round', 1)} × {work}{total} "
            f"| {client.get('batch_size')}, ({lr}, {momentum}, {wd}) | {cfg.get('eval_every')} | {own_text} |"
        )
        if line not in seen:  # seeds of one cell share their settings
            seen.add(line)
            lines.append(line)
    return "\n".join(lines)


def _row_order(method: str) -> tuple[tuple[int, int], str]:
    """Sort key of a row: its method's place in the registry, the row's among the method's, its key."""
    return row_place(method)[0], method


def provenance_table(runs: list[Run]) -> str:
    """What produced each run behind the table: library versions, commit(s), wall time."""
    lines = [
        "| method | dataset, clients | seed | rounds | versions | commit | wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    order = sorted(runs, key=lambda r: (r.method, _dataset_order(r.dataset), r.clients, r.seed))
    for run in order:
        records = run.result.get("provenance", [])
        commits = "+".join(
            f"{(r.get('commit') or 'no git')[:7]}{' (dirty)' if r.get('dirty') else ''}" for r in records
        )
        recorded = "" if all(r.get("recorded", True) for r in records) else " (not recorded by the run)"
        wall = run.result.get("wall_time_s")
        lines.append(
            f"| {method_label(run.method)} | {dataset_label(run.dataset)}, "
            f"{run.clients} | {run.seed} | {run.rounds_done} | {versions_label(records)}{recorded} | "
            f"{commits or '–'} | {'–' if wall is None else f'{wall / 60:.0f} min'} |"
        )
    return "\n".join(lines)


def epochs_per_round(run: Run) -> int | None:
    """Local epochs of all clients in one round (clients per round × epochs each), or None when
    the run counts local work in steps: 100 rounds of 10 clients and 1000 rounds of one client,
    10 epochs each, are the same 10,000 client-epochs."""
    cfg = run.result["config"]
    epochs = cfg.get("client", {}).get("epochs")
    return None if epochs is None else cfg.get("clients_per_round", 1) * epochs


def accuracy_at_shared_rounds(runs: list[Run], split: str) -> tuple[np.ndarray, np.ndarray]:
    """(rounds every run evaluated, (runs, rounds) pooled ``split`` accuracy in % there):
    seeds are matched by round, so a run with an evaluation more or less shifts nothing."""
    by_round = [{e["round"]: e[split]["accuracy"] for e in r.result["history"]} for r in runs]
    rounds = np.array(sorted(set.intersection(*(set(accuracy) for accuracy in by_round))))
    return rounds, np.array([[accuracy[t] for t in rounds] for accuracy in by_round]) * 100


def _band(ax: plt.Axes, runs: list[Run], split: str, style: str, label: str, color: str, per_round: int) -> None:
    """Mean (± std over runs) pooled ``split`` accuracy against rounds × ``per_round``."""
    rounds, values = accuracy_at_shared_rounds(runs, split)
    mean = values.mean(0)
    ax.plot(rounds * per_round, mean, style, color=color, label=label, linewidth=1.2)
    if len(runs) > 1:
        ax.fill_between(rounds * per_round, mean - values.std(0), mean + values.std(0), color=color, alpha=0.2)


def curve_axis(by_method: dict[str, list[Run]]) -> tuple[dict[str, int], str]:
    """(method → x units a round, x label) of a cell's curves: total local steps where every run
    counts steps and a method's runs agree on them, else client-rounds (rounds × clients a round),
    on which pFedLA's setting gives every row the same span (100 rounds of 10 clients and
    pFedHN's 1000 rounds of one both end at 1000). Raises ValueError where a method's runs
    differ in clients a round: their curves would share no x."""
    steps = {m: {steps_per_round(r) for r in runs} for m, runs in by_method.items()}
    if all(None not in counts and len(counts) == 1 for counts in steps.values()):
        return {m: counts.pop() for m, counts in steps.items()}, "local SGD steps, all clients"
    clients = {m: {r.result["config"].get("clients_per_round", 1) for r in runs} for m, runs in by_method.items()}
    disagreeing = sorted(m for m, counts in clients.items() if len(counts) > 1)
    if disagreeing:
        raise ValueError(f"runs of {disagreeing} differ in clients_per_round: their curves share no x axis")
    return {m: counts.pop() for m, counts in clients.items()}, "client-rounds (rounds × clients a round)"


def method_colors(methods: set[str]) -> dict[str, tuple[float, ...]]:
    """Row key → its RGBA colour, by its place among ``methods`` in table order (tab20, the ten dark
    shades first): computed once over every row summarized, so a row has one colour in every plot."""
    order = sorted(methods, key=_row_order)
    return {m: plt.get_cmap("tab20")((2 * i) % 20 + (2 * i) // 20 % 2) for i, m in enumerate(order)}


def plot_cell(
    dataset: str, clients: int, by_method: dict[str, list[Run]], colors: dict[str, tuple[float, ...]], static: Path
) -> list[Path]:
    """Accuracy curves (against ``curve_axis``) and per-client accuracy of one (dataset, clients) cell,
    each row drawn in its colour from ``method_colors``."""
    name = f"{dataset}_{clients}"
    order = sorted(by_method, key=_row_order)
    title = f"{dataset_label(dataset)}, {clients} clients"
    per_round, xlabel = curve_axis(by_method)

    fig, (ax, top) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [3, 2]})
    for axis in (ax, top):
        for method in order:
            runs = by_method[method]
            label = method_label(method)
            _band(axis, runs, "test", "-", f"{label} ({seeds_label(len(runs))})", colors[method], per_round[method])
            _band(axis, runs, "val", "--", "_nolegend_", colors[method], per_round[method])
        axis.set(xlabel=xlabel)
        axis.grid(alpha=0.3)
    ax.set(ylabel="pooled accuracy (%)", title=f"{title}: test (solid), validation (dashed)")
    ax.set_ylim(bottom=max(0, ax.get_ylim()[0]))
    shown = [run for runs in by_method.values() for run in runs]
    highest_best = max(100 * run.result["test_accuracy"] for run in shown)
    highest = max(
        100 * e[split]["accuracy"] for run in shown for e in run.result["history"] for split in ("val", "test")
    )
    top.set_ylim(max(0, highest_best - 5), min(100, highest + 0.3))
    top.set_title("within 5 points of the best", fontsize=10)
    top.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    curve = save_figure(fig, static / f"curve_{name}.png")

    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.6 * len(order)))
    data, labels = [], []
    for method in order:
        runs, at_best = by_method[method], []
        for run in runs:
            at_best += evaluation_at(run.result, run.result["best_val_round"])["test"]["client_accuracy"]
        data.append(100 * np.array(at_best))
        labels.append(f"{method_label(method)}\n({len(at_best) // len(runs)} clients, {seeds_label(len(runs))})")
    ax.boxplot(data, orientation="horizontal", tick_labels=labels)
    for i, (method, values) in enumerate(zip(order, data), 1):
        jitter = np.random.default_rng(i).uniform(-0.15, 0.15, len(values))
        ax.scatter(values, np.full(len(values), i) + jitter, s=8, alpha=0.5, color=colors[method])
    ax.set(xlabel="client test accuracy at the best-validation round (%)", title=f"{title}: per-client accuracy")
    ax.grid(alpha=0.3, axis="x")
    return [curve, save_figure(fig, static / f"clients_{name}.png")]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="directories searched for results.json")
    parser.add_argument("--table", type=Path, default=Path("results/table.md"))
    parser.add_argument("--static", type=Path, default=Path("_static"))
    args = parser.parse_args(argv)
    found = find_runs(args.dirs)
    if not found:
        parser.error(f"no results.json under {', '.join(map(str, args.dirs))}")
    runs = tabled(found)
    own_sections = [(section, section.select(found, runs)) for section in sections()]
    text, own_splits = accuracy_tables(runs)
    if own_splits:
        text += "\n\n" if text else ""
        text += "On splits whose clients hold another number of classes than their dataset's default "
        text += "(the `+experiment=` presets in conf/experiment):\n\n" + own_splits
    if runs:
        text += "\n\nAgainst published values (a cell of one seed is no verdict: with 10 clients the classes a "
        text += "seed draws move a run by points):\n\n" + paper_table(runs)
        text += "\n\nBudget and hyperparameters of every cell (from each run's config):\n\n" + settings_table(runs)
        text += "\n\nWhat produced each run (`provenance` in its results.json):\n\n" + provenance_table(runs)
    for section, selected in own_sections:
        if selected:
            text += ("\n\n" if text else "") + section.caption + "\n\n" + section.table(selected, runs, method_label)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(
        "Test accuracy (%) at the best-validation round, mean ± std over seeds "
        "(population std) (`python -m pfedhn.summarize`).\n\n" + text + "\n"
    )
    args.static.mkdir(parents=True, exist_ok=True)
    grouped: dict[tuple[str, int], dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        grouped[(run.dataset, run.clients)][run.method].append(run)
    colors = method_colors({run.method for run in runs})
    for (dataset, clients), by_method in sorted(grouped.items()):
        by_method = {method: largest_budget(cell) for method, cell in by_method.items()}
        for path in plot_cell(dataset, clients, by_method, colors, args.static):
            print(f"wrote {path}")
    for section, selected in own_sections:
        for run in selected:
            print(f"wrote {section.plot(run, runs, method_label, args.static)}")
    print(text)
    return text


if __name__ == "__main__":
    try:
        main()
    except ValueError as error:  # runs that cannot be tabled as given: one line, not a traceback
        raise SystemExit(f"summarize: {error}") from None
