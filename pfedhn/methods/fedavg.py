"""FedAvg (McMahan et al., AISTATS 2017): every parameter averaged (``pfedhn.global_average``).

Paper: https://arxiv.org/abs/1602.05629

FedAvg+FT is FedAvg whose clients fine-tune the global model on their own
training data before they evaluate it (``method.finetune_steps``).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from pfedhn.checks import non_negative_int
from pfedhn.global_average import average_everything
from pfedhn.method import MethodSpec, TableRows
from pfedhn.protocol import Adaptation, ClientSide


def finetuning(cfg: DictConfig) -> Adaptation | None:
    """FedAvg+FT: ``method.finetune_steps`` steps of the client optimizer before evaluating (0: FedAvg)."""
    c = cfg.client
    steps = cfg.method.finetune_steps
    return Adaptation(steps, c.lr, c.momentum, c.weight_decay) if steps else None


def row_key(cfg: Any) -> str:
    return "fedavg_ft" if cfg["method"].get("finetune_steps") else "fedavg"


SPEC = MethodSpec(
    build=average_everything,
    checks=lambda cfg: {
        "method.finetune_steps": (non_negative_int, "a non-negative integer (0: FedAvg, > 0: FedAvg+FT)"),
    },
    rows=TableRows(row_key, {"fedavg": "FedAvg", "fedavg_ft": "FedAvg+FT"}),
    client_side=lambda cfg: ClientSide(adaptation=finetuning),
)
