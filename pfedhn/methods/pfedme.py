"""pFedMe (T. Dinh, Tran and Nguyen, NeurIPS 2020): personalization by Moreau envelopes.

Paper: https://arxiv.org/abs/2006.08848

Client i solves, per batch, θ_i ≈ argmin_θ f_i(θ) + λ/2 ‖θ − w_i‖² with K gradient
steps, then moves its local model w_i toward θ_i; the server mixes the clients'
average into the global model with β. The client keeps θ_i, its personalized
model, and is evaluated with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from pfedhn.checks import non_negative, positive, positive_int
from pfedhn.global_average import GlobalAverage, build_global_average, initial_weights
from pfedhn.method import MethodSpec, TableRows, by_name
from pfedhn.protocol import ClientSide, Keeping
from pfedhn.schedule import Schedule
from pfedhn.train import Batch, LocalObjective, loss_and_gradient

PERSONAL_PREFIX = "personal."  # store entries holding θ_i
# the client SGD keys its own updates replace (η, η_p, μ, no clipping)
UNREAD_KEYS = ("client.lr", "client.momentum", "client.weight_decay", "client.grad_clip")


class PFedMeObjective(LocalObjective):
    """One pFedMe local step on one batch D (the official code's ``UserpFedMe.train`` loop body):

    - K times: θ ← θ − η_p (∇f(θ; D) + λ (θ − w) + μ θ)   (the inner problem; η_p the personal lr)
    - then: w ← w − η λ (w − θ)

    θ starts each round from the model the client is sent (as in the official code) and
    carries over from step to step; w is ``model``'s parameters. No client optimizer or
    gradient clipping is used: the updates are the paper's.

    Parameters
    ----------
    model : nn.Module
        Holds w, the round's starting weights.
    lamda : float
        λ, the Moreau envelope's regularization.
    inner_steps : int
        K.
    personal_lr : float
        η_p.
    lr : float
        η, the local model's step.
    mu : float
        μ, weight decay of θ in the inner steps (0.001 in the official optimizer).
    """

    def __init__(
        self, model: nn.Module, lamda: float, inner_steps: int, personal_lr: float, lr: float, mu: float
    ) -> None:
        self.personal = {name: p.detach().clone() for name, p in model.named_parameters()}
        self.lamda = lamda
        self.inner_steps = inner_steps
        self.personal_lr = personal_lr
        self.lr = lr
        self.mu = mu

    def step(
        self,
        model: nn.Module,
        batches: Sequence[Batch],
        optimizers: Sequence[torch.optim.Optimizer],
        clipped: Sequence[nn.Parameter],
        grad_clip: float,
    ) -> float:
        (batch,) = batches
        params = dict(model.named_parameters())
        theta = self.personal
        for _ in range(self.inner_steps):
            loss, grad = loss_and_gradient(model, theta, batch)
            theta = {
                name: theta[name] - self.personal_lr * self._inner_gradient(theta[name], grad[name], params[name])
                for name in theta
            }
        self.personal = theta
        with torch.no_grad():
            for name, param in params.items():
                param.sub_(self.lr * self.lamda * (param - theta[name]))
        return loss

    def _inner_gradient(self, theta: torch.Tensor, grad: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """∇f(θ) + λ(θ − w) + μθ, the gradient of the inner problem (μ: the official code's decay)."""
        return grad + self.lamda * (theta - w.detach()) + self.mu * theta

    def kept(self) -> dict[str, torch.Tensor]:
        """θ_i, under ``PERSONAL_PREFIX``."""
        return {PERSONAL_PREFIX + name: tensor for name, tensor in self.personal.items()}


def pfedme_objective(cfg: DictConfig, model: nn.Module) -> PFedMeObjective:
    m = cfg.method
    return PFedMeObjective(model, lamda=m.lamda, inner_steps=m.inner_steps, personal_lr=m.personal_lr, lr=m.lr, mu=m.mu)


def build(cfg: DictConfig, schedule: Schedule) -> GlobalAverage:
    """The whole model averaged, mixed in with β; clients keep θ_i (so checkpoints collect it)."""
    return build_global_average(cfg, tuple(initial_weights(cfg)), mixing=cfg.method.beta, client_state=True)


SPEC = MethodSpec(
    build=build,
    checks=lambda cfg: {
        "method.lamda": (positive, "a positive number"),
        "method.inner_steps": (positive_int, "a positive integer"),
        "method.personal_lr": (positive, "a positive number"),
        "method.lr": (positive, "a positive number"),
        "method.beta": (positive, "a positive number"),
        "method.mu": (non_negative, "a non-negative number"),
    },
    rows=TableRows(by_name, {"pfedme": "pFedMe"}),
    client_side=lambda cfg: ClientSide(Keeping(personal=PERSONAL_PREFIX), objective=pfedme_objective),
    unread_keys=lambda cfg: UNREAD_KEYS,
)
