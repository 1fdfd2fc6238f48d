"""pFedHN and pFedHN-PC: a server-side hypernetwork generates each client's model."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from flwr.common import Scalar
from omegaconf import DictConfig

from pfedhn import config
from pfedhn.hypernetwork import HyperNetwork, make_hypernetwork_optimizer, step_hypernetwork
from pfedhn.model import HEAD_PREFIX, head_names, make_head, parameter_shapes
from pfedhn.protocol import ClientModel, ClientSide
from pfedhn.results import ClientGroup
from pfedhn.strategy import PersonalizedStrategy
from pfedhn.utils import derive_seed

HEAD_STREAM = 3  # tag of the personal heads' derived seeds
GENERATE_BATCH = 256  # clients whose evaluation models one batched hypernetwork pass generates


class PFedHN(PersonalizedStrategy):
    """Personalized Federated HyperNetworks (Shamsian et al., ICML 2021).

    Paper: https://arxiv.org/abs/2103.04628

    Client ``i`` receives θ̃_i = h(v_i; φ), trains it locally and returns
    Δ_i = θ_trained − θ̃_i. The server descends ½‖θ̃_i − θ_trained‖² in (φ, v_i):
    its gradient is the vector–Jacobian product (∂θ̃_i/∂(φ, v_i))ᵀ (−Δ_i), clipped,
    then one step of ``optimizer``. The hypernetwork never leaves the server.
    pFedHN-PC is the same strategy with a hypernetwork that generates every
    tensor but the classifier head, which each client keeps and trains itself.

    Parameters
    ----------
    hypernetwork : HyperNetwork
        Generates the tensors clients receive, in ``hypernetwork.shapes`` order.
    optimizer : torch.optim.Optimizer
        Steps ``hypernetwork``'s parameters (the paper: SGD with momentum).
    grad_clip : float (default: 50.0)
        Max norm of the hypernetwork gradient.
    novel_optimizer : torch.optim.Optimizer | None (default: None)
        Steps the embeddings alone in the novel-client rounds (hypernetwork frozen).
    kept : tuple[str, ...] (default: ())
        Target parameters each client keeps (pFedHN-PC: the head's); the
        hypernetwork generates the others.
    prefixes : list[str] | None (default: None)
        Clients with targets of different sizes (paper Sec. 5.2): client i's tensors are
        the hypernetwork's ``prefixes[i] + name`` (``size_prefix``); it generates,
        receives and updates only those. None: one size, names as the target's.
    **kwargs
        ``PersonalizedStrategy`` arguments (num_clients, num_rounds, ...).
    """

    def __init__(
        self,
        *,
        hypernetwork: HyperNetwork,
        optimizer: torch.optim.Optimizer,
        grad_clip: float = 50.0,
        novel_optimizer: torch.optim.Optimizer | None = None,
        kept: tuple[str, ...] = (),
        prefixes: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kept = kept
        self.prefixes = prefixes
        self.hypernetwork = hypernetwork
        self.optimizer = optimizer
        self.novel_optimizer = novel_optimizer
        self.grad_clip = grad_clip
        self.device = self.hypernetwork.embeddings.weight.device

    def __repr__(self) -> str:
        generated = sum(shape.numel() for shape in self.hypernetwork.shapes.values())
        size = sum(p.numel() for p in self.hypernetwork.parameters())
        return f"{super().__repr__()[:-1]}, generated={generated}, hypernetwork_params={size})"

    @torch.no_grad()
    def client_model(self, client: int, server_round: int, training: bool) -> ClientModel:
        """θ̃_client = h(v_client; φ); pFedHN-PC's client keeps its head."""
        return self._client_model(client, self.hypernetwork(client, names=self._own(client)))

    @torch.no_grad()
    def client_models(self, clients: list[int], server_round: int, training: bool) -> dict[int, ClientModel]:
        """An evaluation's models, generated ``GENERATE_BATCH`` clients (of one target size) at
        a time (``HyperNetwork.generate``: equal to one at a time up to float rounding)."""
        if training:
            return super().client_models(clients, server_round, training)
        by_size: dict[str, list[int]] = {}
        for client in clients:
            by_size.setdefault(self._prefix(client), []).append(client)
        models = {}
        for group in by_size.values():
            for start in range(0, len(group), GENERATE_BATCH):
                batch = group[start : start + GENERATE_BATCH]
                generated = self.hypernetwork.generate(batch, names=self._own(batch[0]))
                models.update({c: self._client_model(c, g) for c, g in zip(batch, generated)})
        return {client: models[client] for client in clients}

    def _own(self, client: int) -> list[str] | None:
        """The generated tensors of ``client``'s target size (None: all, with one size)."""
        prefix = self._prefix(client)
        return None if self.prefixes is None else [n for n in self.hypernetwork.shapes if n.startswith(prefix)]

    def _client_model(self, client: int, generated: dict[str, torch.Tensor]) -> ClientModel:
        prefix = self._prefix(client)
        arrays = {name[len(prefix) :]: t.cpu().numpy() for name, t in generated.items()}
        return ClientModel(arrays, keep=self.kept)

    def apply_updates(
        self,
        server_round: int,
        updates: dict[int, dict[str, np.ndarray]],
        num_examples: dict[int, int] | None = None,
    ) -> dict[str, Scalar]:
        """One hypernetwork step from the returned deltas (the official code's, for its one client
        per round; with several, their gradients averaged with equal weights, this package's
        extension; ``num_examples`` is not used)."""
        deltas = {
            client: {self._prefix(client) + name: torch.from_numpy(a).to(self.device) for name, a in arrays.items()}
            for client, arrays in updates.items()
        }
        optimizer = self.novel_optimizer if self.is_novel_round(server_round) else self.optimizer
        if optimizer is None:
            raise ValueError("novel-client rounds need a novel_optimizer")
        norm = step_hypernetwork(self.hypernetwork, optimizer, deltas, self.grad_clip)
        return {"hypernetwork_grad_norm": norm}

    def _prefix(self, client: int) -> str:
        return "" if self.prefixes is None else self.prefixes[client]

    def server_state(self) -> dict[str, Any]:
        """Hypernetwork (embeddings included) and optimizer state."""
        state = {"hypernetwork": self.hypernetwork.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.novel_optimizer is not None:
            state["novel_optimizer"] = self.novel_optimizer.state_dict()
        return state

    def load_server_state(self, state: dict[str, Any]) -> None:
        self.hypernetwork.load_state_dict(state["hypernetwork"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.novel_optimizer is not None:  # its rate is the config's: novel.lr may change before the novel phase
            rates = [group["lr"] for group in self.novel_optimizer.param_groups]
            self.novel_optimizer.load_state_dict(state["novel_optimizer"])
            for group, lr in zip(self.novel_optimizer.param_groups, rates):
                group["lr"] = lr


def init_personal_head(cfg: DictConfig, partition_id: int) -> dict[str, torch.Tensor]:
    """pFedHN-PC: a client's first head, a fresh ``make_head`` seeded by (seed, partition)."""
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(cfg.seed, HEAD_STREAM, partition_id))
        head = make_head(config.model_spec(cfg, partition_id))
    return {HEAD_PREFIX + name: tensor for name, tensor in head.state_dict().items()}


def pfedhn_client_side(cfg: DictConfig) -> ClientSide:
    """pFedHN's client keeps nothing; pFedHN-PC's keeps its head, trained by its own SGD
    (``method.head``) whose momentum persists."""
    if cfg.method.personal_head:
        return ClientSide(init_kept=init_personal_head, kept_optimizer="method.head")
    return ClientSide()


def build_pfedhn(cfg: DictConfig, **base: Any) -> PFedHN:
    """pFedHN (``method.personal_head=false``) or pFedHN-PC (``true``) from the config.

    The hypernetwork is initialized from ``torch``'s global RNG (seed it first), on the
    CPU, then moved to ``device``: the same initial values on every device.
    """
    hypernetwork = HyperNetwork(
        generated_shapes(cfg),
        num_clients=cfg.num_clients,
        embed_dim=config.embed_dim(cfg),
        hidden_dim=cfg.hypernetwork.hidden_dim,
        n_hidden=cfg.hypernetwork.n_hidden,
    ).to(config.device(cfg))
    server = cfg.method.server
    optimizer = make_hypernetwork_optimizer(
        hypernetwork, server.lr, server.embed_lr, server.momentum, server.weight_decay
    )
    novel_optimizer = None
    if cfg.novel.clients:
        # no weight decay: only the novel clients' rows get gradients, so only they move
        embed_lr = server.lr if server.embed_lr is None else server.embed_lr
        novel_optimizer = torch.optim.SGD(
            hypernetwork.embeddings.parameters(),
            lr=embed_lr if cfg.novel.lr is None else cfg.novel.lr,
            momentum=server.momentum,
        )
    strategy = PFedHN(
        hypernetwork=hypernetwork,
        optimizer=optimizer,
        grad_clip=server.grad_clip,
        novel_optimizer=novel_optimizer,
        kept=head_names(config.model_spec(cfg)) if cfg.method.personal_head else (),
        client_state=cfg.method.personal_head,
        prefixes=[size_prefix(config.client_n_kernels(cfg, c)) for c in range(cfg.num_clients)]
        if cfg.model.sizes
        else None,
        **base,
    )
    for k in cfg.model.sizes or ():  # each size's clients reported apart too
        clients = [c for c in range(cfg.num_clients) if config.client_n_kernels(cfg, c) == k]
        strategy.history.groups[size_prefix(k).rstrip("/")] = ClientGroup(clients, 1, strategy.num_rounds)
    return strategy


def size_prefix(n_kernels: int) -> str:
    """The prefix of one target size's tensors in a multi-size hypernetwork, e.g. ``k16/``."""
    return f"k{n_kernels}/"


def generated_shapes(cfg: DictConfig) -> dict[str, torch.Size]:
    """What the hypernetwork generates: the target's tensors (but the head for pFedHN-PC), or,
    with ``model.sizes``, those of every size, each under its ``size_prefix``."""
    personal = cfg.method.personal_head
    if not cfg.model.sizes:
        return dict(parameter_shapes(config.model_spec(cfg), personal_head=personal))
    spec = config.model_spec(cfg)
    return {
        size_prefix(k) + name: shape
        for k in cfg.model.sizes
        for name, shape in parameter_shapes(dataclasses.replace(spec, n_kernels=int(k)), personal_head=personal).items()
    }


PFEDHN_CHECKS: config.Checks = {
    "hypernetwork.hidden_dim": (config.positive_int, "a positive integer"),
    "hypernetwork.n_hidden": (config.non_negative_int, "a non-negative integer"),
    "hypernetwork.embed_dim": (lambda v: v is None or config.positive_int(v), "null (auto) or a positive integer"),
    "method.server.lr": (config.positive, "a positive number"),
    "method.server.embed_lr": (lambda v: v is None or config.positive(v), "null (= lr) or a positive number"),
    "method.server.momentum": (config.non_negative, "a non-negative number"),
    "method.server.weight_decay": (config.non_negative, "a non-negative number"),
    "method.server.grad_clip": (config.positive, "a positive number"),
    "method.personal_head": (lambda v: isinstance(v, bool), "true or false"),
}

HEAD_CHECKS: config.Checks = {
    "method.head.lr": (config.positive, "a positive number"),
    "method.head.momentum": (config.non_negative, "a non-negative number"),
    "method.head.weight_decay": (config.non_negative, "a non-negative number"),
}


def pfedhn_checks(cfg: DictConfig) -> config.Checks:
    return {**PFEDHN_CHECKS, **(HEAD_CHECKS if cfg.method.personal_head else {})}
