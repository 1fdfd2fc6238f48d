"""Failed clients and bad results: each case of ``pfedhn.faults`` and what it does to a run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import RecordDict
from flwr.common import FitRes, ndarrays_to_parameters, parameters_to_ndarrays

from pfedhn import main as pfedhn_main
from pfedhn.client_app import PersonalizedClient
from pfedhn.config import compose
from pfedhn.errors import PFedHNError
from pfedhn.faults import ClientFailure, Expected, FaultPolicy, RejectedResult, check_result
from tests.conftest import instruction, tiny_overrides
from tests.test_strategy import OK, constant_delta_reply, setup


def server_state(strategy) -> list[torch.Tensor]:
    """The hypernetwork (embeddings included) and its optimizer's momentum, as tensors."""
    momentum = [s["momentum_buffer"] for s in strategy.method.optimizer.state.values() if "momentum_buffer" in s]
    return [p.detach().clone() for p in strategy.method.hypernetwork.parameters()] + [m.clone() for m in momentum]


def reply(proxy, arrays: list[np.ndarray]) -> FitRes:
    return FitRes(OK, ndarrays_to_parameters(arrays), 10, {"partition_id": proxy.partition_id})


EXPECTED = {"w": Expected((2, 3), np.dtype(np.float32)), "b": Expected((3,), np.dtype(np.float32))}
GOOD = {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"w": np.full((2, 3), np.nan, np.float32)}, "w holds NaN or inf"),
        ({"b": np.array([0, np.inf, 0], np.float32)}, "b holds NaN or inf"),
        ({"w": np.ones((3, 2), np.float32)}, r"w is float32\[3, 2\], expected float32\[2, 3\]"),
        ({"b": np.zeros(3, np.float64)}, r"b is float64\[3\], expected float32\[3\]"),
        ({"w": np.full((2, 3), 100, np.float32)}, "update norm 244.9 exceeds faults.max_update_norm=50"),
    ],
)
def test_a_bad_result_is_rejected_with_its_reason(bad: dict, message: str) -> None:
    check_result(GOOD, EXPECTED, max_norm=50)
    with pytest.raises(RejectedResult, match=message):
        check_result({**GOOD, **bad}, EXPECTED, max_norm=50)


@pytest.mark.parametrize("corrupt", ["nan", "shape", "dtype", "norm", "count"])
def test_a_rejected_result_leaves_the_server_state_bitwise_unchanged(data_root: Path, corrupt: str) -> None:
    strategy, manager = setup(data_root, clients_per_round=1)
    strategy.faults = FaultPolicy(max_update_norm=1e3)
    strategy.failures.policy = strategy.faults
    ((proxy, ins),) = strategy.configure_fit(1, None, manager)
    arrays = [0.01 * np.ones_like(a) for a in parameters_to_ndarrays(ins.parameters)]
    if corrupt == "nan":
        arrays[0][0] = np.nan
    elif corrupt == "shape":
        arrays[1] = arrays[1].ravel()[:-1]
    elif corrupt == "dtype":
        arrays[2] = arrays[2].astype(np.float64)
    elif corrupt == "norm":
        arrays[0] += 1e4
    else:
        arrays = arrays[:-1]
    before = server_state(strategy)
    strategy.aggregate_fit(1, [(proxy, reply(proxy, arrays))], [])
    assert all(torch.equal(a, b) for a, b in zip(before, server_state(strategy)))
    (record,) = strategy.history.failures
    assert record["round"] == 1 and record["clients"] == [proxy.partition_id]
    assert record["reasons"][0].startswith("result rejected")


def test_a_round_uses_only_its_good_results(data_root: Path) -> None:
    strategy, manager = setup(data_root, clients_per_round=2)
    (good, good_ins), (bad, _) = strategy.configure_fit(1, None, manager)
    applied = {}
    strategy.method.apply_updates = lambda r, updates, examples=None: applied.update(updates) or {}
    strategy.aggregate_fit(1, [(good, constant_delta_reply(good, good_ins))], [RuntimeError("boom")])
    assert list(applied) == [good.partition_id]
    assert strategy.history.failures == [
        {"round": 1, "stage": "fit", "clients": [bad.partition_id], "reasons": ["RuntimeError: boom"]}
    ]


def test_a_round_where_every_client_fails_changes_nothing_and_the_cap_stops_the_run(data_root: Path) -> None:
    strategy, manager = setup(data_root, clients_per_round=2)
    strategy.faults = strategy.failures.policy = FaultPolicy(max_failed_rounds=3)
    before = server_state(strategy)
    for server_round in (1, 2):
        strategy.configure_fit(server_round, None, manager)
        strategy.aggregate_fit(server_round, [], [RuntimeError("down"), RuntimeError("down")])
    assert all(torch.equal(a, b) for a, b in zip(before, server_state(strategy)))
    strategy.configure_fit(3, None, manager)
    with pytest.raises(ClientFailure, match=r"3 rounds in a row had failed clients \(faults.max_failed_rounds=3\)"):
        strategy.aggregate_fit(3, [], [RuntimeError("down")])
    assert strategy.stop_reason is not None


def test_a_good_round_resets_the_streak(data_root: Path) -> None:
    strategy, manager = setup(data_root, clients_per_round=1)
    strategy.faults = strategy.failures.policy = FaultPolicy(max_failed_rounds=2)
    for server_round, fails in ((1, True), (2, False), (3, True)):
        ((proxy, ins),) = strategy.configure_fit(server_round, None, manager)
        results = [] if fails else [(proxy, constant_delta_reply(proxy, ins))]
        strategy.aggregate_fit(server_round, results, [RuntimeError("x")] if fails else [])
    assert [r["round"] for r in strategy.history.failures] == [1, 3]


def test_stop_on_failure_stops_at_the_first(data_root: Path) -> None:
    strategy, manager = setup(data_root, clients_per_round=1)
    strategy.faults = strategy.failures.policy = FaultPolicy(stop_on_failure=True)
    strategy.configure_fit(1, None, manager)
    with pytest.raises(ClientFailure, match=r"round 1: client\(s\) \[\d\] failed in fit: RuntimeError: boom"):
        strategy.aggregate_fit(1, [], [RuntimeError("boom")])


def test_an_evaluation_that_misses_a_client_is_not_recorded(data_root: Path) -> None:
    strategy, manager = setup(data_root)
    assert strategy.aggregate_evaluate(1, [], [RuntimeError("gone")]) == (None, {})
    assert strategy.history.evaluations == []
    assert strategy.history.failures[0]["stage"] == "evaluate" and len(strategy.history.failures[0]["clients"]) == 6


def run_in_process(data_root: Path, tmp_path: Path, *extra: str) -> dict:
    cfg = compose(
        tiny_overrides(data_root)
        + ["num_rounds=6", "eval_every=3", "clients_per_round=1", "simulation.backend=inprocess", *extra]
    )
    pfedhn_main.run(cfg, tmp_path)
    return json.loads((tmp_path / "results.json").read_text())


def test_a_client_that_raises_is_recorded_and_the_run_goes_on(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit = PersonalizedClient.fit

    def failing_in_round_2(self, parameters, config):
        if int(config["server_round"]) == 2:
            raise RuntimeError("disk full")
        return fit(self, parameters, config)

    monkeypatch.setattr(PersonalizedClient, "fit", failing_in_round_2)
    result = run_in_process(data_root, tmp_path)
    assert result["finished"] and [e["round"] for e in result["history"]] == [1, 4, 6]
    (record,) = result["failures"]
    assert record["round"] == 2 and record["stage"] == "fit" and "disk full" in record["reasons"][0]


def test_a_client_slower_than_the_round_timeout_fails_that_round(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fit = PersonalizedClient.fit

    def slow_in_round_3(self, parameters, config):
        if int(config["server_round"]) == 3:
            time.sleep(12)
        return fit(self, parameters, config)

    monkeypatch.setattr(PersonalizedClient, "fit", slow_in_round_3)
    # 6 s: far above a tiny round (~0.1 s) even on a loaded machine, far below the slow one
    result = run_in_process(data_root, tmp_path, "faults.round_timeout=6")
    assert result["finished"]
    assert [(r["round"], r["stage"]) for r in result["failures"]] == [(3, "fit")]


def test_the_cap_stops_a_simulation_with_one_line(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PersonalizedClient, "fit", lambda self, p, c: (_ for _ in ()).throw(RuntimeError("broken")))
    with pytest.raises(PFedHNError, match=r"stopped: 2 rounds in a row had failed clients"):
        run_in_process(data_root, tmp_path, "faults.max_failed_rounds=2")


def test_a_client_that_lost_its_head_is_detected_and_recorded(data_root: Path, caplog) -> None:
    """pFedHN-PC: Flower keeps a node's Context.state in memory, so a restarted node comes back
    without its head; it must say so, not re-initialize silently."""
    strategy, manager = setup(data_root, clients_per_round=1, method="pfedhn_pc")
    cfg = compose(tiny_overrides(data_root, num_clients=6) + ["method=pfedhn_pc"])
    proxy = strategy.router.connect(manager)[4]

    def train(server_round: int, state: RecordDict) -> None:
        strategy.outbox.awaited = {}
        parameters, config = instruction(strategy, 4, server_round, training=True)
        arrays, n, metrics = PersonalizedClient(4, cfg, state).fit(parameters_to_ndarrays(parameters), config)
        strategy.aggregate_fit(server_round, [(proxy, FitRes(OK, ndarrays_to_parameters(arrays), n, metrics))], [])

    state = RecordDict()
    train(1, state)
    train(2, state)
    assert strategy.history.failures == []
    train(3, RecordDict())  # the node restarted
    assert "kept state (Context.state) is gone" in caplog.text
    (record,) = strategy.history.failures
    assert record["round"] == 3 and record["stage"] == "state" and record["clients"] == [4]
