"""Per-FedAvg (Fallah, Mokhtari and Ozdaglar, NeurIPS 2020): FedAvg of a MAML objective.

Paper: https://arxiv.org/abs/2002.07948

Each local step minimizes f(w − α∇f(w)), the loss after one gradient step, in
the paper's first-order (FO) or Hessian-free (HF) form; the server averages as
FedAvg; a client evaluates the global model after one SGD step of size α on a
batch of its training data, the adaptation the method is trained for. A step takes 2 (FO) or
3 (HF) batches: ``client.inner_steps`` steps draw that many batches each; ``client.epochs``
passes are cut into steps in order (10 epochs of 100 batches: 500 FO steps, each batch used
once, as plain SGD uses it), a trailing batch that makes no whole step left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from pfedhn.checks import positive
from pfedhn.global_average import average_everything
from pfedhn.method import MethodSpec, TableRows
from pfedhn.protocol import Adaptation, ClientSide
from pfedhn.train import Batch, LocalObjective, loss_and_gradient

Weights = dict[str, torch.Tensor]
VARIANTS = ("fo", "hf")


class PerFedAvgObjective(LocalObjective):
    """One Per-FedAvg local step (the paper's Algorithm 1, lines 6-8), from independent batches
    D, D' (and D'' for HF) of the round:

    - w̃ = w − α ∇f(w; D)
    - g = ∇f(w̃; D')
    - FO: the update direction is g; HF: g − α d, with d = [∇f(w + δg; D'') − ∇f(w − δg; D'')] / (2δ)
      the finite-difference Hessian–vector product ∇²f(w; D'') g.

    The direction becomes the gradient of ``model``'s parameters, which is clipped and
    stepped by the client optimizer (β is its learning rate). The step's loss is f(w̃; D').
    """

    def __init__(self, alpha: float, variant: str, delta: float) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.alpha = alpha
        self.variant = variant
        self.delta = delta
        self.batches_per_step = 2 if variant == "fo" else 3

    def step(
        self,
        model: nn.Module,
        batches: Sequence[Batch],
        optimizers: Sequence[torch.optim.Optimizer],
        clipped: Sequence[nn.Parameter],
        grad_clip: float,
    ) -> float:
        params = dict(model.named_parameters())
        w = {name: p.detach() for name, p in params.items()}
        _, grad = loss_and_gradient(model, w, batches[0])
        adapted = {name: w[name] - self.alpha * grad[name] for name in w}
        loss, direction = loss_and_gradient(model, adapted, batches[1])
        if self.variant == "hf":
            plus = {name: w[name] + self.delta * direction[name] for name in w}
            minus = {name: w[name] - self.delta * direction[name] for name in w}
            _, grad_plus = loss_and_gradient(model, plus, batches[2])
            _, grad_minus = loss_and_gradient(model, minus, batches[2])
            direction = {
                name: direction[name] - self.alpha * (grad_plus[name] - grad_minus[name]) / (2 * self.delta)
                for name in w
            }
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        for name, param in params.items():
            param.grad = direction[name].clone()
        torch.nn.utils.clip_grad_norm_(clipped, grad_clip)
        for optimizer in optimizers:
            optimizer.step()
        return loss


def perfedavg_objective(cfg: DictConfig, model: nn.Module) -> PerFedAvgObjective:
    m = cfg.method
    return PerFedAvgObjective(alpha=m.alpha, variant=m.variant, delta=m.delta)


def one_step_adaptation(cfg: DictConfig) -> Adaptation:
    """Evaluation after one plain SGD step of size α on a training batch."""
    return Adaptation(steps=1, lr=cfg.method.alpha)


def row_key(cfg: Any) -> str:
    """``perfedavg`` (first order) or ``perfedavg_hf``."""
    variant = cfg["method"].get("variant", "fo")
    return "perfedavg" if variant == "fo" else f"perfedavg_{variant}"


SPEC = MethodSpec(
    build=average_everything,  # FedAvg's server
    checks=lambda cfg: {
        "method.variant": (lambda v: v in VARIANTS, f"one of {', '.join(VARIANTS)}"),
        "method.alpha": (positive, "a positive number"),
        "method.delta": (positive, "a positive number"),
    },
    rows=TableRows(row_key, {"perfedavg": "Per-FedAvg (FO)", "perfedavg_hf": "Per-FedAvg (HF)"}),
    client_side=lambda cfg: ClientSide(objective=perfedavg_objective, adaptation=one_step_adaptation),
)
