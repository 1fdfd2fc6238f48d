"""``dataset.split=official|official_pc`` draws the official pFedHN code's split for a seed.

The expected values in ``fixtures/official_split.json`` were made once by running the
official functions on this tiny data (the fixture's ``made_by`` says how).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pfedhn import config, validation
from pfedhn.config import compose
from pfedhn.dataset import SPLIT_STREAMS, load_dataset, load_federated
from pfedhn.errors import ConfigError
from tests.conftest import tiny_overrides

CASES = json.loads((Path(__file__).parent / "fixtures" / "official_split.json").read_text())["cases"]
RULE = {"pfedhn": "official", "pfedhn_pc": "official_pc"}  # official trainer -> our split rule


def case_id(case: dict) -> str:
    return f"{case['dataset']}-n{case['num_clients']}-c{case['classes_per_client']}-s{case['seed']}-{case['trainer']}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_clients_get_the_official_classes_and_samples(data_root: Path, case: dict) -> None:
    cfg = compose(
        tiny_overrides(data_root, case["dataset"], case["num_clients"])
        + [
            f"seed={case['seed']}",
            f"dataset.split={RULE[case['trainer']]}",
            f"dataset.val_size={case['val_size']}",
            f"dataset.classes_per_client={case['classes_per_client']}",
        ]
    )
    settings = config.data_settings(cfg)
    data = load_federated(settings, cfg.dataset.num_classes)
    assert data.assignment.classes == case["classes"]
    assert {s: [len(i) for i in data.client_indices[s]] for s in case["sizes"]} == case["sizes"]
    # the same samples: positions mapped back to indices into the official train / test arrays
    train, _ = load_dataset(settings.name, settings.root, settings.download)
    streams = SPLIT_STREAMS[settings.split](settings, len(train), cfg.dataset.num_classes)
    orders = {"train": streams.train_order, "val": streams.val_order}
    indices = [
        [sorted(int(i) for i in (orders[s][client] if s in orders else client)) for client in data.client_indices[s]]
        for s in ("train", "val", "test")
    ]
    assert hashlib.sha256(json.dumps(indices).encode()).hexdigest() == case["indices_sha256"]


def test_the_official_rule_keeps_a_class_drawn_twice(data_root: Path) -> None:
    """With 4 classes of 10 per client a client can draw a class twice (the official greedy
    rule); it then holds two disjoint slices of it, where the default rule gives 4 distinct."""
    overrides = tiny_overrides(data_root, "cifar10", 3) + ["seed=8", "dataset.classes_per_client=4"]
    official = compose(overrides + ["dataset.split=official"])
    data = load_federated(config.data_settings(official), 10)
    twice = [classes for classes in data.assignment.classes if len(set(classes)) < len(classes)]
    assert twice == [[5, 4, 6, 4]]
    client = data.assignment.classes.index([5, 4, 6, 4])
    for split in ("train", "val", "test"):
        index = data.client_indices[split][client]
        assert len(index) == len(set(index.tolist()))  # two slices, no sample twice
    default = load_federated(config.data_settings(compose(overrides)), 10)
    assert all(len(set(classes)) == 4 for classes in default.assignment.classes)


def test_an_unknown_split_rule_is_refused_naming_the_key(data_root: Path) -> None:
    with pytest.raises(ConfigError, match="dataset.split"):
        validation.validate(compose(tiny_overrides(data_root) + ["dataset.split=paper"]))
