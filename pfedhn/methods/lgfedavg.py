"""LG-FedAvg (Liang et al., 2020): local representation layers, a global head.

Paper: https://arxiv.org/abs/2001.01523

The mirror of FedPer: each client keeps its body (conv1, conv2, fc1, fc2) and the
server averages the classifier head. All bodies start from the shared initial
model (the paper's code may start them from a FedAvg-trained one: see README).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from pfedhn import config
from pfedhn.methods.fedavg import GlobalAverage, build_global_average
from pfedhn.model import head_names


def build_lgfedavg(cfg: DictConfig, **base: Any) -> GlobalAverage:
    """The head (``head.*``) global; the body on each client."""
    return build_global_average(cfg, head_names(config.model_spec(cfg)), **base)
