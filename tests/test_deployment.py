"""``flwr run`` on Flower's Deployment Engine: a SuperLink and two SuperNodes on 127.0.0.1
(``pfedhn.local_federation``: free ports, every process killed by process group at the end,
also when the test fails; Flower installs no dependencies)."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pfedhn.local_federation import flwr_run, local_federation, wait_for_port
from tests.conftest import ROOT


@pytest.fixture()
def federation(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A SuperLink and two SuperNodes (partitions 0 and 1 of 2); stopped at the end, by process group."""
    with local_federation(tmp_path / "flwr-home", nodes=2, logs=tmp_path / "logs") as env:
        yield env


def run(env: dict[str, str], overrides: str, out: Path):
    return flwr_run(env, ROOT, overrides, out, timeout=600)


def tiny(data_root: Path, num_clients: int = 2) -> str:
    return (
        f"dataset=mnist dataset.root={data_root} dataset.download=false dataset.val_size=100 "
        f"num_clients={num_clients} num_rounds=3 eval_every=2 client.inner_steps=3 client.batch_size=8 "
        "model.n_kernels=2 method.hypernetwork.hidden_dim=8 simulation.threads=1"
    )


def test_the_federation_waits_for_the_superlink_to_listen(tmp_path: Path) -> None:
    """``local_federation`` starts the SuperNodes and ``flwr run`` once the SuperLink's port takes
    connections (a fixed 3 s pause lost the race on a loaded machine), and fails naming the log
    when the SuperLink exits instead."""
    with socket.socket() as listening, subprocess.Popen(["sleep", "30"]) as server:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        wait_for_port(port, server, tmp_path / "superlink.log", timeout=5)
        server.kill()
    with subprocess.Popen(["false"]) as dead:  # the port is closed now
        with pytest.raises(RuntimeError, match=r"exited with 1; its log: .*superlink\.log"):
            wait_for_port(port, dead, tmp_path / "superlink.log", timeout=30)


def test_three_rounds_of_pfedhn_through_flwr_run(federation, data_root: Path, tmp_path: Path) -> None:
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    done = run(federation, tiny(data_root), tmp_path / "out")
    assert (ROOT / "pyproject.toml").read_bytes() == pyproject  # flwr run left the checkout as it was
    written = list((tmp_path / "out").glob("run-*/results.json"))  # the run config's absolute directory
    assert len(written) == 1, done.stdout[-3000:] + done.stderr[-3000:]
    (results_path,) = written
    results = json.loads(results_path.read_text())
    assert results["finished"], done.stdout[-3000:]
    assert [e["round"] for e in results["history"]] == [1, 3] and results["failures"] == []
    assert (results_path.parent / "checkpoint.pt").is_file()
    timings = results["message_timings"]
    assert {t["stage"] for t in timings} == {"fit", "evaluate"} and all(t["flower_s"] > 0 for t in timings)


def test_num_clients_against_the_supernodes_stops_with_one_line(federation, data_root: Path, tmp_path: Path) -> None:
    done = run(federation, tiny(data_root, num_clients=3), tmp_path / "out")
    text = done.stdout + done.stderr
    assert "num_clients=3, but the SuperNodes split the data into [2] partitions" in text, text[-3000:]
