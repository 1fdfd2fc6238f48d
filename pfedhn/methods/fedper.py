"""FedPer (Arivazhagan et al., 2019): a shared body averaged by the server, a personal head per client.

Paper: https://arxiv.org/abs/1912.00818

The head is kept as pFedHN-PC keeps its own (``ClientModel.keep``), here trained
with the client optimizer like the body, as FedPer trains the whole model.
"""

from __future__ import annotations

from omegaconf import DictConfig

from pfedhn import config
from pfedhn.global_average import GlobalAverage, build_global_average, initial_weights, kept_from_initial_side
from pfedhn.method import MethodSpec, TableRows, by_name
from pfedhn.model import head_names
from pfedhn.schedule import Schedule


def build(cfg: DictConfig, schedule: Schedule) -> GlobalAverage:
    """The body (conv1, conv2, fc1, fc2) global; the head (``head.*``) on each client."""
    head = head_names(config.model_spec(cfg))
    return build_global_average(cfg, tuple(n for n in initial_weights(cfg) if n not in head))


SPEC = MethodSpec(
    build=build,
    checks=lambda cfg: {},
    rows=TableRows(by_name, {"fedper": "FedPer"}),
    client_side=kept_from_initial_side,
)
