from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pfedhn.checkpoint import Checkpoint
from tests.conftest import run_pfedhn, tiny_overrides


def test_checkpoint_round_trips_through_the_safe_loader(tmp_path: Path) -> None:
    sampler = np.random.default_rng(3)
    sampler.random()
    saved = Checkpoint(
        round=7,
        server={
            "hypernetwork": {"w": torch.arange(4.0)},
            "optimizer": {
                "state": {0: {"momentum_buffer": torch.ones(2)}},
                "param_groups": [{"lr": 0.1, "params": [0]}],
            },
        },
        sampler=sampler.bit_generator.state,
        history={"evaluations": [], "bytes_sent": 1, "bytes_received": 2, "wall_time_s": 3.0},
        clients={2: {"head.weight": np.ones((2, 3), np.float32)}},
        config={"seed": 1},
    )
    saved.save(tmp_path / "checkpoint.pt")
    loaded = Checkpoint.load(tmp_path / "checkpoint.pt")  # torch.load(weights_only=True) inside
    assert loaded.round == 7 and loaded.config == {"seed": 1}
    assert torch.equal(loaded.server["hypernetwork"]["w"], torch.arange(4.0))
    restored = np.random.default_rng(0)
    restored.bit_generator.state = loaded.sampler
    assert restored.random() == sampler.random()
    assert np.array_equal(loaded.clients[2]["head.weight"], np.ones((2, 3)))
    assert not (tmp_path / "checkpoint.tmp").exists()


def run_main(args: list[str], run_dir: Path) -> str:
    done = run_pfedhn([*args, f"hydra.run.dir={run_dir}"])
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.parametrize(
    ("method", "stored"),
    [
        ("pfedhn_pc", 4),  # heads and their momentum
        ("heurpfedla", 2),  # a local layer
        ("local", 10),  # the whole model
        ("fedavg", 0),
        ("fedper", 2),  # the head
        ("lgfedavg", 8),  # the body
        ("perfedavg", 0),
        ("pfedme", 10),  # the personalized model
    ],
)
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(
    data_root: Path, tmp_path: Path, method: str, stored: int
) -> None:
    """Every method, with what its clients keep (``stored`` tensors each), which must come
    back from the checkpoint too."""
    args = tiny_overrides(data_root) + [
        f"method={method}",
        "eval_every=3",
        "checkpoint_every=2",
        "clients_per_round=2",
    ]
    run_main(args + ["num_rounds=6"], tmp_path / "whole")
    run_main(args + ["num_rounds=4"], tmp_path / "parts")
    log = run_main(args + ["num_rounds=6", f"resume={tmp_path / 'parts'}"], tmp_path / "ignored")
    assert f"resuming {tmp_path / 'parts'} after round 4" in log

    whole, parts = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "parts"))
    assert [e["round"] for e in parts["history"]] == [1, 4, 6]
    assert parts["history"] == whole["history"]
    assert parts["test_accuracy"] == whole["test_accuracy"] and parts["finished"]
    a, b = (Checkpoint.load(tmp_path / d / "checkpoint.pt") for d in ("whole", "parts"))
    assert a.round == b.round == 6
    for part in a.server:
        if part.startswith(("hypernetwork", "models", "weights")):  # weights: pFedLA's HNs or a global model
            for name, tensor in a.server[part].items():
                assert torch.equal(tensor, b.server[part][name]), name
    assert a.clients.keys() == b.clients.keys() and bool(a.clients) == bool(stored)
    for client, store in a.clients.items():
        assert store.keys() == b.clients[client].keys() and len(store) in (0, stored)
        assert all(np.array_equal(array, b.clients[client][name]) for name, array in store.items())
