"""The reference rows (Local, FedAvg(+FT), FedPer, LG-FedAvg, Per-FedAvg, pFedMe): each test
checks one property the method is defined by, through the real client and strategy."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flwr.app import RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAvg
from torch import nn

from pfedhn.client_app import ADAPT_STREAM, TRAIN_STREAM, PersonalizedClient
from pfedhn.client_store import STORE
from pfedhn.config import compose, model_spec, normalization
from pfedhn.dataset import normalize
from pfedhn.global_average import GlobalAverage, initial_weights
from pfedhn.methods import build_strategy
from pfedhn.methods.perfedavg import PerFedAvgObjective
from pfedhn.methods.pfedme import PFedMeObjective
from pfedhn.model import TargetCNN
from pfedhn.train import batch_indices, evaluate_splits, train_local
from pfedhn.utils import derive_seed
from tests.conftest import instruction, message, tiny_overrides
from tests.test_strategy import PartitionProxy

NUM_CLIENTS = 4
HEAD = ["head.weight", "head.bias"]


def setup(data_root: Path, method: str, *extra: str) -> tuple[object, GlobalAverage]:
    cfg = compose(
        tiny_overrides(data_root, num_clients=NUM_CLIENTS) + [f"method={method}", "clients_per_round=2", *extra]
    )
    return cfg, build_strategy(cfg, progress=False)


def fit(cfg, strategy: GlobalAverage, client: int, server_round: int, state: RecordDict):
    """One training round of ``client`` through the instruction Flower would send: (sent names,
    bytes sent, named returned deltas, bytes returned)."""
    parameters, config = instruction(strategy, client, server_round, training=True)
    reply, num_examples, _ = PersonalizedClient(client, cfg, state).fit(parameters_to_ndarrays(parameters), config)
    returned = sum(len(t) for t in ndarrays_to_parameters(reply).tensors)
    sent = sum(len(t) for t in parameters.tensors)
    return config["sent"].split(",") if config["sent"] else [], sent, strategy.outbox.reply(client, reply), returned


def direct_round(cfg, model: nn.Module, client: int, server_round: int, data) -> None:
    """A round of local SGD written out: fresh client optimizer, the client's seeded batches."""
    c = cfg.client
    images, labels = data.client_split(client, "train")
    generator = torch.Generator().manual_seed(derive_seed(cfg.seed, TRAIN_STREAM, client, server_round))
    batches = batch_indices(len(labels), c.batch_size, c.inner_steps, None, generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    norm = normalization(cfg)
    for batch in batches:
        optimizer.zero_grad()
        x = (images[batch].float() / 255 - norm.mean) / norm.std
        F.cross_entropy(model(x), labels[batch]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        optimizer.step()


def test_local_sends_nothing_and_equals_training_alone(data_root: Path) -> None:
    cfg, strategy = setup(data_root, "local")
    state = RecordDict()
    client = PersonalizedClient(1, cfg, state)
    alone = TargetCNN(model_spec(cfg))
    alone.load_state_dict(initial_weights(cfg))
    for server_round in (1, 2, 3):
        sent_names, sent, deltas, returned = fit(cfg, strategy, 1, server_round, state)
        assert sent_names == [] and sent == 0 and returned == 0 and deltas == {}
        strategy.method.apply_updates(server_round, {1: deltas}, {1: 10})
        direct_round(cfg, alone, 1, server_round, client.data)
    kept = state[STORE].to_torch_state_dict()
    for name, param in alone.named_parameters():
        torch.testing.assert_close(kept[name], param.detach(), rtol=0, atol=1e-6)
    assert strategy.history.bytes_sent == 0


def test_fedavg_aggregate_equals_flowers_fedavg(data_root: Path) -> None:
    cfg, strategy = setup(data_root, "fedavg")
    before = {name: array.copy() for name, array in strategy.method.weights.items()}
    rng = np.random.default_rng(0)
    counts = {0: 17, 2: 5, 3: 40}
    deltas = {c: {n: rng.normal(size=a.shape).astype(np.float32) for n, a in before.items()} for c in counts}
    strategy.method.apply_updates(1, deltas, counts)

    ok = Status(code=Code.OK, message="")
    results = [
        (
            PartitionProxy(c, c),
            FitRes(ok, ndarrays_to_parameters([before[n] + deltas[c][n] for n in before]), counts[c], {}),
        )
        for c in counts
    ]
    flower, _ = FedAvg().aggregate_fit(1, results, [])
    for name, expected in zip(before, parameters_to_ndarrays(flower)):
        np.testing.assert_allclose(strategy.method.weights[name], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("method", "local"), [("fedper", HEAD), ("lgfedavg", None)])
def test_the_local_part_is_never_sent_either_way(data_root: Path, method: str, local: list[str] | None) -> None:
    cfg, strategy = setup(data_root, method)
    names = list(initial_weights(cfg))
    local = local if local is not None else [n for n in names if n not in HEAD]  # LG-FedAvg: the body
    shared = [n for n in names if n not in local]
    state = RecordDict()
    for server_round in (1, 2):
        sent_names, sent, deltas, returned = fit(cfg, strategy, 0, server_round, state)
        assert sent_names == shared and list(deltas) == shared
        size = sum(strategy.method.weights[n].nbytes for n in shared)
        headers = 200 * len(shared)  # .npy headers; any local tensor is larger
        assert size < sent < size + headers and size < returned < size + headers
        strategy.method.apply_updates(server_round, {0: deltas}, {0: 1})
        kept = state[STORE].to_torch_state_dict()
        assert sorted(kept) == sorted(local)
        if server_round == 1:
            first = {n: t.clone() for n, t in kept.items()}
    assert all(not torch.equal(first[n], kept[n]) for n in local)  # it trains and persists
    evaluation, _ = instruction(strategy, 0, 2, training=False)
    assert len(evaluation.tensors) == len(shared)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def tiny_batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)
    ]


def loss_on(model: nn.Module, batch) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


@pytest.mark.parametrize("variant", ["fo", "hf"])
def test_perfedavg_step_matches_a_direct_implementation(variant: str) -> None:
    alpha, beta = 0.3, 0.1
    batches = tiny_batches(3)
    model, direct = tiny_model(), tiny_model()
    objective = PerFedAvgObjective(alpha=alpha, variant=variant, delta=1e-5)
    objective.step(
        model,
        batches[: objective.batches_per_step],
        [torch.optim.SGD(model.parameters(), lr=beta)],
        list(model.parameters()),
        1e9,
    )

    # direct: w̃ by an SGD step on a copy, g at w̃, the exact Hessian-vector product at w
    adapted = copy.deepcopy(direct)
    inner = torch.optim.SGD(adapted.parameters(), lr=alpha)
    loss_on(adapted, batches[0]).backward()
    inner.step()
    adapted.zero_grad()
    loss_on(adapted, batches[1]).backward()
    g = [p.grad.clone() for p in adapted.parameters()]
    if variant == "hf":
        params = list(direct.parameters())
        grads = torch.autograd.grad(loss_on(direct, batches[2]), params, create_graph=True)
        hvp = torch.autograd.grad(grads, params, grad_outputs=g)
        g = [gi - alpha * hi for gi, hi in zip(g, hvp)]
    with torch.no_grad():
        for p, gi in zip(direct.parameters(), g):
            p -= beta * gi
    for a, b in zip(model.parameters(), direct.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize(("variant", "batch_size", "dropped"), [("fo", 7, 1), ("hf", 8, 2)])
def test_perfedavg_in_epochs_mode_cuts_the_epochs_batches_into_whole_steps(
    data_root: Path, variant: str, batch_size: int, dropped: int
) -> None:
    """pFedLA's setting counts local work in epochs: Per-FedAvg's steps take an epoch's batches
    in order, 2 (FO) or 3 (HF) each, and the trailing ones that make no whole step are left out."""
    overrides = [f"method.variant={variant}", "client.epochs=1", f"client.batch_size={batch_size}"]
    cfg, strategy = setup(data_root, "perfedavg", *overrides)
    parameters, config = instruction(strategy, 1, 3, training=True)
    sent = dict(zip(config["sent"].split(","), parameters_to_ndarrays(parameters)))
    state = RecordDict()
    _, _, returned, _ = fit(cfg, strategy, 1, 3, state)

    c, norm = cfg.client, normalization(cfg)
    model = TargetCNN(model_spec(cfg))
    model.load_state_dict({name: torch.tensor(array) for name, array in sent.items()})
    images, labels = PersonalizedClient(1, cfg, RecordDict()).data.client_split(1, "train")
    generator = torch.Generator().manual_seed(derive_seed(cfg.seed, TRAIN_STREAM, 1, 3))
    batches = batch_indices(len(labels), c.batch_size, None, 1, generator)
    objective = PerFedAvgObjective(alpha=cfg.method.alpha, variant=variant, delta=cfg.method.delta)
    assert len(batches) % objective.batches_per_step == dropped
    optimizer = torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    for start in range(0, len(batches) - dropped, objective.batches_per_step):
        step = [
            (normalize(images[b], norm.mean, norm.std), labels[b])
            for b in batches[start : start + objective.batches_per_step]
        ]
        objective.step(model, step, [optimizer], list(model.parameters()), c.grad_clip)
    for name, parameter in model.named_parameters():
        expected = parameter.detach().numpy() - sent[name]
        np.testing.assert_allclose(returned[name], expected, rtol=1e-4, atol=1e-6, err_msg=name)


def test_perfedavg_hf_differs_from_fo() -> None:
    """The Hessian term is not silently dropped."""
    batches = tiny_batches(3)
    moved = []
    for variant in ("fo", "hf"):
        model = tiny_model()
        obj = PerFedAvgObjective(alpha=0.3, variant=variant, delta=1e-5)
        obj.step(model, batches[: obj.batches_per_step], [torch.optim.SGD(model.parameters(), lr=0.1)], [], 1e9)
        moved.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert (moved[0] - moved[1]).abs().max() > 1e-4


def test_pfedme_step_matches_the_official_update() -> None:
    """The official code's loop (``UserpFedMe.train`` with ``pFedMeOptimizer``), written out with
    a second model holding θ: K steps of θ ← θ − η_p(∇f(θ) + λ(θ − w) + μθ), then w ← w − ηλ(w − θ)."""
    lamda, k, plr, lr, mu = 15.0, 5, 0.01, 0.02, 1e-3
    batches = tiny_batches(2)
    model = tiny_model()
    objective = PFedMeObjective(model, lamda=lamda, inner_steps=k, personal_lr=plr, lr=lr, mu=mu)
    for batch in batches:
        objective.step(model, [batch], [], [], 1e9)

    w, theta = tiny_model(), tiny_model()
    for batch in batches:
        for _ in range(k):
            theta.zero_grad()
            loss_on(theta, batch).backward()
            with torch.no_grad():
                for p, local in zip(theta.parameters(), w.parameters()):
                    p -= plr * (p.grad + lamda * (p - local) + mu * p)
        with torch.no_grad():
            for local, p in zip(w.parameters(), theta.parameters()):
                local -= lamda * lr * (local - p)
    for a, b in zip(model.parameters(), w.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    kept = objective.kept()
    for (name, _), p in zip(model.named_parameters(), theta.parameters()):
        torch.testing.assert_close(kept["personal." + name], p.detach(), rtol=1e-9, atol=1e-12)


def test_pfedme_client_keeps_and_is_evaluated_with_its_personalized_model(data_root: Path) -> None:
    cfg, strategy = setup(data_root, "pfedme")
    state = RecordDict()
    fit(cfg, strategy, 2, 1, state)
    kept = state[STORE].to_torch_state_dict()
    assert sorted(kept) == sorted("personal." + n for n in initial_weights(cfg))
    arrays, config = message(strategy, 2, 2, training=False)
    client = PersonalizedClient(2, cfg, state)
    _, _, metrics = client.evaluate(arrays, config)

    personal = TargetCNN(model_spec(cfg))
    personal.load_state_dict({n[len("personal.") :]: t for n, t in kept.items()})
    images, labels = client.data.client_split(2, "val")
    expected = evaluate_splits(personal, {"val": (images, labels)}, normalization(cfg), 1000)["val"]
    assert metrics["val_correct"] == expected.correct
    assert metrics["val_loss_sum"] == pytest.approx(expected.loss_sum, rel=1e-5)


@pytest.mark.parametrize(("method", "steps"), [("fedavg", 4), ("perfedavg", 1)])
def test_evaluation_adapts_the_sent_model_first_and_keeps_nothing(data_root: Path, method: str, steps: int) -> None:
    """FedAvg+FT fine-tunes with the client optimizer; Per-FedAvg takes one plain step of α."""
    extra = ["method.finetune_steps=4"] if method == "fedavg" else []
    cfg, strategy = setup(data_root, method, *extra)
    arrays, config = message(strategy, 1, 7, training=False)
    state = RecordDict()
    client = PersonalizedClient(1, cfg, state)
    _, _, metrics = client.evaluate(arrays, config)
    assert STORE not in state

    model = TargetCNN(model_spec(cfg))
    model.load_state_dict({n: torch.tensor(a) for n, a in zip(config["sent"].split(","), arrays)})
    c = cfg.client
    images, labels = client.data.client_split(1, "train")
    generator = torch.Generator().manual_seed(derive_seed(cfg.seed, ADAPT_STREAM, 1, 7))
    lr, momentum, decay = (c.lr, c.momentum, c.weight_decay) if method == "fedavg" else (cfg.method.alpha, 0, 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=decay)
    batches = batch_indices(len(labels), c.batch_size, steps, None, generator)
    norm = normalization(cfg)
    train_local(
        model,
        images,
        labels,
        norm,
        batches=batches,
        optimizers=[optimizer],
        clipped=list(model.parameters()),
        grad_clip=c.grad_clip,
    )
    val_images, val_labels = client.data.client_split(1, "val")
    expected = evaluate_splits(model, {"val": (val_images, val_labels)}, norm, 1000)["val"]
    assert metrics["val_correct"] == expected.correct
    assert metrics["val_loss_sum"] == pytest.approx(expected.loss_sum, rel=1e-5)
    plain = PersonalizedClient(
        1,
        compose(tiny_overrides(data_root, num_clients=NUM_CLIENTS) + ["method=fedavg", "clients_per_round=2"]),
        RecordDict(),
    )
    assert plain.evaluate(arrays, config)[2]["val_loss_sum"] != pytest.approx(metrics["val_loss_sum"], rel=1e-6)
