"""Land finished queue runs in ``results/``: copy each ``results.json``, print what the docs cite.

    python docs/scripts/land_run.py /work/grid-runs/cifar100_n50_pfedhn_pc_s2 [more run dirs] \\
        [--to results/runs] [--against results/runs/<a row of the same split> ...]

Copies ``<run dir>/results.json`` to ``<to>/<run dir's name>/results.json``. Refuses a run that has
not finished and one that landed before with other contents (a run that was chosen against goes
to ``results/variants`` by hand). Prints per run: the best-validation round, validation and test
accuracy there, the last evaluation's test accuracy, the clients' test range at the best round, the
deepest fall of test accuracy below its best so far (a collapse shows there), wall time, and the
commits it ran at (round → commit); then each touched cell's mean ± population std over seeds,
from every run under ``--to``, grouped as ``python -m pfedhn.summarize`` groups them. Afterwards:
``python -m pfedhn.summarize results/runs && python docs/scripts/readme_tables.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pfedhn.results import evaluation_at
from pfedhn.summarize import by_cell, find_runs


def deepest_fall(history: list[dict[str, Any]]) -> tuple[float, int]:
    """(points, round): the largest drop of test accuracy (%) below its running maximum."""
    best, fall, at = 0.0, 0.0, history[0]["round"]
    for evaluation in history:
        accuracy = 100 * evaluation["test"]["accuracy"]
        best = max(best, accuracy)
        if best - accuracy > fall:
            fall, at = best - accuracy, evaluation["round"]
    return fall, at


def describe(name: str, result: dict[str, Any]) -> str:
    """One line of what the docs cite of a landed run."""
    best_round = result["best_val_round"]
    clients = client_accuracy(result)
    fall, fall_round = deepest_fall(result["history"])
    commits = ", ".join(f"{p['from_round']} → {p['commit'][:7]}" for p in result["provenance"])
    last_test = 100 * result["history"][-1]["test"]["accuracy"]
    return (
        f"{name}: best validation {100 * result['best_val_accuracy']:.2f} at round {best_round}, "
        f"test there {100 * result['test_accuracy']:.2f}, last test {last_test:.2f}; "
        f"clients {clients.min():.1f}–{clients.max():.1f}; deepest fall {fall:.2f} points (round {fall_round}); "
        f"wall {result['wall_time_s'] / 60:.1f} min; commits {commits}"
    )


def client_accuracy(result: dict[str, Any]) -> np.ndarray:
    """(clients,): each client's test accuracy (%) at the run's best-validation round."""
    return 100 * np.array(evaluation_at(result, result["best_val_round"])["test"]["client_accuracy"])


def clients_against(result: dict[str, Any], other: dict[str, Any], other_name: str) -> str:
    """"clients above / below <other_name>: a / b", comparing client by client at each run's
    best-validation round. Raises ValueError if the two runs' clients hold other classes."""
    if result.get("client_classes") != other.get("client_classes"):
        raise ValueError(f"{other_name} split its clients otherwise")
    ours, theirs = client_accuracy(result), client_accuracy(other)
    return f"clients above / below {other_name}: {int((ours > theirs).sum())} / {int((ours < theirs).sum())}"


def landable(run_dir: Path, to: Path) -> dict[str, Any]:
    """A finished run's ``results.json`` contents. Raises ValueError for an unfinished run or one
    landed under ``to`` before with other contents."""
    source = run_dir / "results.json"
    result = json.loads(source.read_text())
    if not result["finished"]:
        raise ValueError(f"{run_dir} has not finished (round {result['history'][-1]['round']})")
    target = to / run_dir.name / "results.json"
    if target.exists() and target.read_bytes() != source.read_bytes():
        raise ValueError(f"{target} exists with other contents")
    return result


def cell_lines(to: Path, landed: list[Path]) -> list[str]:
    """Each landed run's cell: its runs' seeds and test mean ± population std, in percent."""
    runs, touched = find_runs([to]), {d.name for d in landed}
    lines = []
    for (method, dataset, clients), cell in sorted(by_cell(runs).items()):
        if touched & {r.path.parent.name for r in cell}:
            accuracy = 100 * np.array([r.result["test_accuracy"] for r in cell])
            seeds = ", ".join(str(r.seed) for r in cell)
            lines.append(
                f"{method}, {dataset}, {clients} clients: {accuracy.mean():.2f} ± {accuracy.std():.2f} "
                f"over seeds {seeds} ({', '.join(f'{a:.2f}' for a in accuracy)})"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--to", type=Path, default=Path("results/runs"))
    parser.add_argument("--against", nargs="+", type=Path, default=[], help="run dirs to compare clients with")
    args = parser.parse_args(argv)
    others = {d.name: json.loads((d / "results.json").read_text()) for d in args.against}
    try:
        results = {run_dir: landable(run_dir, args.to) for run_dir in args.run_dirs}
        comparisons = {
            run_dir: [clients_against(result, other, name) for name, other in others.items()]
            for run_dir, result in results.items()
        }
    except ValueError as error:
        parser.error(f"nothing landed: {error}")
    for run_dir, result in results.items():
        (args.to / run_dir.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / "results.json", args.to / run_dir.name / "results.json")
        print("; ".join([describe(run_dir.name, result), *comparisons[run_dir]]))
    print("\n".join(cell_lines(args.to, args.run_dirs)))


if __name__ == "__main__":
    main()
