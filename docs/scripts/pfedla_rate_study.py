"""pFedLA's hypernetwork rate in its own setting: validation accuracy and α's self-weights per rate.

    python docs/scripts/pfedla_rate_study.py results/runs results/variants \\
        --dataset cifar10 --classes 4 --png _static/pfedla_rate_study_cifar10.png

Reads every ``results.json`` under the directories whose run is pFedLA (``method.name`` pfedla,
no local layers) on ``--dataset`` with ``--classes`` classes per client, one run per
hypernetwork rate (``method.server.lr``) and seed. Prints a markdown table (rate, best
validation accuracy and its round, test accuracy there, each layer's mean self-weight α_ii at
the last evaluation, uniform being 1 / clients) and saves a figure: validation accuracy
against rounds per rate (left; Local on the same split dashed, where a run of it is found: a
pFedLA whose α has gone to its self-weights is Local), mean self-weight per layer per rate
(right). The rate to keep is the one with the best validation accuracy; test accuracy is
reported, never used.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def split_runs(dirs: list[Path], dataset: str, classes: int) -> list[dict[str, Any]]:
    """Every run's results in ``dirs`` on ``dataset`` with ``classes`` classes per client."""
    found = []
    for directory in dirs:
        for path in sorted(directory.rglob("results.json")):
            result = json.loads(path.read_text())
            data = result["config"]["dataset"]
            if data["name"] == dataset and data.get("classes_per_client") == classes:
                found.append(result | {"path": str(path)})
    return found


def pfedla_runs(found: list[dict[str, Any]]) -> dict[float, dict[str, Any]]:
    """Rate → the pFedLA run (no local layers) among ``found`` (one seed: the first found)."""
    runs: dict[float, dict[str, Any]] = {}
    for result in found:
        method = result["config"]["method"]
        if method.get("name") == "pfedla" and not method.get("local_layers", 0):
            runs.setdefault(float(method["server"]["lr"]), result)
    return dict(sorted(runs.items()))


def local_run(found: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first Local run among ``found``, or None."""
    return next((r for r in found if r["config"]["method"].get("name") == "local"), None)


def self_weights(result: dict[str, Any]) -> dict[str, float]:
    """Layer → mean over clients of α_ii at the run's last evaluation."""
    return {layer: float(np.diag(np.array(m)).mean()) for layer, m in result["method_report"]["alpha"].items()}


def table(runs: dict[float, dict[str, Any]]) -> str:
    layers = list(self_weights(next(iter(runs.values()))))
    lines = [
        "| hypernetwork lr | best validation (round) | test there | rounds done | "
        + " | ".join(f"α_ii {layer}" for layer in layers)
        + " |",
        "|---" * (4 + len(layers)) + "|",
    ]
    for rate, result in runs.items():
        done = result["history"][-1]["round"]
        planned = result["config"]["num_rounds"]
        weights = self_weights(result)
        lines.append(
            f"| {rate:g} | {100 * result['best_val_accuracy']:.2f} ({result['best_val_round']}) "
            f"| {100 * result['test_accuracy']:.2f} | {done}{'' if done == planned else f' of {planned}'} | "
            + " | ".join(f"{weights[layer]:.3f}" for layer in layers)
            + " |"
        )
    return "\n".join(lines)


def validation_curve(result: dict[str, Any]) -> tuple[list[int], list[float]]:
    """(evaluated rounds, pooled validation accuracy in % at each) of a run."""
    history = result["history"]
    return [h["round"] for h in history], [100 * h["val"]["accuracy"] for h in history]


def plot(runs: dict[float, dict[str, Any]], local: dict[str, Any] | None, title: str, png: Path) -> None:
    fig, (curves, bars) = plt.subplots(1, 2, figsize=(12, 4.2))
    if local is not None:
        curves.plot(*validation_curve(local), color="black", linestyle="--", linewidth=1, label="Local (same split)")
    layers = list(self_weights(next(iter(runs.values()))))
    width = 0.8 / len(runs)
    for index, (rate, result) in enumerate(runs.items()):
        rounds, accuracy = validation_curve(result)
        unfinished = "" if rounds[-1] == result["config"]["num_rounds"] else f" (to round {rounds[-1]})"
        label = f"lr {rate:g}{unfinished}"
        curves.plot(rounds, accuracy, label=label)
        weights = self_weights(result)
        positions = np.arange(len(layers)) + (index - (len(runs) - 1) / 2) * width
        bars.bar(positions, [weights[layer] for layer in layers], width, label=label)
    clients = result["config"]["num_clients"]
    bars.axhline(1 / clients, color="grey", linestyle="--", linewidth=1, label=f"uniform (1/{clients})")
    curves.set(xlabel="round", ylabel="pooled validation accuracy (%)", title=f"{title}: validation")
    bars.set(xticks=range(len(layers)), xticklabels=layers, ylabel="mean self-weight α_ii (last evaluation)")
    bars.set_title(f"{title}: α's self-weight per layer")
    curves.grid(alpha=0.3)
    bars.grid(alpha=0.3, axis="y")
    curves.legend()
    bars.set_ylim(0, 1.25)  # room above the bars for the legend
    bars.legend(fontsize=8, ncol=3, loc="upper center")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--png", type=Path, required=True)
    args = parser.parse_args()
    found = split_runs(args.dirs, args.dataset, args.classes)
    runs, local = pfedla_runs(found), local_run(found)
    if not runs:
        parser.error(f"no pFedLA run on {args.dataset} with {args.classes} classes per client under {args.dirs}")
    print(table(runs))
    if local is not None:
        print(
            f"Local on the same split: best validation {100 * local['best_val_accuracy']:.2f} "
            f"(round {local['best_val_round']}), test there {100 * local['test_accuracy']:.2f}"
        )
    name = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}.get(args.dataset, args.dataset)
    plot(runs, local, f"pFedLA, {name}, {args.classes} classes per client", args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
