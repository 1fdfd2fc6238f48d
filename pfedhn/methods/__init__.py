"""Registry of methods: ``method.strategy`` in the config → its strategy builder and its client side.

A method is one module here: a ``PersonalizedStrategy`` subclass (the server),
a builder from the config, and a ``ClientSide`` (what its client does with
the parameters it keeps). ``METHODS`` is the only place that names them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from pfedhn import config
from pfedhn.aggregation import StoredModels
from pfedhn.errors import ConfigError
from pfedhn.hypernetwork import HyperNetwork, LayerWeights, make_hypernetwork_optimizer
from pfedhn.methods.pfedhn import PFedHN, pfedhn_client_side
from pfedhn.methods.pfedla import PFedLA, pfedla_client_side
from pfedhn.model import TargetCNN, head_names, parameter_shapes
from pfedhn.strategy import ClientSide, PersonalizedStrategy


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
        kept=head_names(config.model_spec(cfg)) if cfg.method.personal_head else (),
        client_state=cfg.method.personal_head,
        **base,
    )


def build_pfedla(cfg: DictConfig, **base: Any) -> PFedLA:
    """pFedLA (``method.local_layers=0``) or HeurpFedLA (K > 0) from the config.

    Every client's model starts from one target network drawn from ``torch``'s
    global RNG, then each client's hypernetwork: seed it first.
    """
    initial = {name: p.detach() for name, p in TargetCNN(config.model_spec(cfg)).named_parameters()}
    layers: dict[str, list[str]] = {}
    for name in initial:
        layers.setdefault(name.rsplit(".", 1)[0], []).append(name)
    if cfg.method.local_layers > len(layers):
        raise ConfigError("method.local_layers", f"{cfg.method.local_layers} exceeds the {len(layers)} layers")
    hn, server = cfg.method.hypernetwork, cfg.method.server
    weights = nn.ModuleList(
        LayerWeights(len(layers), cfg.num_clients, hn.embed_dim, hn.hidden_dim, hn.n_hidden)
        for _ in range(cfg.num_clients)
    )
    optimizers = [torch.optim.SGD(w.parameters(), lr=server.lr, momentum=server.momentum) for w in weights]
    return PFedLA(
        models=StoredModels(initial, cfg.num_clients),
        layers=layers,
        weights=weights,
        optimizers=optimizers,
        local_layers=cfg.method.local_layers,
        **base,
    )


def pfedhn_checks(cfg: DictConfig) -> config.Checks:
    return {**config.PFEDHN_CHECKS, **(config.HEAD_CHECKS if cfg.method.personal_head else {})}


@dataclass(frozen=True)
class Method:
    """A method's parts: ``build(cfg, **base) → strategy``, ``client_side(cfg)`` and
    ``checks(cfg)``, its config keys (key → (test, what it must be))."""

    build: Callable[..., PersonalizedStrategy]
    client_side: Callable[[DictConfig], ClientSide]
    checks: Callable[[DictConfig], config.Checks]


METHODS: dict[str, Method] = {
    "pfedhn": Method(build_pfedhn, pfedhn_client_side, pfedhn_checks),
    "pfedla": Method(build_pfedla, pfedla_client_side, lambda cfg: config.PFEDLA_CHECKS),
}


def client_side(cfg: DictConfig) -> ClientSide:
    """The ``ClientSide`` of the method ``cfg.method.strategy``."""
    return METHODS[cfg.method.strategy].client_side(cfg)


def build_strategy(cfg: DictConfig, **run: Any) -> PersonalizedStrategy:
    """The strategy named by ``method.strategy`` for the experiment ``cfg``, seeded by ``seed``.

    ``run`` holds the run's own ``PersonalizedStrategy`` arguments (history,
    results_path, progress, checkpoint_path, checkpoint_every). Flower runs
    ``num_rounds + novel.rounds`` rounds.
    """
    torch.manual_seed(cfg.seed)
    return METHODS[cfg.method.strategy].build(
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
