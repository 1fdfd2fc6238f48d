from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from pfedhn.client_app import PersonalizedClient
from pfedhn.client_store import STORE, ClientStore
from pfedhn.config import compose
from pfedhn.methods import METHODS, build_strategy, spec_of
from pfedhn.model import parameter_shapes
from pfedhn.protocol import Keeping
from pfedhn.train import batch_indices
from tests.conftest import message as driver_message
from tests.conftest import tiny_overrides


def setup(data_root: Path, *extra: str):
    cfg = compose(tiny_overrides(data_root) + list(extra))
    strategy = build_strategy(cfg, progress=False)
    return cfg, strategy


def message(strategy, client: int, server_round: int = 1, training: bool = True):
    return driver_message(strategy, client, server_round, training)


def test_fit_returns_the_change_of_every_received_tensor(data_root: Path) -> None:
    cfg, strategy = setup(data_root)
    client = PersonalizedClient(1, cfg, RecordDict())
    sent, config = message(strategy, 1)
    delta, num_examples, metrics = client.fit(sent, config)
    assert [d.shape for d in delta] == [s.shape for s in sent]
    assert any(np.abs(d).sum() > 0 for d in delta)
    assert num_examples == len(client.data.client_split(1, "train")[1])
    assert metrics["partition_id"] == 1


def test_local_training_is_determined_by_seed_client_and_round(data_root: Path) -> None:
    cfg, strategy = setup(data_root)
    sent, config = message(strategy, 0)
    fit = lambda r: PersonalizedClient(0, cfg, RecordDict()).fit(sent, {**config, "server_round": r})[0]
    first, again, other_round = fit(1), fit(1), fit(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other_round))


def test_a_client_refuses_another_partitions_model(data_root: Path) -> None:
    cfg, strategy = setup(data_root)
    client = PersonalizedClient(2, cfg, RecordDict())
    with pytest.raises(RuntimeError, match="partition 2 received the model of partition 3"):
        client.fit(*message(strategy, 3))


def test_a_client_on_images_its_config_does_not_describe_names_the_key(data_root: Path) -> None:
    """On a node (``flwr run``) no server has loaded the data first: the client says which key."""
    from pfedhn.errors import ConfigError

    for override, key in (
        ("dataset.image_size=32", "dataset.image_size"),
        ("dataset.in_channels=3", "dataset.in_channels"),
    ):
        with pytest.raises(ConfigError, match=f"{key}: is "):
            PersonalizedClient(0, compose([*tiny_overrides(data_root), override]), RecordDict())


def test_personal_head_stays_on_the_client_and_persists(data_root: Path) -> None:
    cfg, strategy = setup(data_root, "method=pfedhn_pc")
    state = RecordDict()
    client = PersonalizedClient(0, cfg, state)
    sent, config = message(strategy, 0)
    body_names = list(n for n in parameter_shapes(client.spec) if not n.startswith("head."))
    assert config["sent"] == ",".join(body_names) and not any(n.startswith("head.") for n in body_names)
    assert config["keep"] == "head.weight,head.bias"

    delta, _, _ = client.fit(sent, config)
    assert len(delta) == len(body_names)  # what goes back holds no head tensor
    head_after_one = state[STORE].to_torch_state_dict()
    assert set(head_after_one) == {"head.weight", "head.bias", "momentum.head.weight", "momentum.head.bias"}
    assert client.get_properties({})["kept"] == ",".join(head_after_one)

    # a new client object for the same node (as Flower builds one per message) resumes the head
    PersonalizedClient(0, cfg, state).fit(sent, {**config, "server_round": 2})
    head_after_two = state[STORE].to_torch_state_dict()
    assert not torch.equal(head_after_one["head.weight"], head_after_two["head.weight"])


def test_evaluation_leaves_the_store_as_it_was(data_root: Path) -> None:
    cfg, strategy = setup(data_root, "method=pfedhn_pc")
    state = RecordDict()
    PersonalizedClient(0, cfg, state).evaluate(*message(strategy, 0, training=False))
    assert STORE not in state


def test_a_parameter_neither_sent_nor_kept_is_refused(data_root: Path) -> None:
    cfg, strategy = setup(data_root)
    sent, config = message(strategy, 0)
    with pytest.raises(RuntimeError, match=r"neither sent nor kept: \['head.bias'\]"):
        PersonalizedClient(0, cfg, RecordDict()).fit(sent[:-1], {**config, "sent": config["sent"].rsplit(",", 1)[0]})


def test_evaluate_counts_every_validation_and_test_sample(data_root: Path) -> None:
    cfg, strategy = setup(data_root)
    client = PersonalizedClient(3, cfg, RecordDict())
    loss, count, metrics = client.evaluate(*message(strategy, 3, training=False))
    for split in ("val", "test"):
        assert metrics[f"{split}_count"] == len(client.data.client_split(3, split)[1])
        assert 0 <= metrics[f"{split}_correct"] <= metrics[f"{split}_count"]
    assert count == metrics["test_count"] and loss == pytest.approx(metrics["test_loss_sum"] / count)


def test_epochs_mode_visits_every_sample_once_per_epoch() -> None:
    batches = batch_indices(10, 4, steps=50, epochs=2, generator=torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    for epoch in (batches[:3], batches[3:]):
        assert sorted(torch.cat(epoch).tolist()) == list(range(10))
    steps = batch_indices(10, 4, steps=5, epochs=None, generator=torch.Generator().manual_seed(0))
    assert [len(b) for b in steps] == [4] * 5 and all(len(set(b.tolist())) == 4 for b in steps)


def test_evaluating_splits_in_one_pass_equals_one_split_at_a_time(data_root: Path) -> None:
    """The client evaluates validation and test together (``evaluate_splits``): the same
    counts and correct, the loss up to float rounding, whatever the chunk size."""
    from pfedhn import config
    from pfedhn.dataset import load_federated
    from pfedhn.model import TargetCNN
    from pfedhn.train import evaluate_splits

    cfg = compose(tiny_overrides(data_root))
    data = load_federated(config.data_settings(cfg), cfg.dataset.num_classes)
    model, norm = TargetCNN(config.model_spec(cfg)), config.normalization(cfg)
    splits = {split: data.client_split(1, split) for split in ("val", "test")}
    for chunk in (3, 1000):
        together = evaluate_splits(model, splits, norm, chunk)
        for split, (images, labels) in splits.items():
            alone = evaluate_splits(model, {split: (images, labels)}, norm, 1000)[split]
            assert (together[split].correct, together[split].count) == (alone.correct, alone.count)
            assert together[split].loss_sum == pytest.approx(alone.loss_sum, rel=1e-5)


def test_the_store_takes_only_what_its_keeping_declares() -> None:
    """``ClientStore.save`` keeps the named parameters, their momentum and the objective's
    state under ``Keeping.personal``; objective state outside that prefix is refused."""
    head = torch.nn.Linear(2, 1)
    named = {f"head.{n}": p for n, p in head.named_parameters()}
    momentum = torch.optim.SGD(named.values(), lr=0.1, momentum=0.9)
    head(torch.ones(1, 2)).sum().backward()
    momentum.step()
    personal = {"personal.head.weight": torch.zeros(1, 2)}
    store = ClientStore(RecordDict(), Keeping(personal="personal."), None, 0)
    store.save(named, ["head.weight"], momentum, personal)
    assert list(store.tensors()) == ["head.weight", "personal.head.weight", "momentum.head.weight"]
    (name, value), *others = store.personal_model().items()
    assert name == "head.weight" and torch.equal(value, personal["personal.head.weight"]) and not others
    with pytest.raises(RuntimeError, match="outside its Keeping.personal prefix"):
        ClientStore(RecordDict(), Keeping(), None, 0).save(named, [], None, personal)


def test_a_method_whose_clients_keep_a_personal_model_must_checkpoint_it(data_root: Path, monkeypatch) -> None:
    """``Keeping.personal`` without ``Method.client_state`` would leave θ_i out of checkpoints: refused."""
    cfg = compose(tiny_overrides(data_root) + ["method=pfedme"])
    spec = spec_of(cfg)

    def build(cfg, schedule):
        method = spec.build(cfg, schedule)
        method.client_state = False
        return method

    monkeypatch.setitem(METHODS, cfg.method.strategy, dataclasses.replace(spec, build=build))
    with pytest.raises(ValueError, match="must set client_state"):
        build_strategy(cfg, progress=False)
