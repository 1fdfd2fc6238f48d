"""Checks the composed Hydra config and derives the typed settings from it.

Every check raises ``ConfigError`` naming the offending key, before any data
is loaded or any process is started.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from pfedhn.dataset import LOADERS, SPLIT_STREAMS, DataSettings
from pfedhn.errors import ConfigError
from pfedhn.faults import FaultPolicy
from pfedhn.model import ModelSpec
from pfedhn.train import Normalization
from pfedhn.utils import flatten


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def non_negative_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def non_negative(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


BACKENDS = ("inprocess", "ray", "stock")  # simulation.backend; stock: Flower's engine untouched (see pfedhn.simulation)
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?|mps")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # simulation.flower_log_level

CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "num_clients": (positive_int, "a positive integer"),
    "num_rounds": (positive_int, "a positive integer"),
    "clients_per_round": (positive_int, "a positive integer"),
    "eval_every": (positive_int, "a positive integer"),
    "seed": (non_negative_int, "a non-negative integer"),
    "checkpoint_every": (non_negative_int, "a non-negative integer (0: only after the last round)"),
    "progress": (lambda v: isinstance(v, bool), "true or false"),
    "resume": (lambda v: v is None or isinstance(v, str), "null or a run directory"),
    "faults.stop_on_failure": (lambda v: isinstance(v, bool), "true or false"),
    "faults.max_failed_rounds": (non_negative_int, "a non-negative integer (0: no cap)"),
    "faults.round_timeout": (lambda v: v is None or positive(v), "null or a positive number of seconds"),
    "faults.max_update_norm": (lambda v: v is None or positive(v), "null or a positive number"),
    "faults.connect_timeout": (positive, "a positive number of seconds"),
    "novel.clients": (non_negative_int, "a non-negative integer"),
    "novel.rounds": (non_negative_int, "a non-negative integer"),
    "novel.lr": (lambda v: v is None or positive(v), "null (the embedding lr) or a positive number"),
    "dataset.num_classes": (positive_int, "a positive integer"),
    "dataset.in_channels": (positive_int, "a positive integer"),
    "dataset.image_size": (lambda v: positive_int(v) and v >= 16, "an integer >= 16"),
    "dataset.classes_per_client": (positive_int, "a positive integer"),
    "dataset.val_size": (positive_int, "a positive integer"),
    "dataset.prob_low": (positive, "a positive number"),
    "dataset.prob_high": (positive, "a positive number"),
    "dataset.root": (lambda v: isinstance(v, str) and v != "", "a directory"),
    "dataset.download": (lambda v: isinstance(v, bool), "true or false"),
    "dataset.split": (lambda v: v in SPLIT_STREAMS, f"one of {', '.join(SPLIT_STREAMS)}"),
    "client.inner_steps": (positive_int, "a positive integer"),
    "client.epochs": (lambda v: v is None or positive_int(v), "null (use client.inner_steps) or a positive integer"),
    "client.batch_size": (positive_int, "a positive integer"),
    "client.eval_batch_size": (positive_int, "a positive integer"),
    "client.lr": (positive, "a positive number"),
    "client.momentum": (non_negative, "a non-negative number"),
    "client.weight_decay": (non_negative, "a non-negative number"),
    "client.grad_clip": (positive, "a positive number"),
    "client.channels_last": (lambda v: isinstance(v, bool), "true or false"),
    "model.n_kernels": (positive_int, "a positive integer"),
    "model.sizes": (
        lambda v: v is None or (len(v) > 0 and all(positive_int(k) for k in v) and len(set(v)) == len(v)),
        "null or a list of distinct positive n_kernels, e.g. [8,16,32]",
    ),
    "simulation.backend": (lambda v: v in BACKENDS, f"one of {', '.join(BACKENDS)}"),
    "simulation.threads": (lambda v: v == "auto" or positive_int(v), "auto or a positive integer"),
    "simulation.server_threads": (positive_int, "a positive integer"),
    "simulation.poll_interval": (positive, "a positive number of seconds"),
    "simulation.client_cpus": (positive, "a positive number"),
    "simulation.client_gpus": (non_negative, "a non-negative number (0: no GPU for the Ray actors)"),
    "simulation.flower_log_level": (lambda v: v in LOG_LEVELS, f"one of {', '.join(LOG_LEVELS)}"),
    "device": (
        lambda v: isinstance(v, str) and DEVICE_PATTERN.fullmatch(v) is not None,
        "auto, cpu, cuda, cuda:<i> or mps",
    ),
}

Checks = dict[str, tuple[Callable[[Any], bool], str]]  # key -> (test of its value, what it must be)


def validate(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` on the first invalid key of a composed config."""
    from pfedhn.methods import METHODS  # the registry imports strategies, which import this module

    if cfg.dataset.name not in LOADERS:
        raise ConfigError("dataset.name", f"unknown dataset {cfg.dataset.name!r}; choose one of {sorted(LOADERS)}")
    if cfg.method.strategy not in METHODS:
        raise ConfigError("method.strategy", f"unknown {cfg.method.strategy!r}; choose one of {sorted(METHODS)}")
    method = METHODS[cfg.method.strategy]
    checks = dict(CHECKS, **method.checks(cfg))
    for key, (ok, expected) in checks.items():
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
        if not ok(value):
            raise ConfigError(key, f"must be {expected}, got {value!r}")
    check_method_keys(cfg, checks)
    if cfg.clients_per_round > cfg.num_clients:
        raise ConfigError("clients_per_round", f"{cfg.clients_per_round} exceeds num_clients={cfg.num_clients}")
    if cfg.novel.clients and not method.novel_phase:
        raise ConfigError(
            "novel.clients", f"method {cfg.method.name} has no novel-client phase (it would train everything in it)"
        )
    if cfg.novel.clients:
        if not cfg.clients_per_round <= cfg.novel.clients <= cfg.num_clients - cfg.clients_per_round:
            raise ConfigError(
                "novel.clients",
                f"{cfg.novel.clients} leaves fewer than clients_per_round={cfg.clients_per_round} clients in a group",
            )
    else:
        for key in NOVEL_PHASE_KEYS:
            if OmegaConf.select(cfg, key) not in (0, None):
                raise ConfigError(key, "needs novel.clients > 0 (without novel clients there is no novel phase)")
    if cfg.model.sizes and not method.multi_size:
        raise ConfigError("model.sizes", f"method {cfg.method.name} has one target size; pFedHN generates several")
    device(cfg)  # an unavailable device fails here, before any data is loaded
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


# Keys a resumed run may change: they change no setting of the algorithm. ``simulation.threads``
# changes how float sums round (the run drifts from there); ``dataset.root`` is checked to give
# the clients the same samples (the run's data fingerprint).
RESUMABLE_CHANGES = (
    "num_rounds",
    "resume",
    "progress",
    "checkpoint_every",
    "simulation.",
    "dataset.root",
    "dataset.download",
    "client.eval_batch_size",
    "faults.round_timeout",
    "faults.connect_timeout",
)


# Keys of the novel-client phase (paper Sec. 5.3): changeable while a run has not begun it,
# so a seen phase alone (``novel.rounds=0``), copied, can be continued into several novel phases.
NOVEL_PHASE_KEYS = ("novel.rounds", "novel.lr")


def total_rounds(cfg: DictConfig | dict[str, Any]) -> int:
    """Rounds of a whole run: ``num_rounds`` of training, then ``novel.rounds`` of the novel phase."""
    return int(cfg["num_rounds"]) + int(cfg.get("novel", {}).get("rounds", 0))


def check_resumable(cfg: DictConfig, saved: dict[str, Any], at_round: int) -> list[str]:
    """Raise ``ConfigError`` naming the first key where ``cfg`` differs from the config of a
    run saved after ``at_round`` rounds.

    Keys the saved config lacks were added to the package after that run started (e.g.
    ``faults.*``, ``device``): they are returned, for the caller to say so, not refused.
    ``NOVEL_PHASE_KEYS`` may differ while ``at_round`` precedes the novel phase under both configs;
    once a run is in its novel phase, ``num_rounds`` (where that phase began) may not.
    """
    now, then = flatten(OmegaConf.to_container(cfg, resolve=True)), flatten(saved)
    added = sorted(key for key in set(now) - set(then) if not _has_prefix_in(key, then))
    before_novel = at_round <= min(cfg.num_rounds, int(saved["num_rounds"]))
    fixed = {"num_rounds"} if cfg.novel.clients and not before_novel else set()
    for key in sorted(set(now) | set(then)):
        may_differ = key in added or key.startswith(RESUMABLE_CHANGES) or (before_novel and key in NOVEL_PHASE_KEYS)
        if may_differ and key not in fixed:
            continue
        if now.get(key) != then.get(key):
            raise ConfigError(key, f"is {now.get(key)!r} but the run being resumed used {then.get(key)!r}")
    return added


def _has_prefix_in(key: str, flat: dict[str, Any]) -> bool:
    """Whether ``flat`` has a key that is a parent of ``key`` (a value replaced by a group)."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in flat for i in range(1, len(parts)))


def resolve_threads(cfg: DictConfig, concurrent_runs: int) -> None:
    """Replace ``simulation.threads: auto`` by the machine's cores shared among the
    ``concurrent_runs`` runs a launcher runs at once (at least 1 each)."""
    if cfg.simulation.threads == "auto":
        cfg.simulation.threads = max(1, available_cores() // max(1, concurrent_runs))


def available_cores() -> int:
    """The cores this process may run on (a SLURM job's allocation, not the whole node)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def device(cfg: DictConfig) -> torch.device:
    """The torch device of ``device``: ``auto`` is CUDA if this machine has it, else the CPU;
    a device this machine lacks is a ``ConfigError`` naming the key."""
    name = str(cfg.device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= count:
            raise ConfigError("device", f"{name} is not available here (CUDA devices: {count}); use device=auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device", "mps is not available here; use device=auto or cpu")
    return torch.device(name)


def fault_policy(cfg: DictConfig) -> FaultPolicy:
    f = cfg.faults
    return FaultPolicy(
        stop_on_failure=bool(f.stop_on_failure),
        max_failed_rounds=int(f.max_failed_rounds),
        max_update_norm=None if f.max_update_norm is None else float(f.max_update_norm),
        connect_timeout=float(f.connect_timeout),
    )


def data_settings(cfg: DictConfig) -> DataSettings:
    d = cfg.dataset
    return DataSettings(
        name=d.name,
        root=str(d.root),
        download=bool(d.download),
        val_size=d.val_size,
        num_clients=cfg.num_clients,
        classes_per_client=d.classes_per_client,
        prob_low=float(d.prob_low),
        prob_high=float(d.prob_high),
        seed=cfg.seed,
        split=d.split,
    )


def model_spec(cfg: DictConfig, partition: int | None = None) -> ModelSpec:
    """The target CNN of client ``partition`` (its size, with ``model.sizes``), or of every
    client (``model.n_kernels``) when None."""
    d = cfg.dataset
    n_kernels = cfg.model.n_kernels if partition is None else client_n_kernels(cfg, partition)
    return ModelSpec(d.in_channels, d.image_size, d.num_classes, n_kernels)


def client_n_kernels(cfg: DictConfig, partition: int) -> int:
    """Client ``partition``'s target width: ``model.sizes[partition % len(sizes)]``, or ``model.n_kernels``."""
    sizes = cfg.model.sizes
    return cfg.model.n_kernels if not sizes else int(sizes[partition % len(sizes)])


def normalization(cfg: DictConfig) -> Normalization:
    return Normalization.of(list(cfg.dataset.mean), list(cfg.dataset.std))


def embed_dim(cfg: DictConfig) -> int:
    """``hypernetwork.embed_dim``, or the paper's ``int(1 + num_clients / 4)`` when null."""
    dim = cfg.hypernetwork.embed_dim
    return int(1 + cfg.num_clients / 4) if dim is None else int(dim)


CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose(overrides: list[str]) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides, outside ``pfedhn.main``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def from_run_config(run_config: dict[str, Any]) -> DictConfig:
    """The config of a ``flwr run``: ``conf/`` composed with the run config's
    ``overrides`` (a space-separated string of Hydra overrides). ``resume`` is refused:
    every ``flwr run`` is a new run with its own directory (the ServerApp loads no
    checkpoint; resuming would also have to put the clients' stores back on the SuperNodes)."""
    cfg = compose(str(run_config.get("overrides", "")).split())
    validate(cfg)
    if cfg.resume is not None:
        raise ConfigError(
            "resume", "flwr run starts a new run each time; resume runs of python -m pfedhn.main (the simulation)"
        )
    resolve_threads(cfg, concurrent_runs=1)
    return cfg
