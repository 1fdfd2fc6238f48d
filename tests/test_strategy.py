from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from flwr.common import Code, FitRes, GetPropertiesRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy

from pfedhn.config import compose
from pfedhn.methods import build_strategy
from pfedhn.methods.pfedla import PFedLA
from pfedhn.schedule import is_eval_round
from tests.conftest import tiny_overrides

OK = Status(code=Code.OK, message="")


class PartitionProxy(ClientProxy):
    """A client that only answers who it is."""

    def __init__(self, node_id: int, partition_id: int) -> None:
        super().__init__(cid=str(node_id))
        self.node_id = node_id
        self.partition_id = partition_id

    def get_properties(self, ins, timeout, group_id):
        return GetPropertiesRes(status=OK, properties={"partition_id": self.partition_id})

    def get_parameters(self, ins, timeout, group_id):
        raise NotImplementedError

    def fit(self, ins, timeout, group_id):
        raise NotImplementedError

    def evaluate(self, ins, timeout, group_id):
        raise NotImplementedError

    def reconnect(self, ins, timeout, group_id):
        raise NotImplementedError


def constant_delta_reply(proxy: PartitionProxy, ins) -> FitRes:
    """The reply of a client whose training moved every weight by 0.01."""
    delta = [0.01 * np.ones_like(a) for a in parameters_to_ndarrays(ins.parameters)]
    metrics = {"partition_id": proxy.partition_id}
    return FitRes(status=OK, parameters=ndarrays_to_parameters(delta), num_examples=1, metrics=metrics)


def setup(data_root: Path, clients_per_round: int = 2, method: str = "pfedhn"):
    cfg = compose(
        tiny_overrides(data_root, num_clients=6)
        + ["num_rounds=10", f"clients_per_round={clients_per_round}", "eval_every=3", f"method={method}"]
    )
    strategy = build_strategy(cfg, progress=False)
    manager = SimpleClientManager()
    rng = np.random.default_rng(1)
    # random node ids, registered in an order unrelated to the partitions
    for partition in rng.permutation(6):
        manager.register(PartitionProxy(int(rng.integers(1, 2**62)), int(partition)))
    return strategy, manager


@pytest.mark.parametrize("method", ["pfedhn", "pfedhn_pc", "pfedla", "heurpfedla"])
def test_each_client_receives_the_model_of_its_own_partition(data_root: Path, method: str) -> None:
    strategy, manager = setup(data_root, method=method)
    if isinstance(strategy.method, PFedLA):  # all clients start from one model: make each its own
        for c in range(6):
            strategy.method.models.set(c, {name: t + c for name, t in strategy.method.models.of(c).items()})
    firsts = {}
    for server_round in range(1, 4):
        for proxy, ins in strategy.configure_fit(server_round, None, manager):
            assert ins.config["partition_id"] == proxy.partition_id
            expected = strategy.method.client_model(proxy.partition_id, server_round, training=True).arrays
            received = parameters_to_ndarrays(ins.parameters)
            assert ins.config["sent"] == ",".join(expected) and len(received) == len(expected)
            assert all(np.array_equal(a, b) for a, b in zip(received, expected.values()))
            firsts[proxy.partition_id] = received[0]
    assert len({a.tobytes() for a in firsts.values()}) == len(firsts) > 1  # each its own


def test_evaluation_reaches_every_client_with_its_own_model(data_root: Path) -> None:
    strategy, manager = setup(data_root)
    assert strategy.configure_evaluate(2, None, manager) == []
    pairs = strategy.configure_evaluate(4, None, manager)
    assert sorted(p.partition_id for p, _ in pairs) == list(range(6))
    assert all(ins.config["partition_id"] == p.partition_id for p, ins in pairs)


def test_a_reply_from_the_wrong_client_is_refused(data_root: Path) -> None:
    strategy, manager = setup(data_root, clients_per_round=1)
    ((proxy, ins),) = strategy.configure_fit(1, None, manager)
    before = [p.detach().clone() for p in strategy.method.hypernetwork.parameters()]
    liar = {"partition_id": (proxy.partition_id + 1) % 6}
    res = FitRes(status=OK, parameters=ins.parameters, num_examples=1, metrics=liar)
    strategy.aggregate_fit(1, [(proxy, res)], [])
    assert all(p.detach().equal(b) for p, b in zip(strategy.method.hypernetwork.parameters(), before))
    (record,) = strategy.history.failures
    assert record["clients"] == [proxy.partition_id] and "came from another client" in record["reasons"][0]


def test_aggregate_fit_steps_the_hypernetwork(data_root: Path) -> None:
    strategy, manager = setup(data_root, clients_per_round=1)
    ((proxy, ins),) = strategy.configure_fit(1, None, manager)
    before = [p.detach().clone() for p in strategy.method.hypernetwork.parameters()]
    res = constant_delta_reply(proxy, ins)
    strategy.aggregate_fit(1, [(proxy, res)], [])
    assert any(not p.detach().equal(b) for p, b in zip(strategy.method.hypernetwork.parameters(), before))
    assert strategy.history.bytes_received == sum(len(t) for t in res.parameters.tensors)


def test_eval_schedule_is_the_official_one() -> None:
    assert [r for r in range(1, 101) if is_eval_round(r, 30, (100,))] == [1, 31, 61, 91, 100]
    assert [r for r in range(1, 101) if is_eval_round(r, 30, (50, 100))] == [1, 31, 50, 61, 91, 100]


def test_novel_clients_sit_out_training_then_only_their_embeddings_learn(data_root: Path) -> None:
    cfg = compose(
        tiny_overrides(data_root, num_clients=6) + ["num_rounds=4", "method.novel.clients=2", "method.novel.rounds=3"]
    )
    strategy = build_strategy(cfg, progress=False)
    manager = SimpleClientManager()
    for partition in range(6):
        manager.register(PartitionProxy(100 + partition, partition))
    assert strategy.num_rounds == 7 and strategy.schedule.novel == [4, 5]
    for server_round in range(1, 8):
        ((proxy, ins),) = strategy.configure_fit(server_round, None, manager)
        assert (proxy.partition_id in (4, 5)) == (server_round >= 5)
        body = [p.detach().clone() for p in strategy.method.hypernetwork.mlp.parameters()]
        table = strategy.method.hypernetwork.embeddings.weight.detach().clone()
        res = constant_delta_reply(proxy, ins)
        strategy.aggregate_fit(server_round, [(proxy, res)], [])
        mlp_moved = any(not p.detach().equal(b) for p, b in zip(strategy.method.hypernetwork.mlp.parameters(), body))
        rows_moved = (
            ((strategy.method.hypernetwork.embeddings.weight.detach() - table).abs().sum(1) > 0)
            .nonzero()
            .flatten()
            .tolist()
        )
        if server_round >= 5:  # frozen hypernetwork; novel rows only
            assert not mlp_moved and set(rows_moved) <= {4, 5} and proxy.partition_id in rows_moved
        else:
            assert mlp_moved


@pytest.mark.parametrize(("novel_lr", "expected"), [("null", 0.01), ("0.3", 0.3)])
def test_the_novel_phase_has_its_own_embedding_rate(data_root: Path, novel_lr: str, expected: float) -> None:
    cfg = compose(
        tiny_overrides(data_root, num_clients=6)
        + ["method.novel.clients=2", "method.novel.rounds=3", f"method.novel.lr={novel_lr}"]
    )
    strategy = build_strategy(cfg, progress=False)
    assert strategy.method.novel_optimizer.param_groups[0]["lr"] == expected
    assert strategy.method.optimizer.param_groups[0]["lr"] == 0.01  # the training phase's is untouched


def test_a_pfedhn_with_novel_rounds_and_no_novel_optimizer_is_refused_when_built(data_root: Path) -> None:
    from pfedhn.methods.pfedhn import PFedHN

    cfg = compose(tiny_overrides(data_root, num_clients=6) + ["method.novel.clients=2", "method.novel.rounds=3"])
    method = build_strategy(cfg, progress=False).method
    with pytest.raises(ValueError, match="novel-client rounds needs a novel_optimizer"):
        PFedHN(method.hypernetwork, method.optimizer, method.schedule, grad_clip=50.0)


class RegisteringOnRequest(SimpleClientManager):
    """Flower's ServerApp compat layer: the SuperNodes are registered when the manager is asked
    for them (``num_available``, ``all``, ``sample``), else only by a loop every 5 s."""

    def __init__(self, proxies: list[ClientProxy]) -> None:
        super().__init__()
        self.waiting = proxies

    def num_available(self) -> int:
        while self.waiting:
            self.register(self.waiting.pop())
        return super().num_available()

    def all(self) -> dict[str, ClientProxy]:
        self.num_available()
        return super().all()


def test_the_first_round_does_not_wait_for_flowers_registration_loop(data_root: Path) -> None:
    cfg = compose(tiny_overrides(data_root, num_clients=6) + ["faults.connect_timeout=20"])
    strategy = build_strategy(cfg, progress=False)
    manager = RegisteringOnRequest([PartitionProxy(100 + p, p) for p in range(6)])
    started = time.perf_counter()
    assert sorted(strategy.router.connect(manager)) == list(range(6))
    assert time.perf_counter() - started < 10  # waiting for a registration would take the 20 s timeout
