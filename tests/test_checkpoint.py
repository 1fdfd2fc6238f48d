from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pfedhn import main as pfedhn_main
from pfedhn.checkpoint import Checkpoint
from pfedhn.config import compose
from tests.conftest import ROOT, run_pfedhn, tiny_overrides, write_mnist


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
        ("pfedla", 0),  # every client's model and hypernetwork live on the server
        ("heurpfedla", 2),  # a local layer
        ("local", 10),  # the whole model
        ("fedavg", 0),
        ("fedper", 2),  # the head
        ("lgfedavg", 8),  # the body
        ("perfedavg", 0),
        ("pfedme", 10),  # the personalized model
        ("fedamp", 0),
        ("fedfomo", 0),
    ],
)
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(
    data_root: Path, tmp_path: Path, method: str, stored: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Every method, with what its clients keep (``stored`` tensors each), which must come
    back from the checkpoint too (in-process runs of ``pfedhn.main.run``)."""
    args = tiny_overrides(data_root) + [
        f"method={method}",
        "eval_every=3",
        "checkpoint_every=2",
        "clients_per_round=2",
    ]
    caplog.set_level(logging.INFO, logger="pfedhn")
    pfedhn_main.run(compose(args + ["num_rounds=6"]), tmp_path / "whole")
    pfedhn_main.run(compose(args + ["num_rounds=4"]), tmp_path / "parts")
    pfedhn_main.run(compose(args + ["num_rounds=6", f"resume={tmp_path / 'parts'}"]), tmp_path / "ignored")
    assert f"resuming {tmp_path / 'parts'} after round 4" in caplog.text

    whole, parts = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "parts"))
    assert [e["round"] for e in parts["history"]] == [1, 4, 6]
    assert parts["history"] == whole["history"]
    assert parts["test_accuracy"] == whole["test_accuracy"] and parts["finished"]
    # the stores sent back after the resume are no traffic of the method
    assert (parts["bytes_sent"], parts["bytes_received"]) == (whole["bytes_sent"], whole["bytes_received"])
    a, b = (Checkpoint.load(tmp_path / d / "checkpoint.pt") for d in ("whole", "parts"))
    assert a.round == b.round == 6
    assert_identical(a.server, b.server)  # models, hypernetworks, optimizer state, ...
    assert a.clients.keys() == b.clients.keys() and bool(a.clients) == bool(stored)
    for client, store in a.clients.items():
        assert store.keys() == b.clients[client].keys() and len(store) in (0, stored)
        assert all(np.array_equal(array, b.clients[client][name]) for name, array in store.items())


def test_a_finished_run_extended_keeps_only_the_evaluations_of_the_longer_schedule(
    data_root: Path, tmp_path: Path
) -> None:
    """Round 5 ends the short run, so it is evaluated; the 6-round schedule (every 3, and the
    last) has no round 5, and the extended run must not keep it (it could win best validation)."""
    args = tiny_overrides(data_root) + ["method=pfedhn", "eval_every=3"]
    pfedhn_main.run(compose(args + ["num_rounds=6"]), tmp_path / "whole")
    pfedhn_main.run(compose(args + ["num_rounds=5"]), tmp_path / "parts")
    assert [e["round"] for e in json.loads((tmp_path / "parts" / "results.json").read_text())["history"]] == [1, 4, 5]
    pfedhn_main.run(compose(args + ["num_rounds=6", f"resume={tmp_path / 'parts'}"]), tmp_path / "ignored")
    whole, parts = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "parts"))
    assert [e["round"] for e in parts["history"]] == [1, 4, 6]
    assert parts["history"] == whole["history"] and len(parts["eval_wall_time_s"]) == 3


def assert_identical(a: object, b: object, where: str = "") -> None:
    """Nested dicts / lists of tensors and plain values, equal bit for bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}/{i}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def run_killed(point: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tests.killed_run", point, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_runs_killed_at_any_point_resume_to_the_uninterrupted_result(data_root: Path, tmp_path: Path) -> None:
    """kill -9 mid-checkpoint-write, then mid-training, each time relaunched with the same command:
    the final state and history equal an uninterrupted run's, bit for bit (pFedHN-PC: client state too)."""
    args = tiny_overrides(data_root) + ["method=pfedhn_pc", "eval_every=3", "checkpoint_every=2", "num_rounds=8"]
    run_main(args, tmp_path / "whole")
    killed = [*args, f"hydra.run.dir={tmp_path / 'killed'}"]

    done = run_killed("checkpoint:2", killed)  # during the write of round 4's checkpoint
    assert done.returncode == -signal.SIGKILL
    assert Checkpoint.load(tmp_path / "killed" / "checkpoint.pt").round == 2  # the last complete one
    assert (tmp_path / "killed" / "checkpoint.tmp").stat().st_size > 0  # the half-written one
    done = run_killed("fit:7", killed)  # resumes after round 2, dies in round 7's training
    assert done.returncode == -signal.SIGKILL
    assert Checkpoint.load(tmp_path / "killed" / "checkpoint.pt").round == 6
    log = run_main(args, tmp_path / "killed")
    assert f"resuming {tmp_path / 'killed'} after round 6" in log

    whole, killed_result = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "killed"))
    assert killed_result["history"] == whole["history"] and killed_result["finished"]
    a, b = (Checkpoint.load(tmp_path / d / "checkpoint.pt") for d in ("whole", "killed"))
    assert_identical(a.server, b.server)  # hypernetwork, embeddings, optimizer momentum
    assert a.sampler == b.sampler
    for client, store in a.clients.items():
        assert all(np.array_equal(array, b.clients[client][name]) for name, array in store.items())


@pytest.fixture(scope="module")
def finished_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    """(overrides, run directory) of a 4-round run with its final checkpoint."""
    args = tiny_overrides(data_root) + ["eval_every=3", "checkpoint_every=2", "num_rounds=4"]
    run_dir = tmp_path_factory.mktemp("finished")
    pfedhn_main.run(compose(args), run_dir)
    return args, run_dir


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_an_unreadable_checkpoint_stops_with_one_line_naming_it(finished_run, tmp_path: Path, damage: str) -> None:
    args, source = finished_run
    shutil.copytree(source, tmp_path / "run")
    path = tmp_path / "run" / "checkpoint.pt"
    data = path.read_bytes()
    path.write_bytes(
        {"truncated": data[: len(data) // 3], "garbage": b"\x00not a checkpoint" * 50, "empty": b""}[damage]
    )
    done = run_pfedhn([*args, "num_rounds=6", f"resume={tmp_path / 'run'}", f"hydra.run.dir={tmp_path / 'x'}"])
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() + done.stdout.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and f"{path} is not a readable checkpoint" in errors[0], done.stderr[-2000:]


def test_resuming_on_another_copy_of_the_data_is_refused_naming_dataset_root(
    finished_run, data_root: Path, tmp_path: Path
) -> None:
    from pfedhn.errors import ConfigError

    args, source = finished_run
    shutil.copytree(source, tmp_path / "run")
    shutil.copytree(data_root, tmp_path / "moved")  # the same files elsewhere: the same samples
    write_mnist(tmp_path / "other", seed=1)  # another copy: the clients would get other samples
    resume = [*args, "num_rounds=6", f"resume={tmp_path / 'run'}"]
    with pytest.raises(ConfigError, match=r"dataset.root: the data in .*other gives the clients other samples"):
        pfedhn_main.run(compose([*resume, f"dataset.root={tmp_path / 'other'}"]), tmp_path / "ignored")
    pfedhn_main.run(compose([*resume, f"dataset.root={tmp_path / 'moved'}"]), tmp_path / "ignored")
    assert json.loads((tmp_path / "run" / "results.json").read_text())["finished"]


def test_a_run_from_before_a_key_existed_resumes_and_is_told_which_keys_are_new(data_root: Path) -> None:
    from omegaconf import OmegaConf

    from pfedhn.config import check_resumable
    from pfedhn.errors import ConfigError

    cfg = compose(tiny_overrides(data_root))
    saved = OmegaConf.to_container(cfg, resolve=True)
    del saved["faults"], saved["device"]  # a checkpoint written before these keys were added
    assert check_resumable(cfg, saved, at_round=1)[:2] == ["device", "faults.connect_timeout"]
    saved["seed"] = 7
    with pytest.raises(ConfigError, match="seed: is 42 but the run being resumed used 7"):
        check_resumable(cfg, saved, at_round=1)


def test_a_run_given_a_key_it_leaves_unread_before_that_was_refused_still_resumes(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Refusing the key would leave no way back: dropping it changes the config being resumed."""
    from pfedhn.errors import ConfigError

    args = tiny_overrides(data_root) + ["method=pfedme", "client.lr=0.05", "clients_per_round=2", "eval_every=2"]
    given = {"client.lr"}
    pfedhn_main.run(compose(args + ["num_rounds=2"]), tmp_path)  # as runs started before the rule
    with pytest.raises(ConfigError, match="client.lr: method pfedme does not read it"):
        pfedhn_main.run(compose(args + ["num_rounds=4"]), tmp_path / "fresh", given=given)
    with caplog.at_level(logging.WARNING, logger="pfedhn"):
        resumed = pfedhn_main.run(compose(args + ["num_rounds=4"]), tmp_path, given=given)
    assert resumed is not None and resumed.evaluations[-1].round == 4
    assert "client.lr: method pfedme does not read it; the run goes on without it" in caplog.text
