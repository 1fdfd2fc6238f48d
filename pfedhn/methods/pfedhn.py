"""pFedHN and pFedHN-PC: a server-side hypernetwork generates each client's model.

Paper: https://arxiv.org/abs/2103.04628 (Shamsian et al., ICML 2021)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import torch
from flwr.common import Scalar
from omegaconf import DictConfig

from pfedhn import config
from pfedhn.checks import Checks, boolean, non_negative, non_negative_int, positive, positive_int
from pfedhn.hypernetwork import HyperNetwork, make_hypernetwork_optimizer, step_toward_trained
from pfedhn.method import Method, MethodSpec, PaperValue, TableRows
from pfedhn.methods.pfedhn_report import NOVEL, SIZES, novel_lr
from pfedhn.model import HEAD_PREFIX, ModelSpec, head_names, make_head, parameter_shapes
from pfedhn.protocol import ClientModel, ClientSide, Keeping
from pfedhn.results import ClientGroup
from pfedhn.schedule import Schedule
from pfedhn.utils import derive_seed

HEAD_STREAM = 3  # tag of the personal heads' derived seeds
GENERATE_BATCH = 256  # clients whose evaluation models one batched hypernetwork pass generates


class PFedHN(Method):
    """Client ``i`` receives θ̃_i = h(v_i; φ), trains it locally and returns Δ_i = θ_trained − θ̃_i.
    The server descends ½‖θ̃_i − θ_trained‖² in (φ, v_i) (``step_toward_trained``: the
    vector–Jacobian product (∂θ̃_i/∂(φ, v_i))ᵀ(−Δ_i), clipped, one step of ``optimizer``;
    with several clients a round, their gradients averaged, this package's extension).
    pFedHN-PC: the hypernetwork generates every tensor but the head, which each client
    keeps and trains itself (``kept``). With target sizes (paper Sec. 5.2), client i's
    tensors are the hypernetwork's ``prefixes[i] + name``. In the novel phase (Sec. 5.3)
    ``novel_optimizer`` steps the embeddings alone.
    """

    def __init__(
        self,
        hypernetwork: HyperNetwork,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        grad_clip: float,
        novel_optimizer: torch.optim.Optimizer | None = None,
        kept: tuple[str, ...] = (),
        prefixes: list[str] | None = None,
    ) -> None:
        if schedule.novel_from <= schedule.num_rounds and novel_optimizer is None:
            raise ValueError("a schedule with novel-client rounds needs a novel_optimizer")
        self.hypernetwork, self.optimizer, self.novel_optimizer = hypernetwork, optimizer, novel_optimizer
        self.schedule, self.grad_clip, self.kept, self.prefixes = schedule, grad_clip, kept, prefixes
        self.client_state = bool(kept)
        self.device = hypernetwork.embeddings.weight.device

    def __repr__(self) -> str:
        size = sum(p.numel() for p in self.hypernetwork.parameters())
        return f"PFedHN(generated={sum(s.numel() for s in self.hypernetwork.shapes.values())}, hn_params={size})"

    @torch.no_grad()
    def client_model(self, client: int, server_round: int, training: bool) -> ClientModel:
        return self._client_model(client, self.hypernetwork(client, names=self._own(client)))

    @torch.no_grad()
    def client_models(self, clients: list[int], server_round: int, training: bool) -> dict[int, ClientModel]:
        """An evaluation's models, ``GENERATE_BATCH`` clients of one size a pass (equal to one at a
        time up to float rounding)."""
        if training:
            return super().client_models(clients, server_round, training)
        models = {}
        for prefix in dict.fromkeys(self._prefix(c) for c in clients):
            group = [c for c in clients if self._prefix(c) == prefix]
            for start in range(0, len(group), GENERATE_BATCH):
                batch = group[start : start + GENERATE_BATCH]
                generated = self.hypernetwork.generate(batch, names=self._own(batch[0]))
                models.update({c: self._client_model(c, g) for c, g in zip(batch, generated)})
        return {client: models[client] for client in clients}

    def apply_updates(
        self,
        server_round: int,
        updates: dict[int, dict[str, np.ndarray]],
        num_examples: dict[int, int] | None = None,
    ) -> dict[str, Scalar]:
        deltas = {
            c: {self._prefix(c) + n: torch.from_numpy(a).to(self.device) for n, a in arrays.items()}
            for c, arrays in updates.items()
        }
        novel = self.schedule.is_novel_round(server_round)
        optimizer = self.novel_optimizer if novel else self.optimizer  # one exists then (__init__)
        norm, _ = step_toward_trained(optimizer, self._generate, deltas, self.grad_clip)
        return {"hypernetwork_grad_norm": norm}

    def groups(self) -> dict[str, ClientGroup]:
        """Each target size's clients, with several sizes."""
        by_size: dict[str, list[int]] = {}
        for client, prefix in enumerate(self.prefixes or []):
            by_size.setdefault(prefix.rstrip("/"), []).append(client)
        return {size: ClientGroup(clients, 1, self.schedule.num_rounds) for size, clients in by_size.items()}

    def server_state(self) -> dict[str, Any]:
        state = {"hypernetwork": self.hypernetwork.state_dict(), "optimizer": self.optimizer.state_dict()}
        return state | ({"novel_optimizer": self.novel_optimizer.state_dict()} if self.novel_optimizer else {})

    def load_server_state(self, state: dict[str, Any]) -> None:
        self.hypernetwork.load_state_dict(state["hypernetwork"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.novel_optimizer is not None:  # its rate is the config's: it may change before the novel phase
            rates = [group["lr"] for group in self.novel_optimizer.param_groups]
            self.novel_optimizer.load_state_dict(state["novel_optimizer"])
            for group, lr in zip(self.novel_optimizer.param_groups, rates):
                group["lr"] = lr

    def _generate(self, client: int, names: Collection[str]) -> Mapping[str, torch.Tensor]:
        return self.hypernetwork(client, names=names)

    def _own(self, client: int) -> list[str] | None:
        """The generated tensors of ``client``'s target size (None: all, with one size)."""
        prefix = self._prefix(client)
        return None if self.prefixes is None else [n for n in self.hypernetwork.shapes if n.startswith(prefix)]

    def _prefix(self, client: int) -> str:
        return "" if self.prefixes is None else self.prefixes[client]

    def _client_model(self, client: int, generated: dict[str, torch.Tensor]) -> ClientModel:
        prefix = self._prefix(client)
        return ClientModel({n[len(prefix) :]: t.cpu().numpy() for n, t in generated.items()}, keep=self.kept)


def build(cfg: DictConfig, schedule: Schedule) -> PFedHN:
    """The hypernetwork is initialized from torch's global RNG on the CPU, then moved to
    ``device``: the same initial values on every device."""
    hn, server, novel = cfg.method.hypernetwork, cfg.method.server, cfg.method.novel
    hypernetwork = HyperNetwork(generated_shapes(cfg), cfg.num_clients, embed_dim(cfg), hn.hidden_dim, hn.n_hidden).to(
        config.device(cfg)
    )
    optimizer = make_hypernetwork_optimizer(
        hypernetwork, server.lr, server.embed_lr, server.momentum, server.weight_decay
    )
    novel_optimizer = None
    if novel.clients:  # no weight decay: only the novel clients' rows get gradients, so only they move
        embeddings = hypernetwork.embeddings.parameters()
        novel_optimizer = torch.optim.SGD(embeddings, lr=novel_lr(cfg), momentum=server.momentum)
    personal = cfg.method.personal_head
    sizes = cfg.method.sizes
    return PFedHN(
        hypernetwork,
        optimizer,
        schedule,
        grad_clip=server.grad_clip,
        novel_optimizer=novel_optimizer,
        kept=head_names(config.model_spec(cfg)) if personal else (),
        prefixes=[size_prefix(n_kernels(cfg, c)) for c in range(cfg.num_clients)] if sizes else None,
    )


def embed_dim(cfg: DictConfig) -> int:
    """``method.hypernetwork.embed_dim``, or the paper's ``int(1 + num_clients / 4)`` when null."""
    dim = cfg.method.hypernetwork.embed_dim
    return int(1 + cfg.num_clients / 4) if dim is None else int(dim)


def n_kernels(cfg: DictConfig, partition: int) -> int:
    """Client ``partition``'s target width: ``method.sizes[partition % len(sizes)]``, or ``model.n_kernels``."""
    sizes = cfg.method.sizes
    return cfg.model.n_kernels if not sizes else int(sizes[partition % len(sizes)])


def target(cfg: DictConfig, partition: int) -> ModelSpec:
    return dataclasses.replace(config.model_spec(cfg), n_kernels=n_kernels(cfg, partition))


def size_prefix(n_kernels: int) -> str:
    """The prefix of one target size's tensors in a multi-size hypernetwork, e.g. ``k16/``."""
    return f"k{n_kernels}/"


def generated_shapes(cfg: DictConfig) -> dict[str, torch.Size]:
    """What the hypernetwork generates: the target's tensors (but the head for pFedHN-PC), or,
    with ``method.sizes``, those of every size, each under its ``size_prefix``."""
    spec = config.model_spec(cfg)
    sizes = [None] if not cfg.method.sizes else [int(k) for k in cfg.method.sizes]
    return {
        ("" if k is None else size_prefix(k)) + name: shape
        for k in sizes
        for name, shape in parameter_shapes(spec if k is None else dataclasses.replace(spec, n_kernels=k)).items()
        if not (cfg.method.personal_head and name.startswith(HEAD_PREFIX))
    }


def init_personal_head(cfg: DictConfig, partition_id: int) -> dict[str, torch.Tensor]:
    """pFedHN-PC: a client's first head, a fresh ``make_head`` seeded by (seed, partition)."""
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(cfg.seed, HEAD_STREAM, partition_id))
        head = make_head(target(cfg, partition_id))
    return {HEAD_PREFIX + name: tensor for name, tensor in head.state_dict().items()}


def client_side(cfg: DictConfig) -> ClientSide:
    """pFedHN's client keeps nothing; pFedHN-PC's keeps its head, trained by its own SGD
    (``method.head``) whose momentum persists."""
    if cfg.method.personal_head:
        return ClientSide(Keeping(initial=init_personal_head, optimizer=lambda cfg: cfg.method.head))
    return ClientSide()


def schedule(cfg: Mapping[str, Any]) -> Schedule:
    """The seen phase's ``num_rounds``, then ``method.novel.rounds`` (a config from before the
    novel phase existed has none)."""
    novel = cfg["method"].get("novel") or {}
    clients, extra = int(novel.get("clients", 0)), int(novel.get("rounds", 0))
    return Schedule(int(cfg["num_clients"]), int(cfg["num_rounds"]) + extra, int(cfg["eval_every"]), clients, extra)


def checks(cfg: DictConfig) -> Checks:
    per_round = cfg.clients_per_round

    def novel() -> bool:
        return bool(cfg.method.novel.clients)

    keys: Checks = {
        "method.hypernetwork.hidden_dim": (positive_int, "a positive integer"),
        "method.hypernetwork.n_hidden": (non_negative_int, "a non-negative integer"),
        "method.hypernetwork.embed_dim": (lambda v: v is None or positive_int(v), "null (auto) or a positive integer"),
        "method.server.lr": (positive, "a positive number"),
        "method.server.embed_lr": (lambda v: v is None or positive(v), "null (= lr) or a positive number"),
        "method.server.momentum": (non_negative, "a non-negative number"),
        "method.server.weight_decay": (non_negative, "a non-negative number"),
        "method.server.grad_clip": (positive, "a positive number"),
        "method.personal_head": (boolean, "true or false"),
        "method.sizes": (
            lambda v: v is None or (len(v) > 0 and all(positive_int(k) for k in v) and len(set(v)) == len(v)),
            "null or a list of distinct positive n_kernels, e.g. [8,16,32]",
        ),
        "method.novel.clients": (
            lambda v: non_negative_int(v) and (v == 0 or per_round <= v <= cfg.num_clients - per_round),
            f"0 or a number of clients that leaves at least clients_per_round={per_round} in each group",
        ),
        "method.novel.rounds": (
            lambda v: non_negative_int(v) and (novel() or v == 0),
            "a non-negative integer, 0 without novel clients (method.novel.clients > 0)",
        ),
        "method.novel.lr": (
            lambda v: v is None or (positive(v) and novel()),
            "null, or a positive number with novel clients (method.novel.clients > 0)",
        ),
    }
    head: Checks = {
        "method.head.lr": (positive, "a positive number"),
        "method.head.momentum": (non_negative, "a non-negative number"),
        "method.head.weight_decay": (non_negative, "a non-negative number"),
    }
    return keys | (head if cfg.method.personal_head else {})


def _sized_label(key: str) -> tuple[int, str] | None:
    base, _, sizes = key.partition("_sizes_")
    if not sizes or base not in LABELS:
        return None
    return list(LABELS).index(base), f"{LABELS[base]}, n_kernels {' / '.join(sizes.split('_'))}"


def row_key(cfg: Mapping[str, Any]) -> str:
    """``pfedhn`` / ``pfedhn_pc`` by what the run did (``method.personal_head``, whichever
    preset it started from), and ``_sizes_8_16_32`` for several target sizes."""
    sizes = cfg["method"].get("sizes")
    base = "pfedhn_pc" if cfg["method"].get("personal_head") else "pfedhn"
    return base + (f"_sizes_{'_'.join(str(k) for k in sizes)}" if sizes else "")


LABELS = {"pfedhn": "pFedHN", "pfedhn_pc": "pFedHN-PC"}
PAPER = "paper"
LISTING = "paper, best of pFedHN / pFedHN-PC (third-party listing)"
BOTH = ("pfedhn", "pfedhn_pc")
PAPER_VALUES = (  # the paper's values we could verify; a third-party listing gives one unlabelled value per cell
    PaperValue("mnist", 50, 99.28, 0.11, ("pfedhn",), PAPER),
    PaperValue("cifar10", 10, 92.47, None, BOTH, LISTING),
    PaperValue("cifar10", 50, 88.38, 0.29, ("pfedhn",), PAPER),
    PaperValue("cifar10", 50, 90.08, 0.63, ("pfedhn_pc",), PAPER),
    PaperValue("cifar10", 100, 88.09, None, BOTH, LISTING),
    PaperValue("cifar100", 10, 68.15, None, BOTH, LISTING),
    PaperValue("cifar100", 50, 60.17, None, BOTH, LISTING),
    PaperValue("cifar100", 100, 53.24, None, BOTH, LISTING),
)
SPEC = MethodSpec(
    build=build,
    checks=checks,
    rows=TableRows(row_key, LABELS, _sized_label, PAPER_VALUES, sections=(SIZES, NOVEL)),
    client_side=client_side,
    schedule=schedule,
    target=target,
    moved_keys=("hypernetwork", "model.sizes", "novel"),
    unread_keys=lambda cfg: ("model.n_kernels",) if cfg["method"].get("sizes") else (),  # sizes replace it
    novel_phase_keys=("method.novel.rounds", "method.novel.lr"),
)
