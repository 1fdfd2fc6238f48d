"""A run's full state between rounds, saved atomically and loaded safely.

A checkpoint holds the method's server state (for pFedHN: hypernetwork,
embeddings and optimizer momentum), the client sampler's RNG state, the
evaluation history, and every client's own store (what its method keeps on
the client: pFedHN-PC's and FedPer's head, LG-FedAvg's body, Local's whole model,
pFedMe's personalized model, HeurpFedLA's local layers, with their momentum where kept).
Local batches and head initializations are drawn from seeds derived from
(seed, client, round), so nothing else is needed for a resumed run to
give the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pfedhn.errors import PFedHNError

FILENAME = "checkpoint.pt"


class CheckpointError(PFedHNError):
    """A checkpoint file that cannot be read."""


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
        with open(tmp, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())  # on disk before it replaces the previous checkpoint
        os.replace(tmp, path)
        sync_directory(path.parent)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        """Read a checkpoint with ``torch.load(weights_only=True)``: tensors and plain values only.

        A file that cannot be read (truncated, corrupted, not a checkpoint) raises
        ``CheckpointError`` naming it: a run never starts afresh in its place.
        """
        try:
            payload = torch.load(path, weights_only=True, map_location="cpu")  # a GPU run's, on any machine
            return cls._from_payload(payload)
        except (
            RuntimeError,
            EOFError,
            ValueError,
            KeyError,
            TypeError,
            pickle.UnpicklingError,
            zipfile.BadZipFile,
        ) as error:
            raise CheckpointError(
                f"{path} is not a readable checkpoint ({type(error).__name__}: {' '.join(str(error).split())[:200]}); "
                "restore it from a copy, or move it away to start this run afresh"
            ) from error

    @classmethod
    def _from_payload(cls, payload: dict[str, Any]) -> Checkpoint:
        return cls(
            round=int(payload["round"]),
            server=payload["server"],
            sampler=json.loads(payload["sampler"]),
            history=json.loads(payload["history"]),
            config=json.loads(payload["config"]),
            clients={int(c): {n: t.numpy() for n, t in store.items()} for c, store in payload["clients"].items()},
        )


def sync_directory(directory: Path) -> None:
    """fsync ``directory`` so that a rename inside it survives a power loss (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
