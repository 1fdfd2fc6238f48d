"""A run's full state between rounds, saved atomically and loaded safely.

A checkpoint holds the method's server state (for pFedHN: hypernetwork,
embeddings and optimizer momentum), the client sampler's RNG state, the
evaluation history, and every client's own store (what its method keeps on
the client: pFedHN-PC's head and its momentum, HeurpFedLA's local layers).
Local batches and head initializations are drawn from seeds derived from
(seed, client, round), so nothing else is needed for a resumed run to
give the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

FILENAME = "checkpoint.pt"


@dataclass
class Checkpoint:
    """State after ``round`` completed rounds (their evaluations included)."""

    round: int
    server: dict[str, Any]
    sampler: dict[str, Any]
    history: dict[str, Any]
    clients: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # client → its store
    config: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Write to ``path`` atomically: a crash mid-write leaves the previous file intact."""
        payload = {
            "round": self.round,
            "server": self.server,
            # JSON strings: plain types that the safe loader accepts whatever their size
            "sampler": json.dumps(self.sampler),
            "history": json.dumps(self.history),
            "config": json.dumps(self.config),
            "clients": {
                str(c): {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in store.items()}
                for c, store in self.clients.items()
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        """Read a checkpoint with ``torch.load(weights_only=True)``: tensors and plain values only."""
        payload = torch.load(path, weights_only=True)
        return cls(
            round=int(payload["round"]),
            server=payload["server"],
            sampler=json.loads(payload["sampler"]),
            history=json.loads(payload["history"]),
            config=json.loads(payload["config"]),
            clients={int(c): {n: t.numpy() for n, t in store.items()} for c, store in payload["clients"].items()},
        )
