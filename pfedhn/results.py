"""A run's evaluation history and its ``results.json``.

The paper's rule: the reported number is the pooled test accuracy at the
evaluation with the best pooled validation accuracy (first one on ties).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SplitMetrics:
    """Pooled loss/accuracy of one split over all clients, plus per-client accuracy."""

    loss: float
    accuracy: float
    client_accuracy: list[float]

    @classmethod
    def pool(cls, loss_sums: list[float], correct: list[int], counts: list[int]) -> SplitMetrics:
        """Pool per-client sums: accuracy = Σ correct / Σ count, loss = Σ loss / Σ count."""
        total = sum(counts)
        return cls(
            loss=sum(loss_sums) / total,
            accuracy=sum(correct) / total,
            client_accuracy=[c / n for c, n in zip(correct, counts)],
        )

    def summary(self) -> dict[str, float]:
        acc = np.asarray(self.client_accuracy)
        return {"min": float(acc.min()), "max": float(acc.max()), "std": float(acc.std())}


@dataclass(frozen=True)
class Evaluation:
    """All clients evaluated after ``round`` rounds of training."""

    round: int
    val: SplitMetrics
    test: SplitMetrics


@dataclass
class RunHistory:
    """Evaluations, traffic and timing of a run; writes them to ``results.json``."""

    config: dict[str, Any]
    evaluations: list[Evaluation] = field(default_factory=list)
    bytes_sent: int = 0
    bytes_received: int = 0
    started: float = field(default_factory=time.time)
    round_end_times: list[float] = field(default_factory=list)  # perf_counter() after each round's update

    def add(self, evaluation: Evaluation) -> None:
        self.evaluations.append(evaluation)

    @property
    def best(self) -> Evaluation | None:
        """The evaluation with the highest pooled validation accuracy (earliest on ties)."""
        if not self.evaluations:
            return None
        return max(self.evaluations, key=lambda e: (e.val.accuracy, -e.round))

    def to_dict(self, finished: bool) -> dict[str, Any]:
        best = self.best
        return {
            "finished": finished,
            "config": self.config,
            "best_val_round": best.round if best else None,
            "best_val_accuracy": best.val.accuracy if best else None,
            "test_accuracy": best.test.accuracy if best else None,
            "test_client_accuracy_at_best": best.test.summary() if best else None,
            "final_test_accuracy": self.evaluations[-1].test.accuracy if self.evaluations else None,
            "wall_time_s": time.time() - self.started,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "history": [asdict(e) for e in self.evaluations],
        }

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the history (JSON-serializable)."""
        return {
            "evaluations": [asdict(e) for e in self.evaluations],
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "wall_time_s": time.time() - self.started,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Inverse of ``state``; wall time keeps counting from the saved value."""
        self.evaluations = [
            Evaluation(e["round"], SplitMetrics(**e["val"]), SplitMetrics(**e["test"])) for e in state["evaluations"]
        ]
        self.bytes_sent = state["bytes_sent"]
        self.bytes_received = state["bytes_received"]
        self.started = time.time() - state["wall_time_s"]

    def write(self, path: Path, finished: bool = False) -> None:
        """Write ``results.json`` atomically (a reader never sees half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(finished), indent=1))
        os.replace(tmp, path)
