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

from pfedhn import config
from pfedhn.methods.fedavg import FEDAVG_CHECKS, build_fedavg, fedavg_client_side, kept_from_initial_side
from pfedhn.methods.fedper import build_fedper
from pfedhn.methods.lgfedavg import build_lgfedavg
from pfedhn.methods.local import build_local
from pfedhn.methods.perfedavg import PERFEDAVG_CHECKS, build_perfedavg, perfedavg_client_side
from pfedhn.methods.pfedhn import build_pfedhn, pfedhn_checks, pfedhn_client_side
from pfedhn.methods.pfedla import build_pfedla, pfedla_checks, pfedla_client_side
from pfedhn.methods.pfedme import PFEDME_CHECKS, build_pfedme, pfedme_client_side
from pfedhn.protocol import ClientSide
from pfedhn.strategy import PersonalizedStrategy


@dataclass(frozen=True)
class Method:
    """A method's parts: ``build(cfg, **base) → strategy``, ``client_side(cfg)`` and
    ``checks(cfg)``, its config keys (key → (test, what it must be))."""

    build: Callable[..., PersonalizedStrategy]
    client_side: Callable[[DictConfig], ClientSide]
    checks: Callable[[DictConfig], config.Checks]
    multi_size: bool = False  # serves clients with targets of different sizes (``model.sizes``)
    novel_phase: bool = False  # learns only novel clients' own part late in a run (``novel.clients``, Sec. 5.3)


METHODS: dict[str, Method] = {
    "pfedhn": Method(build_pfedhn, pfedhn_client_side, pfedhn_checks, multi_size=True, novel_phase=True),
    "pfedla": Method(build_pfedla, pfedla_client_side, pfedla_checks),
    "local": Method(build_local, kept_from_initial_side, lambda cfg: {}),
    "fedavg": Method(build_fedavg, fedavg_client_side, lambda cfg: FEDAVG_CHECKS),
    "fedper": Method(build_fedper, kept_from_initial_side, lambda cfg: {}),
    "lgfedavg": Method(build_lgfedavg, kept_from_initial_side, lambda cfg: {}),
    "perfedavg": Method(build_perfedavg, perfedavg_client_side, lambda cfg: PERFEDAVG_CHECKS),
    "pfedme": Method(build_pfedme, pfedme_client_side, lambda cfg: PFEDME_CHECKS),
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
        faults=config.fault_policy(cfg),
        **run,
    )
