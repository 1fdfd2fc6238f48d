"""Speed benchmark: ``python -m pfedhn.bench --root DATA_ROOT``.

Times, in one command, on the same data and seed, pFedHN rounds done three ways:

(a) ``bare``: the package's hypernetwork, client trainer and update code in a
    plain Python loop (no Flower);
(b) ``flower``: the Flower simulation exactly as ``pfedhn.main`` runs it
    (in-process backend; evaluation only after the first and last round);
    ``flower-ray`` is the same on Flower's Ray backend, and ``flower-stock``
    is Flower as shipped: Ray and its 0.1 s message polling;
(c) ``reference``: (a) with the client loop of the official code, which draws
    every batch with a fresh ``next(iter(DataLoader(...)))`` over a torchvision-style
    dataset that converts each image through PIL, ToTensor and Normalize.

Each measurement runs in a fresh child process, one after the other, so no
cell inherits another's caches, threads or Ray processes, and its peak memory
is its own. It writes ``results/benchmark.json`` and the table between the
markers in ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from flwr.app import RecordDict
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pfedhn import config, validation
from pfedhn.client_app import PersonalizedClient
from pfedhn.methods import build_strategy
from pfedhn.model import TargetCNN

MARK_START, MARK_END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


@contextmanager
def peak_rss() -> Iterator[dict[str, float]]:
    """Sample the RSS of this process and all its descendants (Ray's too) every 0.2 s."""
    peak = {"mb": 0.0}
    done = threading.Event()
    me = psutil.Process()

    def sample() -> None:
        while not done.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            peak["mb"] = max(peak["mb"], total / 2**20)
            done.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


class ReferenceStyleDataset(Dataset):
    """What torchvision's CIFAR/MNIST datasets do per item: PIL image → ToTensor → Normalize."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, cfg: DictConfig) -> None:
        self.images = images.permute(0, 2, 3, 1).squeeze(-1).numpy()  # HWC (or HW) uint8, as torchvision stores
        self.labels = labels.tolist()
        self.transform = T.Compose([T.ToTensor(), T.Normalize(list(cfg.dataset.mean), list(cfg.dataset.std))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def reference_fit(
    cfg: DictConfig, loader: DataLoader, model: TargetCNN, message: tuple[list[np.ndarray], dict]
) -> list[np.ndarray]:
    """The official client loop: load θ̃, 50 × [next(iter(loader)), SGD step]; return θ − θ̃."""
    received = [torch.tensor(a) for a in message[0]]
    with torch.no_grad():
        for param, tensor in zip(model.parameters(), received):
            param.copy_(tensor)
    c = cfg.client
    optimizer = torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    model.train()
    for _ in range(c.inner_steps):
        optimizer.zero_grad()
        images, labels = next(iter(loader))
        F.cross_entropy(model(images), labels).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        optimizer.step()
    return [(p.detach() - r).numpy() for p, r in zip(model.parameters(), received)]


def loop_rounds(cfg: DictConfig, rounds: int, reference: bool) -> dict[str, list[float]]:
    """Per-round times of (a) or, with ``reference``, (c): whole round and its three parts."""
    strategy = build_strategy(cfg, progress=False)
    clients = [PersonalizedClient(c, cfg, RecordDict()) for c in range(cfg.num_clients)]
    fit: Callable[[int, int, list[np.ndarray]], list[np.ndarray]]
    if reference:
        model = TargetCNN(config.model_spec(cfg))
        torch.manual_seed(cfg.seed)
        data = clients[0].data
        dataset = ReferenceStyleDataset(data.splits["train"].images, data.splits["train"].labels, cfg)
        loaders = [
            DataLoader(
                torch.utils.data.Subset(dataset, data.client_indices["train"][c].tolist()),
                batch_size=cfg.client.batch_size,
                shuffle=True,
            )
            for c in range(cfg.num_clients)
        ]
        fit = lambda c, r, message: reference_fit(cfg, loaders[c], model, message)
    else:
        fit = lambda c, r, message: clients[c].fit(*message)[0]
    sampler = np.random.default_rng(cfg.seed)
    times: dict[str, list[float]] = {"round": [], "generate": [], "fit": [], "update": []}
    for server_round in range(1, rounds + 1):
        client = int(sampler.integers(cfg.num_clients))
        t0 = time.perf_counter()
        sent = strategy.method.client_model(client, server_round, training=True)
        message = strategy.outbox.message(client, server_round, True, sent)
        t1 = time.perf_counter()
        delta = strategy.outbox.reply(client, fit(client, server_round, message))
        t2 = time.perf_counter()
        strategy.method.apply_updates(server_round, {client: delta}, {client: 1})
        t3 = time.perf_counter()
        for key, value in (("round", t3 - t0), ("generate", t1 - t0), ("fit", t2 - t1), ("update", t3 - t2)):
            times[key].append(value)
    return times


def flower_rounds(cfg: DictConfig, rounds: int) -> list[float]:
    """Per-round wall times of the Flower simulation run by ``pfedhn.main.run``."""
    from pfedhn.main import run  # imports Flower's simulation stack

    cfg.num_rounds = rounds
    cfg.eval_every = rounds + 1  # evaluate after round 1 and the last only
    cfg.progress = False
    with tempfile.TemporaryDirectory() as out:
        ends = run(cfg, Path(out)).round_end_times
    return list(np.diff(ends))


EVAL_ROUNDS, EVAL_WARMUP = 8, 2  # rounds of an ``evaluation`` cell (every one evaluated), the first left out


def flower_evaluations(cfg: DictConfig, rounds: int) -> tuple[list[float], int]:
    """Seconds of each evaluation of all clients (from the end of a round's update to the
    pooled result) in a Flower simulation evaluating after every round; and the number of
    validation and test images one evaluation passes through the targets."""
    from pfedhn.main import run  # imports Flower's simulation stack

    cfg.num_rounds = rounds
    cfg.eval_every = 1
    cfg.progress = False
    with tempfile.TemporaryDirectory() as out:
        history = run(cfg, Path(out))
    last = history.evaluations[-1]
    images = sum(last.val.client_count) + sum(last.test.client_count)
    return [end - start for start, end in zip(history.round_end_times, history.eval_end_times)], images


def summarize(times: dict[str, list[float]], warmup: int, inner_steps: int) -> dict[str, float]:
    """Medians after ``warmup`` rounds. Local steps/s come from the local-training time
    where it is known (loops), else from the whole round (Flower: a lower bound)."""
    medians = {f"{key}_s": statistics.median(values[warmup:]) for key, values in times.items()}
    return {
        **medians,
        "rounds_per_s": 1.0 / medians["round_s"],
        "local_steps_per_s": inner_steps / medians.get("fit_s", medians["round_s"]),
        "rounds_timed": len(times["round"]) - warmup,
    }


FLOWER_KINDS = {
    "flower": [],
    "flower-ray": ["simulation.backend=ray"],
    "flower-stock": ["simulation.backend=stock"],
}


def measure(cfg: DictConfig, kind: str, rounds: int, warmup: int) -> dict[str, float]:
    """One run of ``kind`` on ``cfg`` (overrides of ``FLOWER_KINDS`` already applied)."""
    with peak_rss() as peak:
        if kind == "evaluation":
            seconds, images = flower_evaluations(cfg, EVAL_ROUNDS)
            stats = {"evaluation_s": statistics.median(seconds[EVAL_WARMUP:]), "images": images}
        elif kind in FLOWER_KINDS:
            stats = summarize({"round": flower_rounds(cfg, rounds + 2)}, warmup, cfg.client.inner_steps)
        else:
            stats = summarize(loop_rounds(cfg, rounds, reference=kind == "reference"), warmup, cfg.client.inner_steps)
    return {**stats, "peak_rss_mb": peak["mb"]}


def cells(root: str, tiny: bool) -> list[tuple[str, list[str], list[str]]]:
    """(label, overrides, kinds) of every measurement."""
    base = [f"dataset.root={root}"]
    if tiny:
        base += [
            "dataset.download=false",
            "dataset.val_size=100",
            "client.inner_steps=3",
            "model.n_kernels=2",
            "method.hypernetwork.hidden_dim=8",
        ]
        return [
            (
                "mnist/4",
                base + ["dataset=mnist", "num_clients=4"],
                ["bare", "flower", "flower-ray", "reference"],
            ),
            ("mnist/2", base + ["dataset=mnist", "num_clients=2"], ["flower", "evaluation"]),
        ]
    return [
        (
            "cifar10/50",
            base + ["dataset=cifar10", "num_clients=50"],
            ["bare", "flower", "flower-ray", "flower-stock", "reference"],
        ),
        (
            "cifar100/100",
            base + ["dataset=cifar100", "num_clients=100"],
            ["bare", "flower", "flower-ray", "reference"],
        ),
        # one local step: the round is nearly all Flower's own per-round cost
        (
            "cifar10/50, 1 step",
            base + ["dataset=cifar10", "num_clients=50", "client.inner_steps=1"],
            ["bare", "flower", "flower-ray"],
        ),
        ("cifar10/10", base + ["dataset=cifar10", "num_clients=10"], ["flower", "evaluation"]),
        ("cifar10/100", base + ["dataset=cifar10", "num_clients=100"], ["flower", "evaluation"]),
        ("cifar10/1000", base + ["dataset=cifar10", "num_clients=1000"], ["flower", "evaluation"]),
    ]


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| setting | run | s / round | rounds / s | local steps / s | peak RSS (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for label, kinds in results.items():
        for kind, r in kinds.items():
            if "round_s" in r:
                lines.append(
                    f"| {label} | {kind} | {r['round_s']:.3f} | {r['rounds_per_s']:.2f} | "
                    f"{r['local_steps_per_s']:.0f} | {r['peak_rss_mb']:.0f} |"
                )
    lines += [
        "",
        "| setting | run | generate θ̃ (s) | local training (s) | hypernetwork update (s) |",
        "|---|---|---|---|---|",
    ]
    for label, kinds in results.items():
        for kind, r in kinds.items():
            if "fit_s" in r:
                lines.append(f"| {label} | {kind} | {r['generate_s']:.4f} | {r['fit_s']:.3f} | {r['update_s']:.4f} |")
    lines += [
        "",
        "| setting | b/a (flower/bare) | a/c (bare/reference) | b/c (flower/reference) | flower-ray/bare |",
        "|---|---|---|---|---|",
    ]
    for label, k in results.items():
        if {"bare", "flower", "reference"} <= set(k):
            a, b, c = (k[x]["round_s"] for x in ("bare", "flower", "reference"))
            ray = f"{k['flower-ray']['round_s'] / a:.3f}" if "flower-ray" in k else "–"
            lines.append(f"| {label} | {b / a:.3f} | {a / c:.3f} | {b / c:.3f} | {ray} |")
    flower = {label: k["flower"]["round_s"] for label, k in results.items() if "flower" in k}
    counts = {label: clients_of(label) for label in flower if label.startswith("cifar10/")}
    scaling = [label for label, n in counts.items() if n is not None]
    if len(scaling) > 1:
        smallest = min(scaling, key=counts.get)
        lines += ["", "| clients (CIFAR-10, flower) | s / round | × the smallest |", "|---|---|---|"]
        for label in sorted(scaling, key=counts.get):
            lines.append(f"| {counts[label]} | {flower[label]:.3f} | {flower[label] / flower[smallest]:.2f} |")
    lines += evaluation_table(results)
    return "\n".join(lines)


def clients_of(label: str) -> int | None:
    """The client count of a cell label such as ``cifar10/100 (cpu)``; None for ``cifar10/50, 1 step``."""
    count = label.split(" ")[0].split("/")[1]
    return int(count) if count.isdigit() else None


def evaluation_table(results: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Seconds per evaluation of all clients, against the setting with the fewest clients."""
    timed = {label: k["evaluation"] for label, k in results.items() if "evaluation" in k}
    if not timed:
        return []
    clients = {label: clients_of(label) or 0 for label in timed}
    smallest = timed[min(timed, key=clients.get)]
    lines = [
        "",
        "| setting | s / evaluation of all clients | × the fewest clients | images (val + test) | µs / image |",
        "|---|---|---|---|---|",
    ]
    for label in sorted(timed, key=clients.get):
        r = timed[label]
        ratio = r["evaluation_s"] / smallest["evaluation_s"]
        per_image = 1e6 * r["evaluation_s"] / r["images"]
        lines.append(f"| {label} | {r['evaluation_s']:.2f} | {ratio:.2f} | {r['images']} | {per_image:.0f} |")
    return lines


def write_docs(path: Path, command: str, body: str) -> None:
    text = path.read_text() if path.exists() else f"# Performance\n\n{MARK_START}\n{MARK_END}\n"
    head, rest = text.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    path.write_text(f"{head}{MARK_START}\n```bash\n{command}\n```\n\n{body}\n{MARK_END}{tail}")


def measure_in_child(overrides: list[str], kind: str, rounds: int, warmup: int) -> dict[str, float]:
    """``measure`` in a fresh Python process (see the module docstring); its JSON result."""
    request = json.dumps({"overrides": overrides, "kind": kind, "rounds": rounds, "warmup": warmup})
    child = subprocess.run(
        [sys.executable, "-m", "pfedhn.bench", "--measure", request], capture_output=True, text=True, check=False
    )
    if child.returncode != 0:
        raise RuntimeError(f"benchmark of {kind} {overrides} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def measure_request(request: str) -> None:
    """The child's side of ``measure_in_child``: print one JSON line."""
    spec = json.loads(request)
    cfg = config.compose(spec["overrides"] + FLOWER_KINDS.get(spec["kind"], []))
    validation.validate(cfg)
    print(json.dumps(measure(cfg, spec["kind"], spec["rounds"], spec["warmup"])), flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="data root (see EXTENDED_README.md)")
    parser.add_argument("--rounds", type=int, default=60, help="rounds timed per run")
    parser.add_argument("--warmup", type=int, default=10, help="first rounds left out of the medians")
    parser.add_argument("--tiny", action="store_true", help="tiny settings for a smoke test")
    parser.add_argument("--only", nargs="+", metavar="SETTING", help="run only these settings, e.g. cifar10/50")
    parser.add_argument("--json", type=Path, default=Path("results/benchmark.json"))
    parser.add_argument("--docs", type=Path, default=Path("docs/performance.md"))
    parser.add_argument(
        "--device", default="cpu", help="the device key of every run: auto, cpu, cuda, cuda:<i> or mps (default: cpu)"
    )
    parser.add_argument("--measure", metavar="JSON", help=argparse.SUPPRESS)  # a child's one measurement
    args = parser.parse_args(argv)
    if args.measure:
        measure_request(args.measure)
        return {}
    if args.root is None:
        parser.error("--root is required")
    device = config.device(config.compose([f"device={args.device}"]))  # an unavailable one fails here
    results: dict[str, dict[str, dict[str, float]]] = {}
    for label, overrides, kinds in cells(args.root, args.tiny):
        if args.only and label not in args.only:
            continue
        if device.type != "cpu":  # the official loop's CPU data pipeline is not timed on an accelerator
            kinds = [kind for kind in kinds if kind != "reference"]
        label = f"{label} ({device})"
        results[label] = {}
        for kind in kinds:
            results[label][kind] = measure_in_child([*overrides, f"device={device}"], kind, args.rounds, args.warmup)
            print(f"{label:>18} {kind:>12}: {json.dumps(results[label][kind])}", flush=True)
    body = table(results)
    print(body)
    command = "python -m pfedhn.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = {
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "torch": torch.__version__,
        "device": str(device),
        "accelerator": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": command, "machine": machine, "results": results}, indent=1))
    write_docs(args.docs, command, body)
    return results


if __name__ == "__main__":
    main()
