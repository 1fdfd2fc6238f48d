"""The one local trainer and the one evaluation pass every method uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from pfedhn.dataset import normalize


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``mean`` and ``std``, each shaped (1, C, 1, 1)."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def of(cls, mean: Sequence[float], std: Sequence[float]) -> Normalization:
        return cls(torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1))

    def to(self, device: torch.device) -> Normalization:
        return Normalization(self.mean.to(device), self.std.to(device))


@dataclass(frozen=True)
class EvalResult:
    """Summed cross-entropy, number correct and number of samples of one split."""

    loss_sum: float
    correct: int
    count: int


def batch_indices(
    num_samples: int, batch_size: int, steps: int | None, epochs: int | None, generator: torch.Generator
) -> list[torch.Tensor]:
    """The batches of one round, as index tensors into the client's data.

    ``steps``: that many batches, each ``batch_size`` samples drawn without
    replacement afresh (the official pFedHN law, ``next(iter(DataLoader(shuffle=True)))``).
    ``epochs`` (when not None, instead): that many passes, each over a fresh
    permutation cut into batches of ``batch_size`` (the last one smaller), as a
    shuffling ``DataLoader`` iterated ``epochs`` times.
    """
    if epochs is None:
        if steps is None:
            raise ValueError("give steps or epochs")
        return [torch.randperm(num_samples, generator=generator)[:batch_size] for _ in range(steps)]
    return [
        batch for _ in range(epochs) for batch in torch.randperm(num_samples, generator=generator).split(batch_size)
    ]


def whole_steps(batches: list[torch.Tensor], per_step: int) -> list[torch.Tensor]:
    """The leading ``batches`` that make whole steps of ``per_step`` batches each: in epochs
    mode an epoch's batch count need not divide by a method's batches per step (Per-FedAvg's
    2 or 3), and the at most ``per_step`` − 1 trailing batches are dropped."""
    return batches[: len(batches) - len(batches) % per_step]


Batch = tuple[torch.Tensor, torch.Tensor]  # normalized float images (b, C, H, W), labels (b,)


def loss_and_gradient(
    model: nn.Module, weights: Mapping[str, torch.Tensor], batch: Batch
) -> tuple[float, dict[str, torch.Tensor]]:
    """Cross-entropy of ``model`` with ``weights`` on ``batch`` and its gradient (name → tensor)."""
    leaves = {name: w.detach().requires_grad_() for name, w in weights.items()}
    images, labels = batch
    loss = F.cross_entropy(functional_call(model, leaves, (images,)), labels)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return loss.item(), dict(zip(leaves, grads))


class LocalObjective:
    """What one local step does with its batches: the part of local training a method may change.

    This base is plain SGD on the cross-entropy of one batch (every method without an
    objective of its own). A method that needs another (Per-FedAvg's meta-gradient,
    pFedMe's Moreau envelope) subclasses it in its own file; the trainer, batches,
    seeds and clipping stay the one ``train_local``.
    """

    batches_per_step = 1

    def step(
        self,
        model: nn.Module,
        batches: Sequence[Batch],
        optimizers: Sequence[torch.optim.Optimizer],
        clipped: Sequence[nn.Parameter],
        grad_clip: float,
    ) -> float:
        """One update of ``model`` from ``batches_per_step`` batches; the step's loss.

        Plain SGD: zero the gradients, backpropagate ``loss`` of the batch, clip the
        gradient of ``clipped`` to norm ``grad_clip``, step every optimizer.
        """
        (batch,) = batches
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        minimized, reported = self.loss(model, batch)
        minimized.backward()
        torch.nn.utils.clip_grad_norm_(clipped, grad_clip)
        for optimizer in optimizers:
            optimizer.step()
        return reported.item()

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the step minimizes, what it reports) on ``batch``: the cross-entropy, both, here
        (FedAMP adds its proximal term to the first)."""
        images, labels = batch
        loss = F.cross_entropy(model(images), labels)
        return loss, loss

    def kept(self) -> dict[str, torch.Tensor]:
        """State the client keeps after training, name → tensor, each name under its method's
        ``Keeping.personal`` prefix (pFedMe: its personalized model); none here."""
        return {}


def train_local(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    norm: Normalization,
    *,
    batches: list[torch.Tensor],
    optimizers: Sequence[torch.optim.Optimizer],
    clipped: Sequence[nn.Parameter],
    grad_clip: float,
    objective: LocalObjective | None = None,
) -> float:
    """One ``objective`` step per ``objective.batches_per_step`` consecutive batches of
    ``batches`` (index tensors, see ``batch_indices``); the mean loss of the steps.

    ``images`` are the client's uint8 (n, C, H, W), ``labels`` (n,). ``objective``
    None is plain SGD (``LocalObjective``): before each step the gradient of
    ``clipped`` is clipped to norm ``grad_clip``, then every optimizer steps.
    """
    objective = LocalObjective() if objective is None else objective
    per_step = objective.batches_per_step
    if len(batches) % per_step:
        raise ValueError(f"{len(batches)} batches do not make whole steps of {per_step}")
    model.train()
    losses = []
    for start in range(0, len(batches), per_step):
        data = [(normalize(images[b], norm.mean, norm.std), labels[b]) for b in batches[start : start + per_step]]
        losses.append(objective.step(model, data, optimizers, clipped, grad_clip))
    return sum(losses) / len(losses)


@torch.no_grad()
def evaluate_splits(
    model: nn.Module,
    splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    norm: Normalization,
    batch_size: int,
) -> dict[str, EvalResult]:
    """``EvalResult`` of each split (name → (uint8 images (n, C, H, W), labels (n,))), all
    splits passed through ``model`` together in chunks of ``batch_size``: a client with
    little data makes one forward pass for its validation and test sets, not two."""
    model.eval()
    names = list(splits)
    images = torch.cat([splits[name][0] for name in names])
    labels = torch.cat([splits[name][1] for name in names])
    losses, hits = [], []
    for start in range(0, len(labels), batch_size):
        x = normalize(images[start : start + batch_size], norm.mean, norm.std)
        y = labels[start : start + batch_size]
        logits = model(x)
        losses.append(F.cross_entropy(logits, y, reduction="none"))
        hits.append(logits.argmax(1) == y)
    loss, hit = torch.cat(losses), torch.cat(hits)
    results, start = {}, 0
    for name in names:
        count = len(splits[name][1])
        segment = slice(start, start + count)
        results[name] = EvalResult(float(loss[segment].sum()), int(hit[segment].sum()), count)
        start += count
    return results
