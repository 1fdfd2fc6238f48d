"""The registry: ``method.strategy`` in the config → the method's ``MethodSpec``.

``METHODS`` is the only place that names them all; everything else asks it (the
driver for a method's server side and schedule, the client for its ``ClientSide``
and target, validation for its checks, the summarizer for its table rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig

from pfedhn import config
from pfedhn.method import MethodSpec, PaperValue
from pfedhn.methods import fedamp, fedavg, fedfomo, fedper, lgfedavg, local, perfedavg, pfedhn, pfedla, pfedme
from pfedhn.model import ModelSpec
from pfedhn.protocol import ClientSide
from pfedhn.report import Section
from pfedhn.strategy import FederatedStrategy

METHODS: dict[str, MethodSpec] = {  # in the order of results tables' rows
    "local": local.SPEC,
    "fedavg": fedavg.SPEC,
    "fedper": fedper.SPEC,
    "lgfedavg": lgfedavg.SPEC,
    "perfedavg": perfedavg.SPEC,
    "pfedme": pfedme.SPEC,
    "pfedhn": pfedhn.SPEC,
    "fedamp": fedamp.SPEC,
    "fedfomo": fedfomo.SPEC,
    "pfedla": pfedla.SPEC,
}


def spec_of(cfg: Mapping[str, Any]) -> MethodSpec:
    """The ``MethodSpec`` of a config's ``method.strategy`` (a composed config or a saved one)."""
    return METHODS[cfg["method"]["strategy"]]


def client_side(cfg: DictConfig) -> ClientSide:
    """What the client of ``cfg``'s method does beyond plain local SGD."""
    return spec_of(cfg).client_side(cfg)


def target_of(cfg: DictConfig, partition: int) -> ModelSpec:
    """Client ``partition``'s target network."""
    return spec_of(cfg).target(cfg, partition)


def build_strategy(cfg: DictConfig, **run: Any) -> FederatedStrategy:
    """The Flower strategy running the method of ``cfg``, seeded by ``seed``.

    ``run`` holds the run's own ``FederatedStrategy`` arguments (history, results_path,
    progress, checkpoint_path, checkpoint_every).
    """
    spec = spec_of(cfg)
    schedule = spec.schedule(cfg)
    torch.manual_seed(cfg.seed)
    method = spec.build(cfg, schedule)
    if spec.client_side(cfg).keeping.personal is not None and not method.client_state:
        raise ValueError(f"{cfg.method.name}: its clients keep a personalized model; its Method must set client_state")
    return FederatedStrategy(
        method,
        schedule,
        clients_per_round=cfg.clients_per_round,
        seed=cfg.seed,
        faults=config.fault_policy(cfg),
        **run,
    )


def total_rounds(cfg: Mapping[str, Any]) -> int:
    """Rounds of a whole run (pFedHN's novel phase included), of a composed or a saved (migrated) config."""
    return spec_of(cfg).schedule(cfg).num_rounds


def novel_phase_keys(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """The keys a resumed run of ``cfg`` may change before its novel-client phase begins
    (``MethodSpec.novel_phase_keys``); none when its schedule has no such phase."""
    spec = spec_of(cfg)
    return spec.novel_phase_keys if spec.schedule(cfg).novel_clients else ()


def row_key(cfg: Mapping[str, Any]) -> str:
    """The results-table row of a run's config."""
    return spec_of(cfg).rows.key(cfg)


def table_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A run's method settings as results tables list them: its ``method.`` keys but its name
    and the keys older configs held at the top level (``MethodSpec.moved_keys``: tables list
    them as before, pFedHN's target sizes in the row's label)."""
    moved = {key.split(".")[-1] for key in spec_of(cfg).moved_keys}
    return {k: v for k, v in cfg["method"].items() if k not in ("name", "strategy", *moved)}


def unread_keys(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """The generic keys the method of ``cfg`` does not read (``MethodSpec.unread_keys``)."""
    return spec_of(cfg).unread_keys(cfg)


def paper_values() -> list[PaperValue]:
    """Every method's published values (``TableRows.paper``), in ``METHODS`` order."""
    return [value for spec in METHODS.values() for value in spec.rows.paper]


def sections() -> list[Section]:
    """Every method's own parts of the results tables (``TableRows.sections``), in ``METHODS`` order."""
    return [section for spec in METHODS.values() for section in spec.rows.sections]


def row_place(key: str) -> tuple[tuple[int, int], str]:
    """((the method's place in ``METHODS``, the row's among its rows), its label) of a row key;
    an unknown key goes last, labelled as itself."""
    for index, spec in enumerate(METHODS.values()):
        found = spec.rows.find(key)
        if found is not None:
            return (index, found[0]), found[1]
    return (len(METHODS), 0), key
