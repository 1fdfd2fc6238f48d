"""Local: every client trains its own model alone; nothing is sent either way."""

from __future__ import annotations

from omegaconf import DictConfig

from pfedhn.global_average import GlobalAverage, build_global_average, kept_from_initial_side
from pfedhn.method import MethodSpec, TableRows, by_name
from pfedhn.schedule import Schedule


def build(cfg: DictConfig, schedule: Schedule) -> GlobalAverage:
    """Nothing shared: each client keeps its whole model (``Context.state``), starting from
    the shared initial model; the server only samples and evaluates."""
    return build_global_average(cfg, shared=())


SPEC = MethodSpec(
    build=build,
    checks=lambda cfg: {},
    rows=TableRows(by_name, {"local": "Local"}),
    client_side=kept_from_initial_side,
)
