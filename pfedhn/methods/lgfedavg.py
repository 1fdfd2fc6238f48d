"""LG-FedAvg (Liang et al., 2020): local representation layers, a global head.

Paper: https://arxiv.org/abs/2001.01523

The mirror of FedPer: each client keeps its body (conv1, conv2, fc1, fc2) and the
server averages the classifier head. All bodies start from the shared initial
model (the paper's code may start them from a FedAvg-trained one: see
EXTENDED_README, "Reference methods").
"""

from __future__ import annotations

from omegaconf import DictConfig

from pfedhn import config
from pfedhn.global_average import GlobalAverage, build_global_average, kept_from_initial_side
from pfedhn.method import MethodSpec, TableRows, by_name
from pfedhn.model import head_names
from pfedhn.schedule import Schedule


def build(cfg: DictConfig, schedule: Schedule) -> GlobalAverage:
    """The head (``head.*``) global; the body on each client."""
    return build_global_average(cfg, head_names(config.model_spec(cfg)))


SPEC = MethodSpec(
    build=build,
    checks=lambda cfg: {},
    rows=TableRows(by_name, {"lgfedavg": "LG-FedAvg"}),
    client_side=kept_from_initial_side,
)
