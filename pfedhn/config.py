"""The composed Hydra config: its generic keys' checks, the typed settings derived from it,
and whether a run may resume under it. ``pfedhn.validation`` checks a whole config."""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from pfedhn.checks import Checks, boolean, non_negative, non_negative_int, positive, positive_int
from pfedhn.dataset import SPLIT_STREAMS, DataSettings
from pfedhn.errors import ConfigError
from pfedhn.faults import FaultPolicy
from pfedhn.model import ModelSpec
from pfedhn.train import Normalization
from pfedhn.utils import flatten

BACKENDS = ("inprocess", "ray", "stock")  # simulation.backend; stock: Flower's engine untouched (see pfedhn.simulation)
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?|mps")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # simulation.flower_log_level

CHECKS: Checks = {  # the keys of every run; a method's own are its MethodSpec.checks
    "num_clients": (positive_int, "a positive integer"),
    "num_rounds": (positive_int, "a positive integer"),
    "clients_per_round": (positive_int, "a positive integer"),
    "eval_every": (positive_int, "a positive integer"),
    "seed": (non_negative_int, "a non-negative integer"),
    "checkpoint_every": (non_negative_int, "a non-negative integer (0: only after the last round)"),
    "progress": (boolean, "true or false"),
    "resume": (lambda v: v is None or isinstance(v, str), "null or a run directory"),
    "faults.stop_on_failure": (boolean, "true or false"),
    "faults.max_failed_rounds": (non_negative_int, "a non-negative integer (0: no cap)"),
    "faults.round_timeout": (lambda v: v is None or positive(v), "null or a positive number of seconds"),
    "faults.max_update_norm": (lambda v: v is None or positive(v), "null or a positive number"),
    "faults.connect_timeout": (positive, "a positive number of seconds"),
    "dataset.num_classes": (positive_int, "a positive integer"),
    "dataset.in_channels": (positive_int, "a positive integer"),
    "dataset.image_size": (lambda v: positive_int(v) and v >= 16, "an integer >= 16"),
    "dataset.classes_per_client": (positive_int, "a positive integer"),
    "dataset.val_size": (positive_int, "a positive integer"),
    "dataset.prob_low": (positive, "a positive number"),
    "dataset.prob_high": (positive, "a positive number"),
    "dataset.root": (lambda v: isinstance(v, str) and v != "", "a directory"),
    "dataset.download": (boolean, "true or false"),
    "dataset.split": (lambda v: v in SPLIT_STREAMS, f"one of {', '.join(SPLIT_STREAMS)}"),
    "client.inner_steps": (positive_int, "a positive integer"),
    "client.epochs": (lambda v: v is None or positive_int(v), "null (use client.inner_steps) or a positive integer"),
    "client.batch_size": (positive_int, "a positive integer"),
    "client.eval_batch_size": (positive_int, "a positive integer"),
    "client.lr": (positive, "a positive number"),
    "client.momentum": (non_negative, "a non-negative number"),
    "client.weight_decay": (non_negative, "a non-negative number"),
    "client.grad_clip": (positive, "a positive number"),
    "client.channels_last": (boolean, "true or false"),
    "model.n_kernels": (positive_int, "a positive integer"),
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


def check_resumable(
    cfg: DictConfig, saved: dict[str, Any], at_round: int, novel_phase_keys: Collection[str] = ()
) -> list[str]:
    """Raise ``ConfigError`` naming the first key where ``cfg`` differs from the config of a
    run saved after ``at_round`` rounds.

    Keys the saved config lacks were added to the package after that run started (e.g.
    ``faults.*``, ``device``): they are returned, for the caller to say so, not refused.
    ``novel_phase_keys`` (a run with a novel-client phase: its method's
    ``MethodSpec.novel_phase_keys``) may differ while ``at_round`` precedes that phase under
    both configs; once a run is in it, ``num_rounds`` (where the phase began) may not.
    """
    now, then = flatten(OmegaConf.to_container(cfg, resolve=True)), flatten(saved)
    added = sorted(key for key in set(now) - set(then) if not _has_prefix_in(key, then))
    before_novel = at_round <= min(cfg.num_rounds, int(saved["num_rounds"]))
    fixed = {"num_rounds"} if novel_phase_keys and not before_novel else set()
    for key in sorted(set(now) | set(then)):
        may_differ = key in added or key.startswith(RESUMABLE_CHANGES) or (before_novel and key in novel_phase_keys)
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


def model_spec(cfg: DictConfig) -> ModelSpec:
    """The target CNN of ``dataset`` and ``model`` (a method may give clients others: its
    ``MethodSpec.target``)."""
    d = cfg.dataset
    return ModelSpec(d.in_channels, d.image_size, d.num_classes, cfg.model.n_kernels)


def normalization(cfg: DictConfig) -> Normalization:
    return Normalization.of(list(cfg.dataset.mean), list(cfg.dataset.std))


CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def given_keys(overrides: Sequence[str]) -> set[str]:
    """What Hydra ``overrides`` set: config keys (``client.lr`` of ``client.lr=0.5`` or
    ``+client.lr=0.5``; ``client.lr`` and ``client.epochs`` of ``client={lr:0.5,epochs:2}``)
    and config groups (``method`` of ``method=pfedme``); not deletions."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return {key for o in parsed if not o.is_delete() for key in _leaf_keys(o.key_or_group, o.value())}


def _leaf_keys(key: str, value: Any) -> set[str]:
    """``key`` itself, or for a mapping the dotted keys of its leaves (``{}`` is ``key``)."""
    if isinstance(value, dict) and value:
        return {leaf for sub, nested in value.items() for leaf in _leaf_keys(f"{key}.{sub}", nested)}
    return {key}


def compose(overrides: list[str]) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides, outside ``pfedhn.main``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)
