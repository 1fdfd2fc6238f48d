"""Checks a whole composed config: the generic keys (``pfedhn.config.CHECKS``), then the
method's (its ``MethodSpec.checks``), then the rules between keys.

Every check raises ``ConfigError`` naming the offending key, before any data is loaded
or any process is started.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pfedhn import config
from pfedhn.checks import Checks
from pfedhn.dataset import LOADERS
from pfedhn.errors import ConfigError
from pfedhn.methods import METHODS, unread_keys
from pfedhn.utils import flatten

log = logging.getLogger("pfedhn")


def validate(cfg: DictConfig, given: Collection[str] = ()) -> None:
    """Raise ``ConfigError`` on the first invalid key of a composed config; ``given``: the
    keys its overrides set (``config.given_keys``), of which those the run leaves unread are
    refused (``check_given_keys``)."""
    if cfg.dataset.name not in LOADERS:
        raise ConfigError("dataset.name", f"unknown dataset {cfg.dataset.name!r}; choose one of {sorted(LOADERS)}")
    if cfg.method.strategy not in METHODS:
        raise ConfigError("method.strategy", f"unknown {cfg.method.strategy!r}; choose one of {sorted(METHODS)}")
    apply_checks(cfg, config.CHECKS)  # first: a method's checks may read generic keys (its target's layers)
    method_checks = METHODS[cfg.method.strategy].checks(cfg)
    apply_checks(cfg, method_checks)
    check_method_keys(cfg, method_checks)
    check_given_keys(cfg, given, refuse=True)
    if cfg.clients_per_round > cfg.num_clients:
        raise ConfigError("clients_per_round", f"{cfg.clients_per_round} exceeds num_clients={cfg.num_clients}")
    config.device(cfg)  # an unavailable device fails here, before any data is loaded
    if cfg.simulation.client_gpus and cfg.simulation.backend != "ray":
        raise ConfigError("simulation.client_gpus", "GPU fractions need simulation.backend=ray")
    if cfg.dataset.classes_per_client > cfg.dataset.num_classes:
        raise ConfigError(
            "dataset.classes_per_client",
            f"{cfg.dataset.classes_per_client} classes per client, but the dataset has only {cfg.dataset.num_classes}",
        )
    if not cfg.dataset.prob_low <= cfg.dataset.prob_high:
        raise ConfigError("dataset.prob_low", "need 0 < dataset.prob_low <= dataset.prob_high")
    for key in ("dataset.mean", "dataset.std"):
        if len(OmegaConf.select(cfg, key)) != cfg.dataset.in_channels:
            raise ConfigError(key, f"needs one value per channel ({cfg.dataset.in_channels})")


def apply_checks(cfg: DictConfig, checks: Checks) -> None:
    """Raise ``ConfigError`` on the first key of ``checks`` whose value fails its test."""
    for key, (ok, expected) in checks.items():
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
        if not ok(value):
            raise ConfigError(key, f"must be {expected}, got {value!r}")


def check_method_keys(cfg: DictConfig, checks: Checks) -> None:
    """Raise ``ConfigError`` on a ``method.`` key the method does not read.

    A method reads ``method.name``, ``method.strategy`` and the ``method.`` keys of its
    checks; anything else under ``method`` is left over from another method's group or a
    preset (e.g. ``+experiment=pfedla_cifar10 method=local`` keeps pFedLA's server lr)
    and would be recorded in results.json as if it had been used.
    """
    read = {"method.name", "method.strategy"} | {key for key in checks if key.startswith("method.")}
    for key in flatten(OmegaConf.to_container(cfg.method), "method."):
        if key not in read:
            group = ".".join(key.split(".")[:2])  # method.server for method.server.lr
            raise ConfigError(
                key, f"method {cfg.method.name} does not read it; drop it (~{group}) or choose another method"
            )


def check_given_keys(cfg: DictConfig, given: Collection[str], refuse: bool) -> None:
    """Raise ``ConfigError`` (``refuse``) or warn on a key of ``given`` that the run leaves
    unread: one its method declares unread (``MethodSpec.unread_keys``), ``client.inner_steps``
    when rounds are ``client.epochs``. Callers warn in a sweep's cell, whose siblings may read
    the key (``method=fedavg,pfedme client.lr=0.05``), and on resuming a run that was given it
    (``config.check_resumable`` holds it at its value). A preset may set such keys
    (``+experiment=...`` sets client SGD for every method it is used with); Ray's resources
    are not checked (a sweep over ``simulation.backend`` gives them to both backends)."""
    unread = {key: f"method {cfg.method.name} does not read it" for key in unread_keys(cfg)}
    if cfg.client.epochs is not None:
        unread["client.inner_steps"] = "a round is client.epochs passes over the data, not steps"
    for key in sorted(set(given) & set(unread)):
        if refuse:
            raise ConfigError(key, f"{unread[key]}; drop it")
        log.warning("%s: %s; the run goes on without it", key, unread[key])


def from_run_config(run_config: dict[str, Any]) -> DictConfig:
    """The config of a ``flwr run``: ``conf/`` composed with the run config's
    ``overrides`` (a space-separated string of Hydra overrides). ``resume`` is refused:
    every ``flwr run`` is a new run with its own directory (the ServerApp loads no
    checkpoint; resuming would also have to put the clients' stores back on the SuperNodes)."""
    overrides = str(run_config.get("overrides", "")).split()
    cfg = config.compose(overrides)
    validate(cfg, config.given_keys(overrides))
    if cfg.resume is not None:
        raise ConfigError(
            "resume", "flwr run starts a new run each time; resume runs of python -m pfedhn.main (the simulation)"
        )
    config.resolve_threads(cfg, concurrent_runs=1)
    return cfg
