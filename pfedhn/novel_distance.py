"""Novel clients' accuracy against how far their data lies from the seen clients' (paper Sec. 5.3).

    python -m pfedhn.novel_distance RUN_DIR [--data-root DIR] [--static _static]

The paper relates the gap between novel and seen clients to a distance between
distributions; its protocol is not public (../shared/PROTOCOLS.md). Our choice,
stated with every result: a client's distribution is the class histogram of its
training split, and a novel client's distance is the total variation distance to the
nearest seen client, min_j ½‖p_novel − p_j‖₁ (0: a seen client has the same class
mix; 1: no seen client shares a class). Its accuracy is its own test accuracy at the
novel group's best pooled validation round (the reported novel number); the seen
clients' pooled test accuracy at their group's best round is the reference line.
Prints one table row per novel client and Spearman's rank correlation; writes a
scatter plot ``novel_distance_<run directory's name>.png``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from pfedhn import config  # noqa: E402
from pfedhn.dataset import load_federated  # noqa: E402
from pfedhn.migration import migrate  # noqa: E402
from pfedhn.report import DATASET_LABELS  # noqa: E402
from pfedhn.results import evaluation_at  # noqa: E402


@dataclass(frozen=True)
class NovelClient:
    """One novel client: its partition, nearest seen client, distance to it, test accuracy."""

    client: int
    nearest_seen: int
    distance: float
    accuracy: float


def class_histograms(labels: list[np.ndarray], num_classes: int) -> np.ndarray:
    """(clients, num_classes): each client's share of samples per class (rows sum to 1)."""
    counts = np.stack([np.bincount(np.asarray(y), minlength=num_classes) for y in labels]).astype(float)
    return counts / counts.sum(axis=1, keepdims=True)


def nearest_tv(p: np.ndarray, others: np.ndarray) -> tuple[int, float]:
    """(row of ``others``, distance): the row with the least total variation distance to ``p``."""
    distances = 0.5 * np.abs(others - p).sum(axis=1)
    row = int(distances.argmin())
    return row, float(distances[row])


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks on ties); NaN when either side is constant."""
    if len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan")

    def ranks(v: list[float]) -> np.ndarray:
        values = np.asarray(v)
        order = values.argsort(kind="stable")
        r = np.empty(len(values))
        r[order] = np.arange(len(values), dtype=float)
        for value in np.unique(values):
            tied = values == value
            r[tied] = r[tied].mean()
        return r

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def group_client_accuracy(result: dict[str, Any], group: str) -> dict[int, float]:
    """Each client of ``group``: its test accuracy at the group's best-validation round."""
    report = result["groups"][group]
    best = evaluation_at(result, report["best_val_round"])
    return {c: best["test"]["client_accuracy"][c] for c in report["clients"]}


def novel_clients(result: dict[str, Any], histograms: np.ndarray) -> list[NovelClient]:
    """The novel group's clients with their nearest seen client and accuracy."""
    seen = result["groups"]["seen"]["clients"]
    accuracy = group_client_accuracy(result, "novel")
    out = []
    for client, acc in accuracy.items():
        row, distance = nearest_tv(histograms[client], histograms[seen])
        out.append(NovelClient(client, seen[row], distance, acc))
    return out


def plot(clients: list[NovelClient], seen_accuracy: float, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter([c.distance for c in clients], [100 * c.accuracy for c in clients], label="novel client")
    for c in clients:
        ax.annotate(
            str(c.client), (c.distance, 100 * c.accuracy), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    ax.axhline(100 * seen_accuracy, color="grey", linestyle="--", label="seen clients (pooled)")
    ax.set(
        xlabel="total variation distance to the nearest seen client's class mix",
        ylabel="test accuracy (%)",
        title=title,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run with novel clients (its results.json)")
    parser.add_argument("--data-root", help="the data root, if not the run's dataset.root")
    parser.add_argument("--static", type=Path, default=Path("_static"), help="where the plot goes")
    args = parser.parse_args(argv)
    result = json.loads((args.run_dir / "results.json").read_text())
    if "test_accuracy" not in result.get("groups", {}).get("novel", {}):
        parser.error(f"{args.run_dir} has no novel-client results (method.novel.clients and rounds > 0)")
    cfg = OmegaConf.create(migrate(result["config"]))
    if args.data_root:
        cfg.dataset.root = args.data_root
    data = load_federated(config.data_settings(cfg), cfg.dataset.num_classes)
    labels = [data.client_split(c, "train")[1].numpy() for c in range(cfg.num_clients)]
    clients = novel_clients(result, class_histograms(labels, cfg.dataset.num_classes))
    seen_accuracy = result["groups"]["seen"]["test_accuracy"]
    print("| novel client | classes | nearest seen client (classes) | TV distance | test accuracy (%) |")
    print("|---|---|---|---|---|")
    classes = data.client_classes()
    for c in sorted(clients, key=lambda c: c.distance):
        print(
            f"| {c.client} | {classes[c.client]} | {c.nearest_seen} ({classes[c.nearest_seen]}) | "
            f"{c.distance:.3f} | {100 * c.accuracy:.2f} |"
        )
    rho = spearman([c.distance for c in clients], [c.accuracy for c in clients])
    print(f"seen clients (pooled): {100 * seen_accuracy:.2f} %; Spearman rho(distance, accuracy) = {rho:.2f}")
    args.static.mkdir(parents=True, exist_ok=True)
    name = f"novel_distance_{args.run_dir.resolve().name}.png"
    title = f"{DATASET_LABELS[cfg.dataset.name]}, {cfg.num_clients} clients: novel clients vs distance (ρ {rho:.2f})"
    print(f"wrote {plot(clients, seen_accuracy, title, args.static / name)}")


if __name__ == "__main__":
    main()
