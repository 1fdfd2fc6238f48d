"""The in-process backend runs the ClientApp inside the simulation's own process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from flwr.server.superlink.fleet.vce.backend import raybackend

from pfedhn.client_app import PersonalizedClient
from pfedhn.config import compose
from pfedhn.main import run
from tests.conftest import tiny_overrides


def test_in_process_clients_train_in_this_process(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit_pids: list[int] = []
    stock_fit = PersonalizedClient.fit

    def recording_fit(self, parameters, config):
        fit_pids.append(os.getpid())
        return stock_fit(self, parameters, config)

    monkeypatch.setattr(PersonalizedClient, "fit", recording_fit)
    stock_backend = raybackend.RayBackend
    history = run(compose(tiny_overrides(data_root) + ["num_rounds=3", "simulation.backend=inprocess"]), tmp_path)
    assert fit_pids == [os.getpid()] * 3
    assert [e.round for e in history.evaluations] == [1, 3]
    assert raybackend.RayBackend is stock_backend  # Flower's backend is back in place
