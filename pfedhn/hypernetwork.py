"""The hypernetworks: pFedHN's (client embedding → target weights) with its update from a
returned delta, and pFedLA's per-client `LayerWeights` (embedding → layer-wise aggregation weights)."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence

import torch
from torch import nn


class HyperNetwork(nn.Module):
    """Client embedding → MLP → one linear head per target tensor.

    ``embeddings`` (num_clients, embed_dim) → Linear(embed_dim, hidden) →
    ``n_hidden`` × [ReLU, Linear(hidden, hidden)] → for each target tensor a
    Linear(hidden, numel) reshaped to that tensor's shape. ``forward(client)``
    returns a dict keyed like ``shapes`` (the target's parameter names; with several target
    sizes, each prefixed by its size's ``k<n>/``).

    Parameters
    ----------
    shapes : Mapping[str, torch.Size]
        Name → shape of every tensor to generate, in the target's order.
    num_clients : int
        Rows of the embedding table.
    embed_dim : int
        Embedding size; the paper uses ``int(1 + num_clients / 4)``.
    hidden_dim : int
        Width of the MLP's layers (``method.hypernetwork.hidden_dim``).
    n_hidden : int
        Hidden ReLU + Linear blocks after the first Linear (``method.hypernetwork.n_hidden``).
    """

    def __init__(
        self,
        shapes: Mapping[str, torch.Size],
        num_clients: int,
        embed_dim: int,
        hidden_dim: int,
        n_hidden: int,
    ) -> None:
        super().__init__()
        self.shapes = dict(shapes)
        self.embeddings = nn.Embedding(num_clients, embed_dim)
        layers: list[nn.Module] = [nn.Linear(embed_dim, hidden_dim)]
        for _ in range(n_hidden):
            layers += [nn.ReLU(), nn.Linear(hidden_dim, hidden_dim)]
        self.mlp = nn.Sequential(*layers)
        self.heads = nn.ModuleList(nn.Linear(hidden_dim, shape.numel()) for shape in self.shapes.values())

    def forward(self, client: int, names: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        """Generate the target weights of ``client``: name → tensor of the target's shape; only
        the tensors in ``names`` (in ``shapes`` order) if given, e.g. those of one target size."""
        index = torch.tensor(client, device=self.embeddings.weight.device)
        features = self.mlp(self.embeddings(index))
        return {
            name: head(features).view(shape)
            for (name, shape), head in zip(self.shapes.items(), self.heads)
            if names is None or name in names
        }

    def generate(self, clients: Sequence[int], names: Collection[str] | None = None) -> list[dict[str, torch.Tensor]]:
        """``forward`` for several clients at once, one matrix product per head: per client in
        ``clients``, name → tensor (a view into the batch's output). Equal to ``forward`` up to
        float rounding; many times faster for many clients (each head's weights are read once)."""
        index = torch.tensor(list(clients), device=self.embeddings.weight.device)
        features = self.mlp(self.embeddings(index))
        batch = {
            name: head(features).view(len(clients), *shape)
            for (name, shape), head in zip(self.shapes.items(), self.heads)
            if names is None or name in names
        }
        return [{name: tensors[i] for name, tensors in batch.items()} for i in range(len(clients))]


Generate = Callable[[int, Collection[str]], Mapping[str, torch.Tensor]]


def delta_gradients(
    params: Sequence[nn.Parameter], generate: Generate, client: int, delta: Mapping[str, torch.Tensor]
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Gradients w.r.t. ``params`` of ½‖θ̃ − θ_trained‖², θ̃ = ``generate(client, names)`` the
    tensors the server made for ``client`` (differentiable in ``params``) and θ_trained = θ̃ + ``delta``
    held fixed; and θ̃ (detached).

    ``delta`` is θ_trained − θ̃ as the client returns it; ``generate`` must make exactly its
    tensors. The gradient is the vector–Jacobian product (∂θ̃/∂params)ᵀ(−delta), the official
    pFedHN code's update: a descent step on it moves θ̃ toward the trained weights. A parameter
    that θ̃ does not depend on (another target size's head) gets zeros.
    """
    with torch.enable_grad():
        generated = generate(client, set(delta))
        if set(generated) != set(delta):
            raise ValueError(f"client {client} returned {sorted(delta)}, expected {sorted(generated)}")
        names = list(generated)
        grads = torch.autograd.grad(
            [generated[n] for n in names], list(params), grad_outputs=[-delta[n] for n in names], allow_unused=True
        )
    zeros_for_unused = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    return zeros_for_unused, {n: generated[n].detach() for n in names}


def step_toward_trained(
    optimizer: torch.optim.Optimizer,
    generate: Generate,
    deltas: Mapping[int, Mapping[str, torch.Tensor]],
    grad_clip: float | None = None,
) -> tuple[float, dict[int, dict[str, torch.Tensor]]]:
    """One step of ``optimizer`` from the deltas of a round's clients (client → delta): the
    server's update of pFedHN's hypernetwork and of each pFedLA client's.

    Only the parameters ``optimizer`` holds get gradients (the embeddings alone for
    pFedHN's novel clients). ``delta_gradients`` are averaged over clients, clipped to
    norm ``grad_clip`` (None: not clipped) and applied. Returns the gradient norm before
    clipping, and per client the tensors generated for it (before the step).
    """
    optimizer.zero_grad(set_to_none=True)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    total: list[torch.Tensor] = []
    generated = {}
    for client, delta in deltas.items():
        grads, generated[client] = delta_gradients(params, generate, client, delta)
        total = grads if not total else [acc.add_(grad) for acc, grad in zip(total, grads)]
    for param, grad in zip(params, total):
        param.grad = grad.div_(len(deltas))
    norm = torch.nn.utils.clip_grad_norm_(params, math.inf if grad_clip is None else grad_clip)
    optimizer.step()
    return float(norm), generated


def make_hypernetwork_optimizer(
    hypernetwork: HyperNetwork,
    lr: float,
    embed_lr: float | None,
    momentum: float,
    weight_decay: float,
) -> torch.optim.SGD:
    """SGD on the MLP and heads at ``lr`` and on the embeddings at ``embed_lr`` (default ``lr``)."""
    embeddings = list(hypernetwork.embeddings.parameters())
    embedding_ids = {id(p) for p in embeddings}
    body = [p for p in hypernetwork.parameters() if id(p) not in embedding_ids]
    return torch.optim.SGD(
        [{"params": body}, {"params": embeddings, "lr": lr if embed_lr is None else embed_lr}],
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
    )


class LayerWeights(nn.Module):
    """pFedLA's hypernetwork of one client: its embedding → MLP → one head per layer.

    ``v`` (embed_dim) → ``n_hidden`` × [Linear(·, hidden), ReLU] → for each of
    ``num_layers`` layers a Linear(hidden, num_clients) (weights U(0, 1), bias 0,
    as both public re-implementations) → ReLU. ``forward()`` returns the raw,
    non-negative scores (num_layers, num_clients); ``normalize_rows`` turns them
    into aggregation weights.
    """

    def __init__(self, num_layers: int, num_clients: int, embed_dim: int, hidden_dim: int, n_hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(embed_dim))  # nn.Embedding's N(0, 1)
        layers: list[nn.Module] = []
        for i in range(n_hidden):
            layers += [nn.Linear(embed_dim if i == 0 else hidden_dim, hidden_dim), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.heads = nn.ModuleList(
            nn.Linear(hidden_dim if n_hidden else embed_dim, num_clients) for _ in range(num_layers)
        )
        for head in self.heads:
            nn.init.uniform_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self) -> torch.Tensor:
        """(num_layers, num_clients) non-negative scores."""
        features = self.mlp(self.embedding)
        return torch.stack([torch.relu(head(features)) for head in self.heads])


def normalize_rows(scores: torch.Tensor, own: int) -> torch.Tensor:
    """Each row of ``scores`` (layers, clients) divided by its sum; a row that is all zero
    (every ReLU off) becomes one-hot on client ``own``: that layer is not aggregated."""
    sums = scores.sum(dim=1, keepdim=True)
    dead = sums.squeeze(1) == 0
    weights = scores / torch.where(sums == 0, torch.ones_like(sums), sums)
    if dead.any():
        one_hot = torch.zeros_like(scores[0])
        one_hot[own] = 1.0
        weights = torch.where(dead.unsqueeze(1), one_hot, weights)
    return weights
