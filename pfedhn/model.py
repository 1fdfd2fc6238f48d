"""The paper's target network: a LeNet-style CNN with a separable classifier head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

HEAD_PREFIX = "head."


@dataclass(frozen=True)
class ModelSpec:
    """Shape of the target CNN: input ``(in_channels, image_size, image_size)``."""

    in_channels: int
    image_size: int
    num_classes: int
    n_kernels: int


class TargetCNN(nn.Module):
    """conv(in, k, 5) → pool → conv(k, 2k, 5) → pool → fc 120 → fc 84 → head (classes).

    ReLU after every layer but the head; 2×2 max-pooling. Parameters named
    ``head.*`` form the classifier, which pFedHN-PC keeps on the client.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        k = spec.n_kernels
        side = ((spec.image_size - 4) // 2 - 4) // 2
        self.conv1 = nn.Conv2d(spec.in_channels, k, 5)
        self.conv2 = nn.Conv2d(k, 2 * k, 5)
        self.fc1 = nn.Linear(2 * k * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.head = make_head(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float → (B, num_classes) logits."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.head(x)


def make_head(spec: ModelSpec) -> nn.Linear:
    """The classifier head: Linear(84 → num_classes)."""
    return nn.Linear(84, spec.num_classes)


def parameter_shapes(spec: ModelSpec) -> dict[str, torch.Size]:
    """Name → shape of the target's tensors, in its order.

    It draws from torch's global RNG (the probe network's initialization), and pFedHN's
    builder calls it between seeding and the hypernetwork's initialization, so every
    landed pFedHN result depends on that draw: keep it, or accept that they all change.
    """
    return {name: param.shape for name, param in TargetCNN(spec).named_parameters()}


def head_names(spec: ModelSpec) -> tuple[str, ...]:
    """Names of the classifier head's parameters (``head.weight``, ``head.bias``); draws no random numbers."""
    with torch.random.fork_rng():
        return tuple(name for name, _ in TargetCNN(spec).named_parameters() if name.startswith(HEAD_PREFIX))


def layers(spec: ModelSpec) -> dict[str, list[str]]:
    """Layer (``conv1``, ..., ``head``) → names of its tensors, in the target's order; draws no random numbers."""
    grouped: dict[str, list[str]] = {}
    with torch.random.fork_rng():
        for name, _ in TargetCNN(spec).named_parameters():
            grouped.setdefault(name.rsplit(".", 1)[0], []).append(name)
    return grouped
