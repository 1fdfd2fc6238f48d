"""Our pFedHN beside the official trainer on the same split: docs/fidelity.md's table and plots.

    python docs/scripts/fidelity.py results/fidelity [--static _static] [--docs docs/fidelity.md]

Each run directory under the root is ``<side>_<dataset>_n<clients>_<method>_s<seed>`` with
side ``official`` (the official trainer's ``results*.json``: ``test_avg_acc`` / ``val_avg_acc``
at steps 1, 1 + eval_every, ..., and the last) or ``ours`` (``python -m pfedhn.main ...
dataset.split=official|official_pc``: ``results.json``). Both evaluate every client after the
same steps, so the curves are compared point by point. Prints one markdown table per
(dataset, method), writes ``<static>/fidelity_<dataset>_n<clients>_<method>.png`` and, with
``--docs``, puts the tables between the page's ``fidelity:start`` / ``fidelity:end`` markers.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MARK_START, MARK_END = "<!-- fidelity:start -->", "<!-- fidelity:end -->"
NAME = re.compile(r"(?P<side>official|ours)_(?P<dataset>\w+?)_n(?P<clients>\d+)_(?P<method>\w+)_s(?P<seed>\d+)")
LABELS = {"pfedhn": "pFedHN", "pfedhn_pc": "pFedHN-PC", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


@dataclass(frozen=True)
class Curve:
    """Accuracies after ``steps`` (1-based: the number of completed steps)."""

    steps: list[int]
    test: list[float]
    val: list[float]

    def tail_mean(self, count: int = 3) -> float:
        """Mean test accuracy over the last ``count`` evaluations (where both curves have settled)."""
        return sum(self.test[-count:]) / count

    def at_best_val(self) -> tuple[int, float]:
        """(step, test accuracy) at the first step with the highest validation accuracy."""
        best = max(range(len(self.val)), key=lambda i: (self.val[i], -i))
        return self.steps[best], self.test[best]


def official_curve(directory: Path, eval_every: int, num_steps: int) -> Curve:
    (path,) = directory.glob("results*.json")
    result = json.loads(path.read_text())
    count = len(result["test_avg_acc"])
    steps = [1 + eval_every * i for i in range(count)]
    if steps[-1] != num_steps:  # the trainer's extra evaluation after the last step
        steps[-1] = num_steps
    return Curve(steps, result["test_avg_acc"], result["val_avg_acc"])


def our_curve(directory: Path) -> tuple[Curve, dict]:
    result = json.loads((directory / "results.json").read_text())
    history = result["history"]
    return Curve(
        [e["round"] for e in history], [e["test"]["accuracy"] for e in history], [e["val"]["accuracy"] for e in history]
    ), result["config"]


def load(root: Path) -> dict[tuple[str, int, str], dict[int, dict[str, Curve]]]:
    """(dataset, clients, method) -> seed -> side -> curve, for pairs where both sides finished."""
    found: dict[tuple[str, int, str], dict[int, dict[str, Curve]]] = defaultdict(lambda: defaultdict(dict))
    ours = {}
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        match = NAME.fullmatch(directory.name)
        if match and match["side"] == "ours" and (directory / "results.json").is_file():
            curve, cfg = our_curve(directory)
            ours[directory.name] = (curve, cfg)
    for name, (curve, cfg) in ours.items():
        match = NAME.fullmatch(name)
        twin = root / name.replace("ours_", "official_", 1)
        if not any(twin.glob("results*.json")):
            continue
        key = (match["dataset"], int(match["clients"]), match["method"])
        found[key][int(match["seed"])]["ours"] = curve
        found[key][int(match["seed"])]["official"] = official_curve(twin, cfg["eval_every"], cfg["num_rounds"])
    return found


def table(pairs: dict[int, dict[str, Curve]]) -> str:
    lines = [
        "| seed | step | official test | ours test | ours − official |",
        "|---|---|---|---|---|",
    ]
    for seed, sides in sorted(pairs.items()):
        official, ours = sides["official"], sides["ours"]
        for step, a, b in zip(official.steps, official.test, ours.test):
            lines.append(f"| {seed} | {step} | {100 * a:.2f} | {100 * b:.2f} | {100 * (b - a):+.2f} |")
        (sa, ta), (sb, tb) = official.at_best_val(), ours.at_best_val()
        best = f"best val (step {sa} / {sb})"
        lines.append(f"| {seed} | {best} | **{100 * ta:.2f}** | **{100 * tb:.2f}** | {100 * (tb - ta):+.2f} |")
        a, b = official.tail_mean(), ours.tail_mean()
        lines.append(f"| {seed} | mean of the last 3 | {100 * a:.2f} | {100 * b:.2f} | {100 * (b - a):+.2f} |")
    return "\n".join(lines)


def plot(key: tuple[str, int, str], pairs: dict[int, dict[str, Curve]], static: Path) -> Path:
    dataset, clients, method = key
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for color, (seed, sides) in zip(("tab:blue", "tab:orange", "tab:green"), sorted(pairs.items())):
        for side, style in (("official", "-"), ("ours", "--")):
            curve = sides[side]
            label = f"seed {seed}, {'official trainer' if side == 'official' else 'this package'}"
            ax.plot(curve.steps, [100 * a for a in curve.test], style, color=color, marker="o", ms=3, label=label)
    ax.set(
        xlabel="step (round)",
        ylabel="test accuracy (%), all clients pooled",
        title=f"{LABELS[method]}, {LABELS[dataset]}, {clients} clients: the official split",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = static / f"fidelity_{dataset}_n{clients}_{method}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--static", type=Path, default=Path("_static"))
    parser.add_argument("--docs", type=Path, help="a page with the fidelity:start / fidelity:end markers")
    args = parser.parse_args()
    sections = []
    for key, pairs in sorted(load(args.root).items()):
        dataset, clients, method = key
        image = plot(key, pairs, args.static)
        title = f"{LABELS[method]}, {LABELS[dataset]}, {clients} clients"
        sections.append(f"### {title}\n\n{table(pairs)}\n\n![{title}](../{image})")
    body = "\n\n".join(sections)
    print(body)
    if args.docs is not None:
        head, rest = args.docs.read_text().split(MARK_START, 1)
        tail = rest.split(MARK_END, 1)[1]
        args.docs.write_text(f"{head}{MARK_START}\n{body}\n{MARK_END}{tail}")


if __name__ == "__main__":
    main()
