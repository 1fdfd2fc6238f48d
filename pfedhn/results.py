"""A run's evaluation history and its ``results.json``.

The paper's rule: the reported number is the pooled test accuracy at the
evaluation with the best pooled validation accuracy (first one on ties).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SplitMetrics:
    """Pooled loss/accuracy of one split over all clients, plus per-client accuracy and size."""

    loss: float
    accuracy: float
    client_accuracy: list[float]
    client_count: list[int]

    @classmethod
    def pool(cls, loss_sums: list[float], correct: list[int], counts: list[int]) -> SplitMetrics:
        """Pool per-client sums: accuracy = Σ correct / Σ count, loss = Σ loss / Σ count."""
        total = sum(counts)
        return cls(
            loss=sum(loss_sums) / total,
            accuracy=sum(correct) / total,
            client_accuracy=[c / n for c, n in zip(correct, counts)],
            client_count=list(counts),
        )

    def pooled_accuracy(self, clients: list[int]) -> float:
        """Σ correct / Σ count over ``clients`` only."""
        correct = sum(round(self.client_accuracy[c] * self.client_count[c]) for c in clients)
        return correct / sum(self.client_count[c] for c in clients)

    def summary(self) -> dict[str, float]:
        acc = np.asarray(self.client_accuracy)
        return {"min": float(acc.min()), "max": float(acc.max()), "std": float(acc.std())}


@dataclass(frozen=True)
class ClientGroup:
    """Clients reported on their own, over the evaluations of rounds ``first``..``last``."""

    clients: list[int]
    first: int
    last: int

    def report(self, evaluations: list[Evaluation]) -> dict[str, Any]:
        """The paper's rule within the group and its rounds: test accuracy at its best
        validation accuracy; ``history`` has the group's pooled accuracy at every evaluation."""
        inside = [e for e in evaluations if self.first <= e.round <= self.last]
        report: dict[str, Any] = {"clients": self.clients, "rounds": [self.first, self.last]}
        if inside:
            best = max(inside, key=lambda e: (e.val.pooled_accuracy(self.clients), -e.round))
            report |= {
                "best_val_round": best.round,
                "test_accuracy": best.test.pooled_accuracy(self.clients),
                "history": [
                    {
                        "round": e.round,
                        "val": e.val.pooled_accuracy(self.clients),
                        "test": e.test.pooled_accuracy(self.clients),
                    }
                    for e in evaluations
                ],
            }
        return report


@dataclass(frozen=True)
class Evaluation:
    """All clients evaluated after ``round`` rounds of training."""

    round: int
    val: SplitMetrics
    test: SplitMetrics


def evaluation_at(result: dict[str, Any], server_round: int) -> dict[str, Any]:
    """The evaluation of ``server_round`` in a ``results.json`` (dict) ``result``'s history."""
    return next(e for e in result["history"] if e["round"] == server_round)


@dataclass
class RunHistory:
    """Evaluations, traffic and timing of a run; writes them to ``results.json``."""

    config: dict[str, Any]
    evaluations: list[Evaluation] = field(default_factory=list)
    bytes_sent: int = 0
    bytes_received: int = 0
    started: float = field(default_factory=time.time)
    round_end_times: list[float] = field(default_factory=list)  # perf_counter() after each round's update
    eval_end_times: list[float] = field(default_factory=list)  # perf_counter() after each evaluation is pooled
    groups: dict[str, ClientGroup] = field(default_factory=dict)  # reported apart (novel-client runs)
    eval_wall_times: list[float | None] = field(default_factory=list)  # run's wall time (s) at each evaluation
    provenance: list[dict[str, Any]] = field(default_factory=list)  # one ``provenance.record`` per process
    client_classes: list[list[int]] = field(default_factory=list)  # the classes of each client's training data
    data_fingerprint: str | None = None  # ``FederatedData.fingerprint()``: the same clients' samples, the same value
    method_report: dict[str, Any] = field(default_factory=dict)  # the method's own state worth reading (pFedLA: α)
    failures: list[dict[str, Any]] = field(default_factory=list)  # failed clients per round (``pfedhn.faults``)
    message_timings: list[dict[str, Any]] = field(default_factory=list)  # ``flwr run``: each message's time split

    def add(self, evaluation: Evaluation) -> None:
        self.evaluations.append(evaluation)
        self.eval_wall_times.append(time.time() - self.started)
        self.eval_end_times.append(time.perf_counter())

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
            "provenance": self.provenance,
            "client_classes": self.client_classes,
            "data_fingerprint": self.data_fingerprint,
            "method_report": self.method_report,
            "failures": self.failures,
            "message_timings": self.message_timings,
            "groups": {name: group.report(self.evaluations) for name, group in self.groups.items()},
            "eval_wall_time_s": self.eval_wall_times,
            "history": [asdict(e) for e in self.evaluations],
        }

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the history (JSON-serializable)."""
        return {
            "evaluations": [asdict(e) for e in self.evaluations],
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "wall_time_s": time.time() - self.started,
            "eval_wall_times": self.eval_wall_times,
            "provenance": self.provenance,
            "failures": self.failures,
            "data_fingerprint": self.data_fingerprint,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Inverse of ``state``; wall time keeps counting from the saved value."""
        self.evaluations = [
            Evaluation(e["round"], SplitMetrics(**e["val"]), SplitMetrics(**e["test"])) for e in state["evaluations"]
        ]
        self.bytes_sent = state["bytes_sent"]
        self.bytes_received = state["bytes_received"]
        self.started = time.time() - state["wall_time_s"]
        # checkpoints written before these were recorded lack them
        self.eval_wall_times = list(state.get("eval_wall_times", [None] * len(self.evaluations)))
        self.provenance = list(state.get("provenance", []))
        self.failures[:] = state.get("failures", [])  # in place: the strategy's FailureLog holds this list

    def keep_evaluations(self, on_schedule: Callable[[int], bool]) -> None:
        """Drop the evaluations whose round is not ``on_schedule`` (a finished run extended
        to more rounds keeps none an uninterrupted run would not have made)."""
        kept = [i for i, e in enumerate(self.evaluations) if on_schedule(e.round)]
        self.evaluations = [self.evaluations[i] for i in kept]
        self.eval_wall_times = [self.eval_wall_times[i] for i in kept]

    def write(self, path: Path, finished: bool = False) -> None:
        """Write ``results.json`` atomically (a reader never sees half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as file:
            file.write(json.dumps(self.to_dict(finished), indent=1))
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
