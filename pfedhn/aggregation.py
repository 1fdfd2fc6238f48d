"""Server-side per-client aggregation: every client's latest model, and weighted sums of them.

pFedLA (a hypernetwork per client gives the weights), FedAMP (an attention on
parameter distances) and FedFomo (loss improvements) all keep the clients'
models on the server and build client i's model as a weighted sum of them; they
differ only in where the weights come from. ``StoredModels`` is the part they
share.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch


class StoredModels:
    """Every client's latest model: parameter name → tensor (num_clients, *shape).

    Memory is ``num_clients`` × the model's size (CIFAR-10's target CNN, 121,182
    float32 parameters: 0.48 MB a client, 24 MB for 50).

    Parameters
    ----------
    initial : Mapping[str, torch.Tensor]
        The model every client starts from (one shared initialization).
    num_clients : int
    """

    def __init__(self, initial: Mapping[str, torch.Tensor], num_clients: int) -> None:
        self.tensors = {
            name: tensor.detach().unsqueeze(0).repeat(num_clients, *[1] * tensor.dim())
            for name, tensor in initial.items()
        }

    def __len__(self) -> int:
        """The number of clients."""
        return len(next(iter(self.tensors.values())))

    @property
    def device(self) -> torch.device:
        """Where the stored models live (the device of the initial model)."""
        return next(iter(self.tensors.values())).device

    def of(self, client: int) -> dict[str, torch.Tensor]:
        """Client ``client``'s model (views into the store)."""
        return {name: stacked[client] for name, stacked in self.tensors.items()}

    def set(self, client: int, tensors: Mapping[str, torch.Tensor]) -> None:
        """Replace client ``client``'s ``tensors`` (any subset of the names)."""
        for name, tensor in tensors.items():
            self.tensors[name][client] = tensor.detach()

    def weighted_sum(self, weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """name → Σ_j weights[name][j] · θ_j[name], for each name in ``weights`` (each (num_clients,)).

        Differentiable in ``weights``: the server steps whatever produced them.
        """
        return {name: torch.tensordot(w, self.tensors[name], dims=1) for name, w in weights.items()}

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self.tensors)

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        device = self.device
        self.tensors = {name: tensor.to(device).clone() for name, tensor in state.items()}


def arrays(tensors: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """name → the tensor as a CPU numpy array (what a ``ClientModel`` carries)."""
    return {name: tensor.cpu().numpy() for name, tensor in tensors.items()}
