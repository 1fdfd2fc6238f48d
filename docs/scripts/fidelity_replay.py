"""Replay the official pFedHN trainer's own draws through this package, step by step.

The official trainer (github AvivSham/pFedHN, ``experiments/pfedhn/trainer.py``) and this
package draw clients and batches from their own random streams, so two runs on the same
split are two trajectories of one algorithm. This script removes the streams: it drives
the official trainer's RNG exactly as its loop does (``set_seed``, the split, the
hypernetwork's initialization, then per step ``random.choice`` of the client, one test
batch for the progress bar, 50 fresh training batches, and the evaluations at
``step % eval_every == 0``), records each step's client and batches, and feeds the same
client and batches through this package's own code path: ``PFedHN.client_model``, the
``Outbox`` instruction, ``PersonalizedClient.fit`` (``train_local`` with the client's SGD,
clipping and delta; only ``batch_indices`` is replaced by the recorded batches) and
``PFedHN.apply_updates`` (``step_toward_trained`` with the server's SGD and clipping).

``--mode lockstep`` (default): before every step ours is set to the official hypernetwork
and optimizer state, so each row compares ONE step of each code from identical state;
anything beyond float rounding there is a defect. ``--mode free``: ours is set to the
official state once, then both run on their own with the same draws, which shows how fast
float-level differences grow.

It also checks that this package's initial hypernetwork (as ``pfedhn.main`` builds it for
the same run) equals the official one, that both generate the same target weights for
every client, and compares the evaluations (test and validation, per client) the official
trainer makes after step 1, 151, ... with ours on the same hypernetwork state.

Usage (one torch thread; the official repository unchanged, outside this one):

    OMP_NUM_THREADS=1 python docs/scripts/fidelity_replay.py --official <official repo> \\
        --data-root <data root> --steps 20 [--mode lockstep|free] [--eval-every 150] \\
        [--official-results <official results_50_inner_steps_seed_1.json>] [--json out.json] \\
        [--ours client.channels_last=false ...]

Columns of the per-step table: ``generated`` max |Δ| of the target weights sent to the
client; ``trained`` / ``delta`` the trained weights and trained − sent, max |Δ| / max |official|;
``loss_diff`` of the mean inner-loop loss; the hypernetwork gradient norms before clipping;
``grad`` the gradient as applied (after clipping), relative; ``update_body`` /
``update_embed`` the step's parameter change of the MLP and heads / of the embeddings,
max |Δours − Δofficial| / max |Δofficial|; ``momentum`` the SGD buffers after the step;
``params`` the hypernetwork after the step, relative. ``--ours client.channels_last=false``
runs our target in the official NCHW layout (our default stores it channels_last, the same
arithmetic in another summation order).

Defaults are the fidelity pair's setting: CIFAR-100, 10 clients, seed 1, the official
trainer's argparse defaults (read from its source) with ``--data-name cifar100 --seed 1
--num-nodes 10 --num-steps 1500 --eval-every 150``. ``--ours`` adds Hydra overrides to
this package's config (``dataset.split=official`` and the run's settings are always set).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import json
import math
import random
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import numpy as np
import torch
from flwr.app import RecordDict

from pfedhn import client_app, config
from pfedhn.client_app import PersonalizedClient
from pfedhn.dataset import load_federated, normalize
from pfedhn.hypernetwork import HyperNetwork, step_toward_trained
from pfedhn.instructions import Outbox
from pfedhn.methods import spec_of
from pfedhn.methods.pfedhn import embed_dim, generated_shapes
from pfedhn.model import TargetCNN
from pfedhn.train import LocalObjective

# official CNNHyper / CNNTarget names -> ours (HyperNetwork / TargetCNN), in both modules' order
OFFICIAL_HEADS = [
    "c1_weights",
    "c1_bias",
    "c2_weights",
    "c2_bias",
    "l1_weights",
    "l1_bias",
    "l2_weights",
    "l2_bias",
    "l3_weights",
    "l3_bias",
]


def hn_name(official: str) -> str:
    """``c2_bias.weight`` -> ``heads.3.weight``; ``embeddings.*`` and ``mlp.*`` keep their names."""
    module, _, leaf = official.partition(".")
    return f"heads.{OFFICIAL_HEADS.index(module)}.{leaf}" if module in OFFICIAL_HEADS else official


def target_name(official: str) -> str:
    """The official target's ``fc3.*`` is our ``head.*``; the other names are equal."""
    return "head." + official[4:] if official.startswith("fc3.") else official


# ----------------------------------------------------------------------------- RNG and diffs


@contextlib.contextmanager
def isolated_rng():
    """Run our code without touching the global RNGs the official trainer draws from
    (our client's cached target network, our hypernetwork build, ... draw from torch's)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(py_state)
    np.random.set_state(np_state)


def as_tensor(x: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x.detach()


def max_diff(ours: dict, official: dict) -> tuple[float, float]:
    """(max |ours - official|, that / max |official|) over all tensors of two same-keyed dicts."""
    if set(ours) != set(official):
        raise KeyError(f"different names: {sorted(set(ours) ^ set(official))}")
    diff = max(float((as_tensor(ours[k]).float() - as_tensor(official[k]).float()).abs().max()) for k in ours)
    scale = max(float(as_tensor(official[k]).float().abs().max()) for k in official)
    return diff, diff / scale if scale else (0.0 if diff == 0 else math.inf)


# ----------------------------------------------------------------------------- official side


def official_defaults(trainer: Path) -> dict[str, Any]:
    """The official trainer's argparse defaults, read from its source (``--inner-lr`` -> ``inner_lr``)."""
    pattern = re.compile(r'add_argument\(\s*"--([\w-]+)"[^)]*?default=([^,)]+)')
    return {m[1].replace("-", "_"): ast.literal_eval(m[2].strip()) for m in pattern.finditer(trainer.read_text())}


class Recorder:
    """Collects the dataset indices a DataLoader reads while ``on`` (the batch it draws)."""

    def __init__(self) -> None:
        self.on, self.indices = False, []

    @contextlib.contextmanager
    def batch(self, out: list):
        self.on, self.indices = True, []
        yield
        self.on = False
        out.append(self.indices)


RECORDER = Recorder()


def install_official(official_root: Path) -> SimpleNamespace:
    """Import the official modules with the same data shim as ``run_official.py`` (the local
    arrays, ``ToTensor`` + ``Normalize`` once for all images), plus index recording."""
    sys.path.insert(0, str(official_root))
    import experiments.dataset as official_dataset
    from experiments.pfedhn import trainer
    from experiments.pfedhn.models import CNNHyper, CNNTarget
    from experiments.pfedhn.node import BaseNodes
    from experiments.utils import set_seed

    class _ArrayCIFAR(torch.utils.data.Dataset):
        name = ""

        def __init__(self, root, train=True, download=True, transform=None):
            with np.load(Path(root) / f"{self.name}.npz") as arrays:
                split = "train" if train else "test"
                self.data = arrays[f"x_{split}"]
                self.targets = [int(t) for t in arrays[f"y_{split}"]]
            norm = transform.transforms[1]
            images = torch.from_numpy(self.data).permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
            mean = torch.as_tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.as_tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
            self.items = images.sub_(mean).div_(std)

        def __len__(self):
            return len(self.targets)

        def __getitem__(self, index):
            if RECORDER.on:
                RECORDER.indices.append(int(index))
            return self.items[index], self.targets[index]

    class CIFAR10(_ArrayCIFAR):
        name = "cifar10"

    class CIFAR100(_ArrayCIFAR):
        name = "cifar100"

    official_dataset.CIFAR10, official_dataset.CIFAR100 = CIFAR10, CIFAR100
    return SimpleNamespace(
        trainer=trainer,
        CNNHyper=CNNHyper,
        CNNTarget=CNNTarget,
        BaseNodes=BaseNodes,
        set_seed=set_seed,
        trainer_path=Path(trainer.__file__),
    )


@dataclass
class Official:
    args: SimpleNamespace
    nodes: Any
    hnet: torch.nn.Module
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    rng_before_hnet: torch.Tensor
    criteria: torch.nn.Module = field(default_factory=torch.nn.CrossEntropyLoss)


def build_official(mod: SimpleNamespace, args: SimpleNamespace) -> Official:
    """trainer.py ``__main__`` then ``train()`` up to its loop, with the same RNG draws:
    set_seed; BaseNodes (random_split's randperm, numpy's class draw, random.shuffle);
    CNNHyper; CNNTarget; the SGD of the hypernetwork (two groups, embeddings at embed_lr)."""
    mod.set_seed(args.seed)
    classes_per_node = 2 if args.data_name == "cifar10" else 10
    nodes = mod.BaseNodes(
        args.data_name, args.data_path, args.num_nodes, classes_per_node=classes_per_node, batch_size=args.batch_size
    )
    dim = int(1 + args.num_nodes / 4) if args.embed_dim == -1 else args.embed_dim
    out_dim = 10 if args.data_name == "cifar10" else 100
    rng_before_hnet = torch.get_rng_state()
    hnet = mod.CNNHyper(
        args.num_nodes, dim, hidden_dim=args.hyper_hid, n_hidden=args.n_hidden, n_kernels=args.nkernels, out_dim=out_dim
    )  # spec_norm is parsed but never passed
    net = mod.CNNTarget(n_kernels=args.nkernels, out_dim=out_dim)
    embed_lr = args.embed_lr if args.embed_lr is not None else args.lr
    optimizer = torch.optim.SGD(
        [
            {"params": [p for n, p in hnet.named_parameters() if "embed" not in n]},
            {"params": [p for n, p in hnet.named_parameters() if "embed" in n], "lr": embed_lr},
        ],
        lr=args.lr,
        momentum=0.9,
        weight_decay=args.wd,
    )
    assert args.optim == "sgd"
    return Official(args, nodes, hnet, net, optimizer, rng_before_hnet)


def official_step(o: Official, node_id: int) -> dict[str, Any]:
    """One iteration of the official loop body (trainer.py ``for step in step_iter``), line for
    line, recording the batches, the trained target, the delta and the hypernetwork gradient."""
    a, hnet, net, optimizer, criteria = o.args, o.hnet, o.net, o.optimizer, o.criteria
    hnet.train()
    weights = hnet(torch.tensor([node_id], dtype=torch.long))
    net.load_state_dict(weights)
    inner_optim = torch.optim.SGD(net.parameters(), lr=a.inner_lr, momentum=0.9, weight_decay=a.inner_wd)
    inner_state = OrderedDict({k: tensor.data for k, tensor in weights.items()})
    with torch.no_grad():  # "evaluation on sent model": progress bar only, but one test-loader draw
        net.eval()
        img, label = next(iter(o.nodes.test_loaders[node_id]))
        criteria(net(img), label)
        net.train()
    batches, losses = [], []
    for _ in range(a.inner_steps):
        net.train()
        inner_optim.zero_grad()
        optimizer.zero_grad()
        with RECORDER.batch(batches):
            img, label = next(iter(o.nodes.train_loaders[node_id]))
        loss = criteria(net(img), label)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 50)
        inner_optim.step()
        losses.append(loss.item())
    optimizer.zero_grad()
    final_state = net.state_dict()
    delta_theta = OrderedDict({k: inner_state[k] - final_state[k] for k in weights.keys()})
    norm = official_hn_update(hnet, optimizer, weights, delta_theta)
    return {
        "generated": {target_name(k): v.detach().clone() for k, v in inner_state.items()},
        "trained": {target_name(k): v.detach().clone() for k, v in final_state.items()},
        "delta": {target_name(k): -v.detach().clone() for k, v in delta_theta.items()},  # ours' sign: trained - sent
        "batches": batches,
        "loss": sum(losses) / len(losses),
        "grad_norm": float(norm),
        "grads": {hn_name(n): p.grad.detach().clone() for n, p in hnet.named_parameters()},
    }


def official_hn_update(hnet, optimizer, weights, delta_theta) -> float:
    """The trainer's hypernetwork update (after the inner loop): the vector-Jacobian product with
    delta_theta = sent - trained, clipped to norm 50 over all parameters, one SGD step."""
    hnet_grads = torch.autograd.grad(list(weights.values()), hnet.parameters(), grad_outputs=list(delta_theta.values()))
    for p, g in zip(hnet.parameters(), hnet_grads):
        p.grad = g
    norm = torch.nn.utils.clip_grad_norm_(hnet.parameters(), 50)
    optimizer.step()
    return float(norm)


def official_evaluate(o: Official, mod: SimpleNamespace, split: str) -> dict[str, Any]:
    """The trainer's ``eval_model`` (draws from torch's RNG: its loaders shuffle). Its per-client
    loss is a mean of the means of shuffled batches of 64; ``sample_loss`` is the per-sample mean
    of the same official model, the quantity our evaluation reports."""
    per_client, avg_loss, avg_acc, _ = mod.trainer.eval_model(
        o.nodes, o.args.num_nodes, o.hnet, o.net, o.criteria, "cpu", split=split
    )
    return {
        "acc": avg_acc,
        "loss": avg_loss,
        "clients": {c: (int(r["correct"]), int(r["total"]), r["loss"]) for c, r in per_client.items()},
        "sample_loss": {c: official_sample_loss(o, c, split) for c in per_client},
    }


@torch.no_grad()
def official_sample_loss(o: Official, client: int, split: str) -> float:
    """Mean cross-entropy over the client's ``split`` of the official model, one batch, no RNG."""
    loaders = {"test": o.nodes.test_loaders, "val": o.nodes.val_loaders}[split]
    subset = loaders[client].dataset
    items = [subset.dataset[i] for i in subset.indices]
    images, labels = torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
    o.net.load_state_dict(o.hnet(torch.tensor([client])))
    return float(torch.nn.functional.cross_entropy(o.net(images), labels))


# ----------------------------------------------------------------------------- our side


@dataclass
class Ours:
    cfg: Any
    method: Any
    data: Any
    outbox: Outbox
    clients: dict[int, PersonalizedClient]
    position: dict[int, dict[int, int]]  # client -> base training index -> position in its split


def build_ours(args: SimpleNamespace, extra: list[str]) -> Ours:
    """Our config for the same run, and the method as ``pfedhn.main`` builds it
    (``build_strategy``: ``torch.manual_seed(seed)`` then the method's ``build``)."""
    overrides = [
        f"dataset={args.data_name}",
        "dataset.split=official",
        f"seed={args.seed}",
        f"dataset.root={args.data_path}",
        f"num_clients={args.num_nodes}",
        f"num_rounds={args.num_steps}",
        f"eval_every={args.eval_every}",
        "simulation.threads=1",
        "device=cpu",
        *extra,
    ]
    cfg = config.compose(overrides)
    spec = spec_of(cfg)
    with isolated_rng():
        torch.manual_seed(cfg.seed)
        method = spec.build(cfg, spec.schedule(cfg))
        data = load_federated(config.data_settings(cfg), cfg.dataset.num_classes)
        clients = {c: PersonalizedClient(c, cfg, RecordDict(), data) for c in range(cfg.num_clients)}
    return Ours(cfg, method, data, Outbox(history=None), clients, {})


def check_same_clients(o: Official, ours: Ours) -> None:
    """Our split of each client holds the official client's samples (order aside: ours sorts
    them), with equal labels and normalized images; fills ``ours.position`` to map recorded batches."""
    loaders = {"train": o.nodes.train_loaders, "val": o.nodes.val_loaders, "test": o.nodes.test_loaders}
    for split, per_client in loaders.items():
        whole = per_client[0].dataset.dataset  # random_split's Subset (train, val) or the test set
        base_targets = np.asarray(whole.dataset.targets)[whole.indices] if split != "test" else whole.targets
        assert np.array_equal(ours.data.splits[split].labels.numpy(), np.asarray(base_targets)), split
        for c in range(o.args.num_nodes):
            ours_pos = ours.data.client_indices[split][c].numpy()
            assert sorted(per_client[c].dataset.indices) == sorted(ours_pos.tolist()), (split, c)
    train_set = o.nodes.train_loaders[0].dataset.dataset
    base_of_train = np.asarray(train_set.indices)
    for c in range(o.args.num_nodes):
        ours_pos = ours.data.client_indices["train"][c].numpy()
        ours.position[c] = {int(b): i for i, b in enumerate(base_of_train[ours_pos])}
    images, _ = ours.data.client_split(0, "train")
    norm = config.normalization(ours.cfg)
    first = base_of_train[ours.data.client_indices["train"][0][:64].numpy()]
    assert torch.equal(normalize(images[:64], norm.mean, norm.std), train_set.dataset.items[first]), "images differ"


def our_state(ours: Ours) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in ours.method.hypernetwork.named_parameters()}


def official_state(o: Official) -> dict[str, torch.Tensor]:
    return {hn_name(n): p.detach().clone() for n, p in o.hnet.named_parameters()}


def momentum(named: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Each parameter's SGD momentum buffer (zeros before the first step)."""
    out = {}
    for n, p in named.items():
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        out[n] = torch.zeros_like(p) if buf is None else buf.detach().clone()
    return out


def official_momentum(o: Official) -> dict[str, torch.Tensor]:
    return momentum({hn_name(n): p for n, p in o.hnet.named_parameters()}, o.optimizer)


def our_momentum(ours: Ours) -> dict[str, torch.Tensor]:
    return momentum(dict(ours.method.hypernetwork.named_parameters()), ours.method.optimizer)


def sync_ours(o: Official, ours: Ours) -> None:
    """Set our hypernetwork and its optimizer's momentum to the official ones (shapes asserted)."""
    copy_state(o.hnet, o.optimizer, ours.method)


def copy_state(hnet: torch.nn.Module, optimizer: torch.optim.Optimizer, method: Any) -> None:
    """Official hypernetwork parameters and SGD momentum -> ``method``'s (our PFedHN)."""
    mine = dict(method.hypernetwork.named_parameters())
    with torch.no_grad():
        for n, p in hnet.named_parameters():
            target = mine[hn_name(n)]
            assert target.shape == p.shape, (n, target.shape, p.shape)
            target.copy_(p)
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is None:
                method.optimizer.state.pop(target, None)
            else:
                method.optimizer.state[target]["momentum_buffer"] = buf.detach().clone()


def our_step(ours: Ours, node: int, step: int, batches: list[list[int]]) -> dict[str, Any]:
    """One round of ours for ``node`` with the official batches: client_model -> instruction ->
    PersonalizedClient.fit (our local training) -> reply -> apply_updates (step_toward_trained)."""
    server_round = step + 1
    positions = [torch.tensor([ours.position[node][b] for b in batch]) for batch in batches]
    with isolated_rng():
        model = ours.method.client_model(node, server_round, True)
        arrays, instruction = ours.outbox.message(node, server_round, True, model)
        with mock.patch.object(client_app, "batch_indices", lambda *_, **__: positions):
            delta, num_examples, metrics = ours.clients[node].fit(arrays, instruction)
        net = client_app._target(ours.clients[node].spec, ours.cfg.client.channels_last, torch.device("cpu"))
        trained = {n: p.detach().clone() for n, p in net.named_parameters()}
        named = ours.outbox.reply(node, delta)
        report = ours.method.apply_updates(server_round, {node: named}, {node: num_examples})
    return {
        "generated": dict(model.arrays),
        "trained": trained,
        "delta": {n: torch.from_numpy(a) for n, a in named.items()},
        "loss": metrics["train_loss"],
        "grad_norm": report["hypernetwork_grad_norm"],
        "grads": {n: p.grad.detach().clone() for n, p in ours.method.hypernetwork.named_parameters()},
    }


def our_evaluate(ours: Ours, server_round: int) -> dict[str, dict[str, Any]]:
    """Our evaluation round: the batched ``client_models``, each client's ``evaluate``, pooled."""
    clients = list(range(ours.cfg.num_clients))
    with isolated_rng():
        models = ours.method.client_models(clients, server_round, training=False)
        metrics = {}
        for c in clients:
            arrays, instruction = ours.outbox.message(c, server_round, False, models[c])
            metrics[c] = ours.clients[c].evaluate(arrays, instruction)[2]
    out = {}
    for split in ("test", "val"):
        correct = sum(metrics[c][f"{split}_correct"] for c in clients)
        count = sum(metrics[c][f"{split}_count"] for c in clients)
        out[split] = {
            "acc": correct / count,
            "clients": {
                c: (
                    metrics[c][f"{split}_correct"],
                    metrics[c][f"{split}_count"],
                    metrics[c][f"{split}_loss_sum"] / metrics[c][f"{split}_count"],
                )
                for c in clients
            },
        }
    return out


# ----------------------------------------------------------------------------- checks and report


def check_initial(o: Official, ours: Ours) -> dict[str, Any]:
    """Is our initial hypernetwork the official one? And would our constructor give the official
    values on the official RNG state (i.e., is a difference only where the RNG stands)?"""
    built, theirs = our_state(ours), official_state(o)
    same_shapes = set(built) == set(theirs) and all(built[n].shape == theirs[n].shape for n in theirs)
    cfg = ours.cfg
    with isolated_rng():
        shapes = generated_shapes(cfg)  # draws (its probe network): before the official state is set
        torch.set_rng_state(o.rng_before_hnet)
        fresh = HyperNetwork(
            shapes,
            cfg.num_clients,
            embed_dim(cfg),
            cfg.method.hypernetwork.hidden_dim,
            cfg.method.hypernetwork.n_hidden,
        )
    fresh_state = {n: p.detach() for n, p in fresh.named_parameters()}
    return {
        "same_names_and_shapes": same_shapes,
        "as_built_max_abs_diff": max_diff(built, theirs)[0],
        "constructor_on_official_rng_max_abs_diff": max_diff(fresh_state, theirs)[0],
    }


def check_generation(o: Official, ours: Ours) -> float:
    """Max |ours - official| of every client's generated target weights (same hypernetwork state)."""
    worst = 0.0
    with torch.no_grad(), isolated_rng():
        for c in range(o.args.num_nodes):
            theirs = {target_name(k): v for k, v in o.hnet(torch.tensor([c])).items()}
            worst = max(worst, max_diff(ours.method.hypernetwork(c), theirs)[0])
            model = ours.method.client_model(c, 1, True)
            worst = max(worst, max_diff(model.arrays, theirs)[0])
    return worst


def clip_check(o: Official, ours: Ours, node: int, delta: dict, scale: float = 1000.0) -> dict[str, float]:
    """The server update where its clipping acts (a replayed step's gradient norm stays far
    below 50): ``scale`` times a recorded delta, through the official update and through our
    ``step_toward_trained``, from identical copies of the current state (the run is untouched)."""
    hnet, optimizer = copy.deepcopy((o.hnet, o.optimizer))
    method = copy.deepcopy(ours.method)
    copy_state(hnet, optimizer, method)
    before = {hn_name(n): p.detach().clone() for n, p in hnet.named_parameters()}
    weights = hnet(torch.tensor([node]))
    official_names = {target_name(k): k for k in weights}
    delta_theta = OrderedDict({official_names[n]: -scale * d for n, d in delta.items()})
    norm_official = official_hn_update(hnet, optimizer, weights, delta_theta)
    with isolated_rng():
        norm_ours, _ = step_toward_trained(
            method.optimizer, method._generate, {node: {n: scale * d for n, d in delta.items()}}, method.grad_clip
        )
    after_official = {hn_name(n): p.detach() for n, p in hnet.named_parameters()}
    after_ours = {n: p.detach() for n, p in method.hypernetwork.named_parameters()}
    return {
        "grad_norm_official": norm_official,
        "grad_norm_ours": norm_ours,
        "update": update_diff(before, after_ours, after_official, list(before)),
    }


def update_diff(before: dict, ours_after: dict, official_after: dict, names: list[str]) -> float:
    """max |Δours - Δofficial| / max |Δofficial| of a step's parameter change, over ``names``."""
    d_ours = {n: ours_after[n] - before[n] for n in names}
    d_off = {n: official_after[n] - before[n] for n in names}
    return max_diff(d_ours, d_off)[1]


def compare_step(step: int, node: int, before: dict, off: dict, mine: dict, o: Official, ours: Ours) -> dict:
    after_off, after_ours = official_state(o), our_state(ours)
    body = [n for n in before if not n.startswith("embeddings")]
    return {
        "step": step + 1,
        "client": node,
        "generated": max_diff(mine["generated"], off["generated"])[0],
        "trained": max_diff(mine["trained"], off["trained"])[1],
        "delta": max_diff(mine["delta"], off["delta"])[1],
        "loss_diff": abs(mine["loss"] - off["loss"]),
        "gnorm_official": off["grad_norm"],
        "gnorm_ours": mine["grad_norm"],
        "grad": max_diff(mine["grads"], off["grads"])[1],
        "update_body": update_diff(before, after_ours, after_off, body),
        "update_embed": update_diff(before, after_ours, after_off, ["embeddings.weight"]),
        "momentum": max_diff(our_momentum(ours), official_momentum(o))[1],
        "params": max_diff(after_ours, after_off)[1],
    }


def inner_growth(o: Official, ours: Ours, off: dict, checkpoints=(1, 5, 10, 20, 30, 40, 50)) -> list[dict]:
    """How a float-rounding difference grows over one step's inner loop: the official step's
    generated weights and batches trained by our ``TargetCNN`` with our client SGD three ways,
    float32 NCHW (the official layout), float32 channels_last (ours) and float64 NCHW (near exact
    arithmetic); max |difference| / max |weight| after each checkpointed inner step."""
    c = ours.cfg.client
    base = o.nodes.train_loaders[0].dataset.dataset.dataset
    labels = torch.tensor(base.targets)

    def train(channels_last: bool, dtype: torch.dtype) -> list[dict[str, torch.Tensor]]:
        with isolated_rng():
            net = TargetCNN(config.model_spec(ours.cfg)).to(dtype)
        net.load_state_dict({k: v.to(dtype) for k, v in off["generated"].items()})
        net = net.to(memory_format=torch.channels_last) if channels_last else net
        params = list(net.parameters())
        optimizer = torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        states = []
        for batch in off["batches"]:
            objective_step(net, base.items[batch].to(dtype), labels[batch], optimizer, params, c.grad_clip)
            states.append({n: p.detach().double().clone() for n, p in net.named_parameters()})
        return states

    nchw, cl, f64 = train(False, torch.float32), train(True, torch.float32), train(False, torch.float64)
    return [
        {
            "inner_step": k,
            "channels_last_vs_nchw": max_diff(cl[k - 1], nchw[k - 1])[1],
            "nchw_vs_float64": max_diff(nchw[k - 1], f64[k - 1])[1],
            "channels_last_vs_float64": max_diff(cl[k - 1], f64[k - 1])[1],
        }
        for k in checkpoints
    ]


def objective_step(net, images, labels, optimizer, params, grad_clip) -> None:
    """One plain SGD step as ``LocalObjective.step``: zero, cross-entropy, backward, clip, step."""
    LocalObjective().step(net, [(images, labels)], [optimizer], params, grad_clip)


COLUMNS = [
    "step",
    "client",
    "generated",
    "trained",
    "delta",
    "loss_diff",
    "gnorm_official",
    "gnorm_ours",
    "grad",
    "update_body",
    "update_embed",
    "momentum",
    "params",
]


def print_row(row: dict) -> None:
    cells = [f"{row[c]:.3e}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS]
    print("| " + " | ".join(cells) + " |", flush=True)


def compare_eval(step: int, off: dict, mine: dict) -> dict:
    """Pooled accuracies, per-client correct counts and per-client mean losses side by side
    (the official loss is a mean of batch means over shuffled batches of 64, ours a per-sample mean)."""
    row = {"step": step + 1}
    for split in ("test", "val"):
        a, b = off[split]["clients"], mine[split]["clients"]
        row[split] = {
            "acc_official": off[split]["acc"],
            "acc_ours": mine[split]["acc"],
            "correct_diff": [b[c][0] - a[c][0] for c in sorted(a)],
            "count_equal": all(a[c][1] == b[c][1] for c in a),
            "max_client_loss_diff_vs_batch_means": max(abs(b[c][2] - a[c][2]) for c in a),
            "max_client_loss_diff_vs_sample_mean": max(abs(b[c][2] - off[split]["sample_loss"][c]) for c in a),
        }
    return row


def parse() -> tuple[argparse.Namespace, SimpleNamespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="a checkout of github AvivSham/pFedHN")
    parser.add_argument("--data-root", required=True, help="the directory holding cifar10.npz / cifar100.npz")
    parser.add_argument("--data-name", default="cifar100")
    parser.add_argument("--num-nodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--num-steps", type=int, default=1500, help="the run's length (our schedule)")
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--steps", type=int, default=20, help="steps to replay")
    parser.add_argument("--mode", choices=["lockstep", "free"], default="lockstep")
    parser.add_argument(
        "--official-results", type=Path, help="the official run's results json (same --num-steps), to check the replay"
    )
    parser.add_argument("--json", type=Path, help="write every row here")
    parser.add_argument("--ours", nargs="*", default=[], help="extra Hydra overrides of our config")
    cli = parser.parse_args()
    return cli, SimpleNamespace(
        data_name=cli.data_name,
        data_path=cli.data_root,
        num_nodes=cli.num_nodes,
        seed=cli.seed,
        num_steps=cli.num_steps,
        eval_every=cli.eval_every,
    )


def setup(cli: argparse.Namespace, run: SimpleNamespace) -> tuple[SimpleNamespace, Official, Ours, dict]:
    """Both sides built and checked before the loop (the official RNG stands where the trainer's
    does when its loop starts); ours then holds the official initial state."""
    mod = install_official(cli.official)
    args = SimpleNamespace(**{**official_defaults(mod.trainer_path), **vars(run)})
    print("official settings:", {k: v for k, v in vars(args).items() if k != "data_path"})
    official = build_official(mod, args)
    ours = build_ours(args, cli.ours)
    print(
        "our settings: client",
        dict(ours.cfg.client),
        "server",
        dict(ours.cfg.method.server),
        "hypernetwork",
        dict(ours.cfg.method.hypernetwork),
    )
    check_same_clients(official, ours)
    print("clients: same samples in every split, same normalized images")
    initial = check_initial(official, ours)
    print("initial hypernetwork:", initial)
    sync_ours(official, ours)
    print(
        f"generated target weights, every client, after loading the official state: max abs diff "
        f"{check_generation(official, ours):.3e}"
    )
    return mod, official, ours, initial


def evaluation_point(
    step: int, mod: SimpleNamespace, official: Official, ours: Ours, lockstep: bool, reference: dict | None
) -> dict:
    """The trainer's evaluation after ``step`` beside ours on the same state (lockstep) or on
    ours' own (free): test then validation in the loop, validation then test after its last step
    (its RNG order); with ``reference``, the official run's recorded numbers for this evaluation
    too (the replay must give them exactly)."""
    in_loop = step % official.args.eval_every == 0
    order = ("test", "val") if in_loop else ("val", "test")
    off_eval = {s: official_evaluate(official, mod, s) for s in order}
    if lockstep:
        sync_ours(official, ours)
    row = compare_eval(step, off_eval, our_evaluate(ours, step + 1))
    if reference is not None:
        i = step // official.args.eval_every + (0 if in_loop else 1)
        row["official_results_json"] = {
            "test_acc": reference["test_avg_acc"][i],
            "test_loss": reference["test_avg_loss"][i],
            "val_acc": reference["val_avg_acc"][i],
        }
        row["replay_official"] = {
            "test_acc": off_eval["test"]["acc"],
            "test_loss": off_eval["test"]["loss"],
            "val_acc": off_eval["val"]["acc"],
        }
    return row


def main() -> None:
    torch.set_num_threads(1)
    cli, run = parse()
    mod, official, ours, initial = setup(cli, run)
    reference = json.loads(cli.official_results.read_text()) if cli.official_results else None
    lockstep = cli.mode == "lockstep"
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS))
    rows, evals, growth, clipped = [], [], None, None
    for step in range(cli.steps):
        if lockstep:
            sync_ours(official, ours)
        before = official_state(official)
        node = random.choice(range(official.args.num_nodes))  # trainer.py: node_id = random.choice(...)
        off = official_step(official, node)
        mine = our_step(ours, node, step, off["batches"])
        rows.append(compare_step(step, node, before, off, mine, official, ours))
        print_row(rows[-1])
        if step == 0:
            growth = inner_growth(official, ours, off)
            print("inner-loop growth of a rounding difference, step 1:", json.dumps(growth), flush=True)
            clipped = clip_check(official, ours, node, mine["delta"])
            print("server update with clipping active (1000 x step 1's delta):", json.dumps(clipped), flush=True)
        if step % official.args.eval_every == 0 or step == official.args.num_steps - 1:
            evals.append(evaluation_point(step, mod, official, ours, lockstep, reference))
            print("eval:", json.dumps(evals[-1]), flush=True)
    summary = {c: max((r[c] for r in rows), default=None) for c in COLUMNS[2:] if not c.startswith("gnorm")}
    print("max over steps:", json.dumps(summary))
    if cli.json:
        cli.json.write_text(
            json.dumps(
                {
                    "mode": cli.mode,
                    "initial": initial,
                    "growth": growth,
                    "clip_check": clipped,
                    "rows": rows,
                    "evals": evals,
                    "max": summary,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
