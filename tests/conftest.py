"""Tiny datasets written in the on-disk formats the real loaders read."""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TRAIN_PER_CLASS, TEST_PER_CLASS = 40, 20
ROOT = Path(__file__).resolve().parent.parent


def run_pfedhn(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m pfedhn.main ARGS`` from the repository root, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pfedhn.main", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _labels(per_class: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.repeat(np.arange(num_classes), per_class)
    rng.shuffle(labels)
    return labels


def _images(labels: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Noise plus a class-dependent brightness, so a model can learn something."""
    noise = rng.integers(0, 60, size=(len(labels), *shape))
    return (noise + labels.reshape(-1, *[1] * len(shape)) * 19).clip(0, 255).astype(np.uint8)


def write_mnist(root: Path, seed: int = 0) -> None:
    """torchvision's MNIST layout: ``root/MNIST/raw/*-ubyte`` (idx files)."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, per_class in (("train", TRAIN_PER_CLASS), ("t10k", TEST_PER_CLASS)):
        labels = _labels(per_class, 10, rng)
        images = _images(labels, (28, 28), rng)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()
        )
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, len(labels), 28, 28) + images.tobytes()
        )


def cifar_arrays(num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        labels = _labels(per_class, num_classes, rng)
        out[f"x_{split}"] = _images(labels, (32, 32, 3), rng)
        out[f"y_{split}"] = labels.astype(np.int64)
    return out


def write_cifar_npz(root: Path, name: str, num_classes: int) -> None:
    """The materialized layout: ``root/<name>.npz`` with x_/y_ train/test arrays."""
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / f"{name}.npz", **cifar_arrays(num_classes))


def write_cifar10_batches(root: Path) -> dict[str, np.ndarray]:
    """torchvision's ``cifar-10-batches-py`` pickles (five train batches, one test batch)."""
    arrays = cifar_arrays(10)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(name: str, x: np.ndarray, y: np.ndarray) -> None:
        batch = {"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1), "labels": y.tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))

    for i, (x, y) in enumerate(zip(np.array_split(arrays["x_train"], 5), np.array_split(arrays["y_train"], 5)), 1):
        dump(f"data_batch_{i}", x, y)
    dump("test_batch", arrays["x_test"], arrays["y_test"])
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    return arrays


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_mnist(root)
    write_cifar_npz(root, "cifar10", 10)
    write_cifar_npz(root, "cifar100", 100)
    return root


def tiny_overrides(data_root: Path, dataset: str = "mnist", num_clients: int = 4) -> list[str]:
    """Overrides for a run that takes seconds on the tiny data."""
    return [f"dataset={dataset}", f"num_clients={num_clients}", "client.inner_steps=3", *tiny_data(data_root)]


def tiny_data(data_root: Path) -> list[str]:
    """The tiny data and target alone, for a run whose dataset, clients and rounds a preset sets."""
    return [
        f"dataset.root={data_root}",
        "dataset.download=false",
        "dataset.val_size=100",
        "client.batch_size=8",
        "model.n_kernels=2",
        "progress=false",
    ]


def message(strategy, client: int, server_round: int, training: bool):
    """(arrays, config) the driver sends ``client`` in ``server_round``: the method's model for it."""
    model = strategy.method.client_model(client, server_round, training)
    return strategy.outbox.message(client, server_round, training, model)


def instruction(strategy, client: int, server_round: int, training: bool):
    """``message`` as Flower sends it (``Parameters``, config), its bytes counted."""
    model = strategy.method.client_model(client, server_round, training)
    return strategy.outbox.instruction(client, server_round, training, model)
