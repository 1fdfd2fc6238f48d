"""One client's data on disk, for processes that serve a single message.

Flower's Deployment Engine starts a fresh ``flwr-clientapp`` process for every
message; loading and partitioning the whole dataset there (and importing
torchvision to read MNIST) costs more than the message's work. The first such
process of a machine writes every client's splits to
``<dataset.root>/.pfedhn-cache/<key>/client-<i>.npz`` (``key`` hashes everything
that determines the partition); later ones read only their own file. Writes are
atomic (temporary file, then rename), so concurrent first processes are safe.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from pfedhn.dataset import SPLITS, DataSettings, FederatedData, load_federated

log = logging.getLogger("pfedhn")
CACHE_VERSION = 1  # bump when the partitioner's output changes


@dataclasses.dataclass(frozen=True)
class CachedClient:
    """The splits of one client (``partition``), with ``FederatedData.client_split``'s interface."""

    partition: int
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of every image."""
        return tuple(self.splits["train"][0].shape[1:])

    def client_split(self, client: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)``: uint8 (n, C, H, W) and int64 (n,)."""
        if client != self.partition:
            raise ValueError(f"this process holds the data of partition {self.partition}, not {client}")
        return self.splits[split]


def cache_directory(settings: DataSettings) -> Path:
    """Where the partition of ``settings`` is cached: under its data root, keyed by all that shapes it."""
    shape = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("root", "download")}
    key = hashlib.sha256(json.dumps({**shape, "version": CACHE_VERSION}, sort_keys=True).encode()).hexdigest()[:16]
    return Path(settings.root).expanduser().resolve() / ".pfedhn-cache" / key


@functools.lru_cache(maxsize=8)
def cached_client(settings: DataSettings, num_classes: int, partition: int) -> CachedClient:
    """Client ``partition``'s splits, read from the cache (written first if absent)."""
    path = cache_directory(settings) / f"client-{partition}.npz"
    if not path.is_file():
        data = load_federated(settings, num_classes)
        try:
            write_cache(data, path.parent)
        except OSError as error:  # a read-only data root: work from memory, say so
            log.warning("could not cache the partition under %s (%s); loading the dataset each time", path, error)
            return CachedClient(partition, {s: data.client_split(partition, s) for s in SPLITS})
    with np.load(path) as arrays:
        splits = {s: (torch.from_numpy(arrays[f"{s}_images"]), torch.from_numpy(arrays[f"{s}_labels"])) for s in SPLITS}
    return CachedClient(partition, splits)


def write_cache(data: FederatedData, directory: Path) -> None:
    """Every client's splits, one ``client-<i>.npz`` each, written atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    for client in range(len(data.client_indices["train"])):
        arrays = {}
        for split in SPLITS:
            images, labels = data.client_split(client, split)
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = images.numpy(), labels.numpy()
        tmp = directory / f"client-{client}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, directory / f"client-{client}.npz")
