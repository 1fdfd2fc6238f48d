"""FedAMP (Huang et al., AAAI 2021): attentive message passing between clients' models.

Paper: https://arxiv.org/abs/2007.03797

The server keeps every client's latest model w_j. Client i's round starts from
u_i = Σ_j ξ_ij w_j, with ξ_ij = α·A'(‖w_i − w_j‖²) for j ≠ i, A'(x) = e^{−x/σ}/σ
(A(x) = 1 − e^{−x/σ}, the paper's attention-inducing function) and ξ_ii = 1 − Σ_{j≠i} ξ_ij:
models close to w_i weigh more. The client then minimizes F_i(w) + λ/(2α)‖w − u_i‖² by
local SGD from u_i (the paper's argmin names no start point: FLGo starts from u_i, PFLlib
from w_i), and the server stores the trained model as w_i, which is also the model client
i is evaluated with. Every u_i of a round reads the models as they stood at its start.
Choices where the paper is silent (EXTENDED_README, "FedAMP and FedFomo"): all clients'
stored models take part (the paper is cross-silo: every client every round); α is constant.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from flwr.common import Scalar
from omegaconf import DictConfig
from torch import nn

from pfedhn import config
from pfedhn.aggregation import StoredModels, arrays
from pfedhn.checks import positive
from pfedhn.global_average import initial_weights
from pfedhn.method import Method, MethodSpec, TableRows, by_name
from pfedhn.protocol import ClientModel, ClientSide
from pfedhn.report import pair_weights_section
from pfedhn.schedule import Schedule
from pfedhn.train import Batch, LocalObjective


def squared_distances(models: StoredModels, client: int) -> torch.Tensor:
    """‖w_client − w_j‖² for every stored model j: (num_clients,) float64."""
    own = models.of(client)
    return sum(
        ((stacked.double() - own[name].double()) ** 2).flatten(1).sum(1) for name, stacked in models.tensors.items()
    )


def attention(models: StoredModels, client: int, alpha: float, sigma: float) -> torch.Tensor:
    """ξ_client: (num_clients,) float64, Σ_j ξ_ij = 1 (``alpha`` = α, ``sigma`` = σ)."""
    xi = alpha * torch.exp(-squared_distances(models, client) / sigma) / sigma
    xi[client] = 0.0
    xi[client] = 1.0 - xi.sum()
    return xi


def message_passing(models: StoredModels, client: int, xi: torch.Tensor) -> dict[str, torch.Tensor]:
    """u_client = w_client + Σ_{j≠client} ξ_j (w_j − w_client): Σ_j ξ_j w_j written so that
    equal models give u = w exactly, however large ξ (a tiny σ)."""
    others = xi.clone()
    others[client] = 0.0
    u = {}
    for name, stacked in models.tensors.items():
        own = stacked[client]
        moved = torch.tensordot(others, (stacked - own).double(), dims=1)
        u[name] = (own.double() + moved).to(own.dtype)
    return u


class FedAMP(Method):
    """The server side: stored models, ξ and u_i; the client's is ``ProximalObjective``.

    Parameters
    ----------
    models : StoredModels
        Every client's latest model, all starting from one shared initialization.
    alpha : float
        α (the message-passing step).
    sigma : float
        σ of A'(x) = e^{−x/σ}/σ, on the scale of the squared distances between models.
    """

    def __init__(self, models: StoredModels, alpha: float, sigma: float) -> None:
        self.models, self.alpha, self.sigma = models, alpha, sigma
        self._sent: dict[int, dict[str, torch.Tensor]] = {}  # client → the u_i it trains from

    def __repr__(self) -> str:
        return f"FedAMP(alpha={self.alpha}, sigma={self.sigma})"

    @torch.no_grad()
    def client_model(self, client: int, server_round: int, training: bool) -> ClientModel:
        """Training: u_client; evaluation: w_client."""
        if not training:
            return ClientModel(arrays(self.models.of(client)))
        u = message_passing(self.models, client, attention(self.models, client, self.alpha, self.sigma))
        self._sent[client] = u
        return ClientModel(arrays(u))

    def apply_updates(
        self,
        server_round: int,
        updates: dict[int, dict[str, np.ndarray]],
        num_examples: dict[int, int] | None = None,
    ) -> dict[str, Scalar]:
        """w_i ← u_i + Δ_i, for every client of the round (after all of them: order-free)."""
        trained = {}
        for client, deltas in updates.items():
            sent = self._sent.pop(client)
            trained[client] = {n: sent[n] + torch.from_numpy(d).to(self.models.device) for n, d in deltas.items()}
        for client, tensors in trained.items():
            self.models.set(client, tensors)
        return {}

    def clients_failed(self, clients: list[int]) -> None:
        for client in clients:
            self._sent.pop(client, None)

    @torch.no_grad()
    def report(self) -> dict[str, Any]:
        """``attention``: ξ as a (client, client) nested list, row i is ξ_i, from the stored models now."""
        rows = [attention(self.models, c, self.alpha, self.sigma) for c in range(len(self.models))]
        return {"attention": torch.stack(rows).tolist()}

    def server_state(self) -> dict[str, Any]:
        return {"models": self.models.state()}

    def load_server_state(self, state: dict[str, Any]) -> None:
        self.models.load_state(state["models"])


class ProximalObjective(LocalObjective):
    """One local step on F_i(w) + λ/(2α)‖w − u‖², u the round's starting weights (FedAMP's u_i).

    The proximal term is differentiated (unlike PFLlib's FedAMP, whose detached term leaves
    plain SGD); the step's reported loss is the cross-entropy alone.
    """

    def __init__(self, model: nn.Module, weight: float) -> None:
        self.anchor = {name: p.detach().clone() for name, p in model.named_parameters()}
        self.weight = weight  # λ / α

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-entropy plus λ/(2α)‖w − u‖² to minimize; the cross-entropy to report."""
        images, labels = batch
        loss = F.cross_entropy(model(images), labels)
        proximal = sum(((p - self.anchor[n]) ** 2).sum() for n, p in model.named_parameters())
        return loss + 0.5 * self.weight * proximal, loss


def build(cfg: DictConfig, schedule: Schedule) -> FedAMP:
    initial = {name: t.to(config.device(cfg)) for name, t in initial_weights(cfg).items()}
    return FedAMP(StoredModels(initial, cfg.num_clients), cfg.method.alpha, cfg.method.sigma)


def proximal_objective(cfg: DictConfig, model: nn.Module) -> ProximalObjective:
    return ProximalObjective(model, cfg.method.lamda / cfg.method.alpha)


ATTENTION = pair_weights_section(
    "attention",
    "ξ",
    "attention ξ over whole models",
    "FedAMP's attention weights ξ over whole models at the end of the run (from the models the server "
    "stores then; row i: the weights of the model client i starts from), against the classes clients share:",
    columns=(("σ", lambda run: f"{run.result['config']['method']['sigma']:g}"),),
)

SPEC = MethodSpec(
    build=build,
    checks=lambda cfg: {
        "method.alpha": (positive, "a positive number (α, the message-passing step)"),
        "method.sigma": (positive, "a positive number (σ of the attention e^{-d/σ}/σ, d a squared distance)"),
        "method.lamda": (positive, "a positive number (λ of the proximal term λ/(2α)‖w − u‖²)"),
    },
    rows=TableRows(by_name, {"fedamp": "FedAMP"}, sections=(ATTENTION,)),
    client_side=lambda cfg: ClientSide(objective=proximal_objective),
)
