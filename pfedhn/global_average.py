"""The global-model averaging the reference methods share: one global copy of the parameters
a method shares, averaged over the round's clients (FedAvg, FedPer, LG-FedAvg, Local,
Per-FedAvg, pFedMe), and the one initial model every client and the server start from
(FedAMP and FedFomo too)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.common import Scalar
from flwr.server.strategy.aggregate import aggregate
from omegaconf import DictConfig

from pfedhn import config
from pfedhn.method import Method
from pfedhn.model import TargetCNN
from pfedhn.protocol import ClientModel, ClientSide, Keeping
from pfedhn.schedule import Schedule
from pfedhn.utils import derive_seed

INIT_STREAM = 5  # tag of the shared initial model's derived seed


class GlobalAverage(Method):
    """One global copy of the parameters in ``shared``, averaged over the round's clients;
    every client keeps the other parameters of its model.

    Client i receives the global values of ``shared`` and takes the rest from its own
    store (``ClientModel.keep``), trains the whole model and returns the change
    Δ_i of ``shared``. The server then sets w ← w + β Σ_i n_i Δ_i / Σ_i n_i with
    Flower's weighted average (``flwr.server.strategy.aggregate.aggregate``) and
    n_i the client's training samples: with β = 1 (FedAvg), w becomes the
    sample-weighted average of the trained models, as Flower's ``FedAvg`` computes it.

    Parameters
    ----------
    initial : dict[str, np.ndarray]
        The model every client starts from (``initial_weights``), name → array.
    shared : tuple[str, ...]
        The averaged parameters: all (FedAvg, Per-FedAvg, pFedMe), the body (FedPer),
        the head (LG-FedAvg) or none (Local).
    mixing : float (default: 1.0)
        β, the server's step toward the clients' average (pFedMe's β; 1: FedAvg).
    client_state : bool | None (default: None)
        Its clients keep state; None: when they keep parameters (``shared`` is not all).
    """

    def __init__(
        self,
        initial: dict[str, np.ndarray],
        shared: tuple[str, ...],
        mixing: float = 1.0,
        client_state: bool | None = None,
    ) -> None:
        unknown = set(shared) - set(initial)
        if unknown:
            raise ValueError(f"shared parameters not in the model: {sorted(unknown)}")
        self.shared = shared
        self.kept = tuple(name for name in initial if name not in shared)
        self.weights = {name: initial[name].copy() for name in shared}
        self.mixing = mixing
        self.client_state = bool(self.kept) if client_state is None else client_state

    def __repr__(self) -> str:
        return f"GlobalAverage(shared={list(self.shared)}, kept={list(self.kept)}, mixing={self.mixing})"

    def client_model(self, client: int, server_round: int, training: bool) -> ClientModel:
        """The global ``shared`` parameters; the client keeps the rest."""
        return ClientModel(dict(self.weights), keep=self.kept)

    def apply_updates(
        self,
        server_round: int,
        updates: dict[int, dict[str, np.ndarray]],
        num_examples: dict[int, int] | None = None,
    ) -> dict[str, Scalar]:
        """w ← w + β · (the ``num_examples``-weighted average of the returned Δ; equal weights if None)."""
        if not self.shared:
            return {}
        clients = sorted(updates)
        counts = num_examples if num_examples is not None else dict.fromkeys(clients, 1)
        average = aggregate([([updates[c][name] for name in self.shared], counts[c]) for c in clients])
        for name, step in zip(self.shared, average, strict=True):
            self.weights[name] = (self.weights[name] + self.mixing * step).astype(np.float32)
        return {"update_norm": float(np.sqrt(sum(float(np.sum(step**2)) for step in average)))}

    def server_state(self) -> dict[str, Any]:
        """The global parameters."""
        return {"weights": {name: torch.from_numpy(array) for name, array in self.weights.items()}}

    def load_server_state(self, state: dict[str, Any]) -> None:
        self.weights = {name: state["weights"][name].numpy().copy() for name in self.shared}


def initial_weights(cfg: DictConfig) -> dict[str, torch.Tensor]:
    """The one model all clients and the server start from, seeded by ``seed`` alone
    (so a client makes the same one the server does, without being sent it)."""
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(cfg.seed, INIT_STREAM))
        model = TargetCNN(config.model_spec(cfg))
    return {name: param.detach() for name, param in model.named_parameters()}


def init_kept_from_initial(cfg: DictConfig, partition_id: int) -> dict[str, torch.Tensor]:
    """``Keeping.initial`` of the averaging methods: all of ``initial_weights`` (the
    client keeps the part its ``ClientModel.keep`` names)."""
    return initial_weights(cfg)


def kept_from_initial_side(cfg: DictConfig) -> ClientSide:
    """The client side of Local, FedPer and LG-FedAvg: what a client keeps (the layers the
    server does not share) starts from the shared initial model and is trained as sent."""
    return ClientSide(Keeping(initial=init_kept_from_initial))


def average_everything(cfg: DictConfig, schedule: Schedule) -> GlobalAverage:
    """FedAvg's server: every parameter global (also Per-FedAvg's)."""
    return build_global_average(cfg, tuple(initial_weights(cfg)))


def build_global_average(cfg: DictConfig, shared: tuple[str, ...], **options: Any) -> GlobalAverage:
    """A ``GlobalAverage`` of ``shared`` from ``initial_weights`` (``options``: its mixing, client_state)."""
    initial = {name: tensor.numpy() for name, tensor in initial_weights(cfg).items()}
    return GlobalAverage(initial, shared, **options)
