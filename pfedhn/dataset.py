"""Datasets and the pFedHN pathological partitioner.

Images stay as one uint8 tensor per split, shape (N, C, H, W); clients hold index
tensors into it and batches are normalized on the fly (``normalize``), so a
process keeps one compact copy of a dataset however many clients it serves.

The split follows the official pFedHN code (``experiments/dataset.py``):
``val_size`` training images are held out as validation; each client gets
``classes_per_client`` classes, assigned greedily so every class serves about
the same number of clients; per class, ``slots = classes_per_client * N // C + 1``
proportions are drawn from U(0.4, 0.6) and normalized; the clients taking the
class use them in turn, each slicing ``int(class_size * p)`` shuffled samples.
The same assignment and proportions apply to train, validation and test.

Two rules draw that split (``dataset.split``): ``pfedhn`` (the default) from one
numpy ``Generator`` seeded with ``seed``, never giving a client the same class
twice; ``official`` / ``official_pc`` exactly as the official trainers draw it for
the same seed (``official_split_streams``), so a run here and the official code's
run see the same clients.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pfedhn.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageSplit:
    """One split of a dataset: ``images`` (N, C, H, W) uint8, ``labels`` (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> ImageSplit:
        index = torch.from_numpy(indices)
        return ImageSplit(self.images[index], self.labels[index])


@dataclass(frozen=True)
class DataSettings:
    """Everything that determines the federated data; hashable, so loads are cached."""

    name: str
    root: str
    download: bool
    val_size: int
    num_clients: int
    classes_per_client: int
    prob_low: float
    prob_high: float
    seed: int
    split: str  # a key of SPLIT_STREAMS: how the clients' data is drawn


@dataclass(frozen=True)
class ClassAssignment:
    """Per client: its classes and the share of each class's samples it takes."""

    classes: list[list[int]]
    proportions: list[list[float]]


@dataclass(frozen=True)
class FederatedData:
    """The three splits and, per split, each client's sample indices into it."""

    splits: dict[str, ImageSplit]
    client_indices: dict[str, list[torch.Tensor]]
    assignment: ClassAssignment

    def client_classes(self) -> list[list[int]]:
        """Each client's classes, sorted."""
        return [sorted(int(c) for c in classes) for classes in self.assignment.classes]

    def fingerprint(self) -> str:
        """SHA-256 (hex) of every client's sample indices and their labels, split by split:
        equal for two loads that give every client the same samples, whatever the root."""
        digest = hashlib.sha256()
        for split in sorted(self.client_indices):
            for index in self.client_indices[split]:
                digest.update(np.int64(len(index)).tobytes())
                digest.update(index.numpy().astype(np.int64).tobytes())
                digest.update(self.splits[split].labels[index].numpy().astype(np.int64).tobytes())
        return digest.hexdigest()

    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of every image."""
        return tuple(self.splits["train"].images.shape[1:])

    def client_split(self, client: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` of one client's split: uint8 (n, C, H, W) and int64 (n,)."""
        index = self.client_indices[split][client]
        data = self.splits[split]
        return data.images[index], data.labels[index]


# --------------------------------------------------------------------------- loading


def _expected_files(name: str, root: Path) -> str:
    if name == "mnist":
        return f"{root}/MNIST/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte"
    folder = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    return f"{root}/{name}.npz or {root}/{folder}/ (torchvision's layout)"


def _from_torchvision(dataset: Any) -> ImageSplit:
    """A torchvision dataset (``torchvision.datasets.VisionDataset``) as an ``ImageSplit``."""
    images = torch.as_tensor(np.asarray(dataset.data))
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    return ImageSplit(images.contiguous(), labels)


def _load_mnist(root: Path, download: bool) -> tuple[ImageSplit, ImageSplit]:
    import torchvision  # here, not at the top: a client that never reads torchvision's files skips its import

    return tuple(  # type: ignore[return-value]
        _from_torchvision(torchvision.datasets.MNIST(str(root), train=train, download=download))
        for train in (True, False)
    )


def _load_cifar(name: str, root: Path, download: bool) -> tuple[ImageSplit, ImageSplit]:
    """Read ``<root>/<name>.npz`` if present, else torchvision's CIFAR layout."""
    npz = root / f"{name}.npz"
    if npz.is_file():
        with np.load(npz) as arrays:
            return tuple(  # type: ignore[return-value]
                ImageSplit(
                    torch.from_numpy(arrays[f"x_{split}"]).permute(0, 3, 1, 2).contiguous(),
                    torch.from_numpy(arrays[f"y_{split}"].astype(np.int64)),
                )
                for split in ("train", "test")
            )
    import torchvision  # here, not at the top (see _load_mnist)

    cls = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    return tuple(  # type: ignore[return-value]
        _from_torchvision(cls(str(root), train=train, download=download)) for train in (True, False)
    )


LOADERS: dict[str, Callable[[Path, bool], tuple[ImageSplit, ImageSplit]]] = {
    "mnist": _load_mnist,
    "cifar10": functools.partial(_load_cifar, "cifar10"),
    "cifar100": functools.partial(_load_cifar, "cifar100"),
}


def load_dataset(name: str, root: str | Path, download: bool) -> tuple[ImageSplit, ImageSplit]:
    """Load the official train and test splits of ``name`` from ``root``.

    Raises ``DataError`` naming the expected files when they are absent and
    cannot be downloaded.
    """
    if name not in LOADERS:
        raise ConfigError("dataset.name", f"unknown dataset {name!r}; choose one of {sorted(LOADERS)}")
    root = Path(root).expanduser().resolve()
    try:
        return LOADERS[name](root, download)
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError...
        how = "download failed" if download else "download is off (dataset.download=false)"
        raise DataError(
            f"{name}: no usable data under {root}; expected {_expected_files(name, root)}; "
            f"{how}: {type(error).__name__}: {error}. "
            f"Point dataset.root=<dir> at a data root that has these files."
        ) from error


# ---------------------------------------------------------------------- partitioning


def assign_classes(
    num_clients: int,
    num_classes: int,
    classes_per_client: int,
    rng: np.random.Generator | np.random.RandomState,
    prob_low: float = 0.4,
    prob_high: float = 0.6,
    distinct: bool = True,
) -> ClassAssignment:
    """The official greedy class assignment with U(low, high) proportions.

    First, per class, ``slots`` proportions are drawn and normalized; then each
    client draws ``classes_per_client`` times uniformly among the classes with the
    most remaining slots. With ``distinct`` a client never draws a class it already
    holds; without, it can (rarely), as in the official code.
    """
    if classes_per_client > num_classes:
        raise ConfigError(
            "dataset.classes_per_client",
            f"{classes_per_client} classes per client, but the dataset has only {num_classes}",
        )
    slots = classes_per_client * num_clients // num_classes + 1
    remaining = np.full(num_classes, slots)
    shares = []
    for _ in range(num_classes):
        draws = rng.uniform(prob_low, prob_high, size=slots)
        shares.append(list(draws / draws.sum()))
    classes, proportions = [], []
    for _ in range(num_clients):
        mine: list[int] = []
        for _ in range(classes_per_client):
            held = np.isin(np.arange(num_classes), mine) if distinct else np.zeros(num_classes, dtype=bool)
            open_counts = np.where(held, -1, remaining)
            best = np.flatnonzero(open_counts == open_counts.max())
            chosen = int(rng.choice(best))
            remaining[chosen] -= 1
            mine.append(chosen)
        classes.append(mine)
        proportions.append([float(shares[c].pop()) for c in mine])
    return ClassAssignment(classes, proportions)


def split_indices(
    labels: np.ndarray, assignment: ClassAssignment, shuffle: Callable[[np.ndarray], None]
) -> list[np.ndarray]:
    """Each client's sample indices into ``labels``, following ``assignment``.

    Each class's sample indices are shuffled in place by ``shuffle``, class 0 first,
    then handed out in client order, ``int(class_size * p)`` at a time (a class a
    client holds twice: two slices). No sample goes to two clients.
    """
    by_class = {}
    for c in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == c)
        shuffle(members)
        by_class[c] = members
    class_size = {c: len(members) for c, members in by_class.items()}
    cursor = dict.fromkeys(by_class, 0)
    clients = []
    for classes, proportions in zip(assignment.classes, assignment.proportions):
        parts = []
        for c, p in zip(classes, proportions):
            take = int(class_size[c] * p)
            parts.append(by_class[c][cursor[c] : cursor[c] + take])
            cursor[c] += take
        clients.append(np.sort(np.concatenate(parts)))
    return clients


@dataclass(frozen=True)
class SplitStreams:
    """What a split rule draws: the held-out validation set and the class assignment,
    and how each class's samples are shuffled before slicing.

    ``train_order`` / ``val_order``: indices into the official training set, in the
    order the split's positions refer to.
    """

    train_order: np.ndarray
    val_order: np.ndarray
    assignment: ClassAssignment
    shuffle: Callable[[np.ndarray], None]


def pfedhn_split_streams(settings: DataSettings, train_size: int, num_classes: int) -> SplitStreams:
    """This package's rule: everything from one ``numpy.random.Generator(seed)``; distinct classes."""
    rng = np.random.default_rng(settings.seed)
    order = rng.permutation(train_size)
    assignment = assign_classes(
        settings.num_clients,
        num_classes,
        settings.classes_per_client,
        rng,
        settings.prob_low,
        settings.prob_high,
    )
    return SplitStreams(
        np.sort(order[settings.val_size :]), np.sort(order[: settings.val_size]), assignment, rng.shuffle
    )


OFFICIAL_PC_FEATURES = 84  # in_features of the official pFedHN-PC trainer's per-client Linear heads


def official_split_streams(
    settings: DataSettings, train_size: int, num_classes: int, heads_first: bool
) -> SplitStreams:
    """The official pFedHN code's draws for ``seed`` (``experiments/utils.set_seed``, then
    ``experiments/dataset.py``): ``set_seed`` seeds torch, numpy's global RNG and Python's
    ``random``; ``torch.utils.data.random_split(train, [n - val_size, val_size])`` takes one
    ``randperm``; ``gen_classes_per_node`` draws from numpy; ``gen_data_split`` shuffles with
    ``random.shuffle`` (train, then validation, then test). The pFedHN-PC trainer
    (``heads_first``) first initializes every client's ``Linear(84, classes)`` head from
    torch's RNG, which moves the ``randperm``. Same seed, same clients, same samples.
    """
    with torch.random.fork_rng(devices=[]):  # the caller's torch RNG stays as it was
        torch.manual_seed(settings.seed)
        if heads_first:
            for _ in range(settings.num_clients):
                torch.nn.Linear(OFFICIAL_PC_FEATURES, num_classes)
        order = torch.randperm(train_size).numpy()
    assignment = assign_classes(
        settings.num_clients,
        num_classes,
        settings.classes_per_client,
        np.random.RandomState(settings.seed),
        settings.prob_low,
        settings.prob_high,
        distinct=False,
    )
    shuffle = random.Random(settings.seed).shuffle
    cut = train_size - settings.val_size
    return SplitStreams(order[:cut], order[cut:], assignment, shuffle)


SPLIT_STREAMS: dict[str, Callable[[DataSettings, int, int], SplitStreams]] = {
    "pfedhn": pfedhn_split_streams,
    "official": functools.partial(official_split_streams, heads_first=False),
    "official_pc": functools.partial(official_split_streams, heads_first=True),
}


def partition(settings: DataSettings, train: ImageSplit, test: ImageSplit, num_classes: int) -> FederatedData:
    """Hold out validation, assign classes and split train/val/test per client, by the
    rule ``settings.split`` (``SPLIT_STREAMS``). ``settings`` come validated (``pfedhn.config``:
    ``num_clients`` positive, ``dataset.split`` a known rule); what needs the data is checked here."""
    if not 0 < settings.val_size < len(train):
        raise ConfigError(
            "dataset.val_size", f"{settings.val_size} must be in (0, {len(train)}), the training set size"
        )
    streams = SPLIT_STREAMS[settings.split](settings, len(train), num_classes)
    splits = {"train": train.subset(streams.train_order), "val": train.subset(streams.val_order), "test": test}
    client_indices = {}
    for split in SPLITS:
        parts = split_indices(splits[split].labels.numpy(), streams.assignment, streams.shuffle)
        empty = [client for client, part in enumerate(parts) if len(part) == 0]
        if empty:
            raise ConfigError(
                "num_clients",
                f"{settings.num_clients} clients cannot be split: client {empty[0]} "
                f"(and {len(empty) - 1} more) would get no {split} samples from "
                f"{len(splits[split])}; use fewer clients or fewer dataset.classes_per_client",
            )
        client_indices[split] = [torch.from_numpy(part) for part in parts]
    return FederatedData(splits, client_indices, streams.assignment)


@functools.lru_cache(maxsize=2)
def load_federated(settings: DataSettings, num_classes: int) -> FederatedData:
    """Load and partition once per process; every client in it indexes the result."""
    train, test = load_dataset(settings.name, settings.root, settings.download)
    found = int(train.labels.max()) + 1
    if found != num_classes:
        raise ConfigError(
            "dataset.num_classes", f"is {num_classes}, but the {settings.name} files hold {found} classes"
        )
    return partition(settings, train, test, num_classes)


def check_image_shape(shape: tuple[int, ...], in_channels: int, image_size: int) -> None:
    """Raise ``ConfigError`` naming ``dataset.in_channels`` or ``dataset.image_size`` if the
    images a run loaded, (C, H, W) ``shape``, are not what its config says (the target is built
    from the config: a mismatch would otherwise surface as a shape error inside every fit)."""
    channels, height, width = shape
    if channels != in_channels:
        raise ConfigError("dataset.in_channels", f"is {in_channels}, but the images have {channels} channels")
    if (height, width) != (image_size, image_size):
        raise ConfigError("dataset.image_size", f"is {image_size}, but the images are {height} x {width}")


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) → float32, as torchvision's ToTensor then Normalize.

    ``mean`` and ``std`` have shape (1, C, 1, 1).
    """
    return images.float().div_(255.0).sub_(mean).div_(std)
