from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from pfedhn import config
from pfedhn.config import compose
from pfedhn.dataset import (
    SPLITS,
    assign_classes,
    load_dataset,
    load_federated,
    normalize,
    partition,
)
from pfedhn.errors import ConfigError, DataError
from tests.conftest import tiny_overrides, write_cifar10_batches


def federated(data_root: Path, *extra: str):
    cfg = compose(tiny_overrides(data_root) + list(extra))
    return cfg, load_federated(config.data_settings(cfg), cfg.dataset.num_classes)


def test_mnist_reads_torchvision_layout(data_root: Path) -> None:
    train, test = load_dataset("mnist", data_root, download=False)
    assert train.images.shape == (400, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (200, 1, 28, 28)
    assert sorted(train.labels.unique().tolist()) == list(range(10))


def test_cifar_reads_npz_and_torchvision_batches(data_root: Path, tmp_path: Path, monkeypatch) -> None:
    from_npz, _ = load_dataset("cifar10", data_root, download=False)
    arrays = write_cifar10_batches(tmp_path)
    # torchvision checks the official files' md5 sums; the tiny files have others.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
    train, test = load_dataset("cifar10", tmp_path, download=False)
    assert train.images.shape == (400, 3, 32, 32)
    assert torch.equal(train.images, torch.from_numpy(arrays["x_train"]).permute(0, 3, 1, 2))
    assert torch.equal(test.labels, torch.from_numpy(arrays["y_test"]))
    assert torch.equal(from_npz.images, train.images)  # both layouts give the same pixels


def test_normalize_matches_torchvision_transforms() -> None:
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    mean, std = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]
    expected = torchvision.transforms.Normalize(mean, std)(
        torchvision.transforms.ToTensor()(image.permute(1, 2, 0).numpy())
    )
    got = normalize(image[None], torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1))[0]
    torch.testing.assert_close(got, expected)


def test_each_client_gets_its_classes_in_every_split(data_root: Path) -> None:
    cfg, data = federated(data_root)
    for client, classes in enumerate(data.assignment.classes):
        assert len(classes) == len(set(classes)) == cfg.dataset.classes_per_client
        for split in SPLITS:
            _, labels = data.client_split(client, split)
            assert set(labels.tolist()) == set(classes), (client, split)


def test_slices_follow_the_proportions(data_root: Path) -> None:
    _, data = federated(data_root)
    for split in SPLITS:
        labels = data.splits[split].labels
        class_size = torch.bincount(labels, minlength=10)
        for client, (classes, shares) in enumerate(zip(data.assignment.classes, data.assignment.proportions)):
            _, mine = data.client_split(client, split)
            for c, p in zip(classes, shares):
                assert int((mine == c).sum()) == int(int(class_size[c]) * p)


def test_proportions_are_normalized_draws_from_the_range() -> None:
    rng = np.random.default_rng(0)
    assignment = assign_classes(num_clients=50, num_classes=10, classes_per_client=2, rng=rng)
    slots = 2 * 50 // 10 + 1
    flat = [p for shares in assignment.proportions for p in shares]
    # normalized over `slots` draws in [0.4, 0.6]: each share lies in [0.4 / (0.4 + (slots-1) 0.6), ...]
    low, high = 0.4 / (0.4 + (slots - 1) * 0.6), 0.6 / (0.6 + (slots - 1) * 0.4)
    assert all(low <= p <= high for p in flat)
    # each class serves exactly slots - 1 clients: the greedy rule balances them
    counts = np.bincount([c for classes in assignment.classes for c in classes], minlength=10)
    assert counts.tolist() == [slots - 1] * 10


def test_no_sample_goes_to_two_clients(data_root: Path) -> None:
    _, data = federated(data_root)
    for split in SPLITS:
        every = torch.cat(data.client_indices[split])
        assert len(every) == len(torch.unique(every))


def test_validation_is_held_out_of_training(data_root: Path) -> None:
    _, data = federated(data_root)
    assert len(data.splits["val"]) == 100 and len(data.splits["train"]) == 300


def test_partition_is_determined_by_the_seed(data_root: Path) -> None:
    cfg = compose(tiny_overrides(data_root))
    train, test = load_dataset("mnist", data_root, download=False)
    a = partition(config.data_settings(cfg), train, test, 10)
    b = partition(config.data_settings(cfg), train, test, 10)
    cfg.seed = 7
    c = partition(config.data_settings(cfg), train, test, 10)
    for split in SPLITS:
        assert all(torch.equal(x, y) for x, y in zip(a.client_indices[split], b.client_indices[split]))
    assert not all(torch.equal(x, y) for x, y in zip(a.client_indices["train"], c.client_indices["train"]))


def test_too_many_clients_is_a_config_error(data_root: Path) -> None:
    cfg = compose(tiny_overrides(data_root, num_clients=400))
    with pytest.raises(ConfigError, match="num_clients: 400 clients cannot be split"):
        load_federated(config.data_settings(cfg), 10)


def test_more_classes_per_client_than_classes(data_root: Path) -> None:
    with pytest.raises(ConfigError, match="dataset.classes_per_client"):
        federated(data_root, "dataset.classes_per_client=11")


def test_missing_files_name_the_expected_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar10\.npz or .*cifar-10-batches-py.*dataset\.root"):
        load_dataset("cifar10", tmp_path, download=False)
