"""Local: every client trains its own model alone; nothing is sent either way."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from pfedhn.methods.fedavg import GlobalAverage, build_global_average


def build_local(cfg: DictConfig, **base: Any) -> GlobalAverage:
    """Nothing shared: each client keeps its whole model (``Context.state``), starting from
    the shared initial model; the server only samples and evaluates."""
    return build_global_average(cfg, shared=(), **base)
