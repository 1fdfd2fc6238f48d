"""Registry of methods: ``method.strategy`` in the config → a strategy builder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig

from pfedhn import config
from pfedhn.hypernetwork import HyperNetwork, make_hypernetwork_optimizer
from pfedhn.methods.pfedhn import PFedHN
from pfedhn.model import parameter_shapes
from pfedhn.strategy import PersonalizedStrategy


def build_pfedhn(cfg: DictConfig, **base: Any) -> PFedHN:
    """pFedHN (``method.personal_head=false``) or pFedHN-PC (``true``) from the config.

    The hypernetwork is initialized from ``torch``'s global RNG: seed it first.
    """
    hypernetwork = HyperNetwork(
        parameter_shapes(config.model_spec(cfg), personal_head=cfg.method.personal_head),
        num_clients=cfg.num_clients,
        embed_dim=config.embed_dim(cfg),
        hidden_dim=cfg.hypernetwork.hidden_dim,
        n_hidden=cfg.hypernetwork.n_hidden,
    )
    server = cfg.method.server
    optimizer = make_hypernetwork_optimizer(
        hypernetwork, server.lr, server.embed_lr, server.momentum, server.weight_decay
    )
    novel_optimizer = None
    if cfg.novel.clients:
        # no weight decay: only the novel clients' rows get gradients, so only they move
        novel_optimizer = torch.optim.SGD(
            hypernetwork.embeddings.parameters(),
            lr=server.lr if server.embed_lr is None else server.embed_lr,
            momentum=server.momentum,
        )
    return PFedHN(
        hypernetwork=hypernetwork,
        optimizer=optimizer,
        grad_clip=server.grad_clip,
        novel_optimizer=novel_optimizer,
        client_state=cfg.method.personal_head,
        **base,
    )


METHODS: dict[str, Callable[..., PersonalizedStrategy]] = {
    "pfedhn": build_pfedhn,
}


def build_strategy(cfg: DictConfig, **run: Any) -> PersonalizedStrategy:
    """The strategy named by ``method.strategy`` for the experiment ``cfg``, seeded by ``seed``.

    ``run`` holds the run's own ``PersonalizedStrategy`` arguments (history,
    results_path, progress, checkpoint_path, checkpoint_every). Flower runs
    ``num_rounds + novel.rounds`` rounds.
    """
    torch.manual_seed(cfg.seed)
    return METHODS[cfg.method.strategy](
        cfg,
        num_clients=cfg.num_clients,
        num_rounds=cfg.num_rounds + cfg.novel.rounds,
        clients_per_round=cfg.clients_per_round,
        eval_every=cfg.eval_every,
        seed=cfg.seed,
        novel_clients=cfg.novel.clients,
        novel_rounds=cfg.novel.rounds,
        **run,
    )
