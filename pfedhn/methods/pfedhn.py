"""pFedHN and pFedHN-PC: a server-side hypernetwork generates each client's model."""

from __future__ import annotations

from typing import Any

import torch
from flwr.common import NDArrays, Scalar

from pfedhn.hypernetwork import HyperNetwork, step_hypernetwork
from pfedhn.strategy import PersonalizedStrategy


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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hypernetwork = hypernetwork
        self.optimizer = optimizer
        self.novel_optimizer = novel_optimizer
        self.grad_clip = grad_clip

    def __repr__(self) -> str:
        generated = sum(shape.numel() for shape in self.hypernetwork.shapes.values())
        size = sum(p.numel() for p in self.hypernetwork.parameters())
        return f"{super().__repr__()[:-1]}, generated={generated}, hypernetwork_params={size})"

    @torch.no_grad()
    def client_parameters(self, client: int) -> NDArrays:
        """θ̃_client = h(v_client; φ), one array per generated tensor."""
        return [t.numpy() for t in self.hypernetwork(client).values()]

    def apply_updates(self, server_round: int, updates: dict[int, NDArrays]) -> dict[str, Scalar]:
        """One hypernetwork step from the returned deltas (averaged if several clients)."""
        names = list(self.hypernetwork.shapes)
        deltas = {
            client: {name: torch.from_numpy(array) for name, array in zip(names, arrays, strict=True)}
            for client, arrays in updates.items()
        }
        optimizer = self.novel_optimizer if self.is_novel_round(server_round) else self.optimizer
        if optimizer is None:
            raise ValueError("novel-client rounds need a novel_optimizer")
        norm = step_hypernetwork(self.hypernetwork, optimizer, deltas, self.grad_clip)
        return {"hypernetwork_grad_norm": norm}

    def server_state(self) -> dict[str, Any]:
        """Hypernetwork (embeddings included) and optimizer state."""
        state = {"hypernetwork": self.hypernetwork.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.novel_optimizer is not None:
            state["novel_optimizer"] = self.novel_optimizer.state_dict()
        return state

    def load_server_state(self, state: dict[str, Any]) -> None:
        self.hypernetwork.load_state_dict(state["hypernetwork"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.novel_optimizer is not None:
            self.novel_optimizer.load_state_dict(state["novel_optimizer"])
