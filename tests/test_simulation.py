"""The in-process backend: ClientApp calls and the strategy's tensor work on the main thread."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from flwr.server.superlink.fleet.vce.backend import raybackend

from pfedhn.client_app import PersonalizedClient
from pfedhn.config import compose
from pfedhn.main import run
from pfedhn.methods.pfedhn import PFedHN
from pfedhn.simulation import MainThreadCalls
from tests.conftest import tiny_overrides


def test_in_process_tensor_work_runs_on_the_main_thread(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, list[str]] = {"fit": [], "evaluate": [], "apply_updates": []}

    def recording(cls: type, name: str) -> None:
        stock = getattr(cls, name)

        def wrapper(self, *args):
            threads[name].append(threading.current_thread().name)
            return stock(self, *args)

        monkeypatch.setattr(cls, name, wrapper)

    recording(PersonalizedClient, "fit")
    recording(PersonalizedClient, "evaluate")
    recording(PFedHN, "apply_updates")
    stock_backend = raybackend.RayBackend
    history = run(compose(tiny_overrides(data_root) + ["num_rounds=3", "simulation.backend=inprocess"]), tmp_path)
    main = threading.main_thread().name
    assert threads == {"fit": [main] * 3, "evaluate": [main] * 8, "apply_updates": [main] * 3}
    assert [e.round for e in history.evaluations] == [1, 3]
    assert raybackend.RayBackend is stock_backend  # Flower's backend is back in place


def test_main_thread_calls_return_results_and_raise_errors_to_the_submitter() -> None:
    calls = MainThreadCalls()
    seen: dict[str, object] = {}

    def submitter() -> None:
        seen["value"] = calls.submit(lambda: threading.current_thread().name)
        try:
            calls.submit(lambda: 1 / 0)
        except ZeroDivisionError as error:
            seen["error"] = error
        calls.close()

    thread = threading.Thread(target=submitter)
    thread.start()
    calls.serve()
    thread.join()
    assert seen["value"] == threading.main_thread().name
    assert isinstance(seen["error"], ZeroDivisionError)


def test_the_message_sweep_asks_only_nodes_with_a_waiting_message(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flower's in-memory state exposes its store as ``pending_nodes`` reads it (else every
    node is asked again, as Flower does, and evaluations grow with nodes × messages)."""
    from flwr.server.superlink.linkstate import in_memory_linkstate

    from pfedhn import simulation

    found: list[set[int] | None] = []
    asked: list[int] = []
    stock_pending, stock_ask = simulation.pending_nodes, in_memory_linkstate.InMemoryLinkState.get_message_ins

    def pending(state):
        found.append(stock_pending(state))
        return found[-1]

    def ask(self, node_id, limit, **kwargs):
        asked.append(node_id)
        return stock_ask(self, node_id, limit, **kwargs)

    monkeypatch.setattr(simulation, "pending_nodes", pending)
    monkeypatch.setattr(in_memory_linkstate.InMemoryLinkState, "get_message_ins", ask)
    run(compose(tiny_overrides(data_root) + ["num_rounds=2"]), tmp_path)
    assert found and all(isinstance(nodes, set) for nodes in found)
    assert any(found)  # it saw the messages waiting
    assert len(asked) == sum(len(nodes) for nodes in found)  # no node without a message was asked
