"""docs/scripts/run_queue.sh, the queue that filled results/runs/: workers share one list of
runs without running one twice, skip finished ones, and pick up jobs added while they run."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pfedhn import config, validation
from tests.conftest import ROOT, tiny_overrides

SCRIPT = ROOT / "docs" / "scripts" / "run_queue.sh"
STATUS = ROOT / "docs" / "scripts" / "queue_status.py"


def start_worker(jobs: Path, runs: Path, name: str, landed: Path | str | None = None) -> subprocess.Popen:
    """A worker of ``jobs`` in ``runs``; ``landed`` stands for the checkout's results/runs and variants
    (``LANDED_RUNS``: one dir, or several separated by ``:``)."""
    with open(runs / f"worker-{name}.log", "a") as log:  # the worker keeps its own copy open
        return subprocess.Popen(
            ["bash", str(SCRIPT), str(jobs), str(runs)],
            cwd=ROOT,
            env={**os.environ, "PYTHON": sys.executable, "LANDED_RUNS": str(landed or runs / "none-landed")},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def starts(runs: Path) -> list[str]:
    """The job names the workers' logs say they started, over all workers."""
    return [
        line.split()[2].rstrip(":")
        for log in sorted(runs.glob("worker-*.log"))
        for line in log.read_text().splitlines()
        if line.split()[1:2] == ["start"]
    ]


def status(jobs: Path, runs: Path, landed: Path | str | None = None) -> dict[str, str]:
    """queue_status.py's lines, by job name (the rest of each line)."""
    command = [sys.executable, str(STATUS), str(jobs), str(runs)]
    env = {**os.environ, "LANDED_RUNS": str(landed or runs / "none-landed")}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return dict(line.split("  ", 1) for line in out.stdout.splitlines())


def test_two_workers_run_every_job_once_and_a_relaunch_runs_none(data_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    overrides = " ".join(tiny_overrides(data_root) + ["num_rounds=2"])
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("# a comment, then a blank line\n\n" + "".join(f"run{i} {overrides} seed={i}\n" for i in range(3)))
    workers = [start_worker(jobs, runs, name) for name in ("A", "B")]
    assert [worker.wait(timeout=600) for worker in workers] == [0, 0]
    assert sorted(starts(runs)) == ["run0", "run1", "run2"]
    for i in range(3):
        result = json.loads((runs / f"run{i}" / "results.json").read_text())
        assert result["finished"] and result["config"]["seed"] == i
        assert result["config"]["simulation"]["threads"] == 1

    jobs.write_text(jobs.read_text() + f"run3 {overrides} seed=3\n")  # a job added later
    lines = status(jobs, runs)
    assert list(lines) == ["run0", "run1", "run2", "run3"]
    assert all(lines[f"run{i}"].startswith("finished  round 2/2  test ") for i in range(3))
    assert lines["run3"] == "waiting"
    assert start_worker(jobs, runs, "C").wait(timeout=600) == 0
    assert sorted(starts(runs)) == ["run0", "run1", "run2", "run3"]  # the finished ones are skipped
    assert "no job left" in (runs / "worker-C.log").read_text()


PFEDHN = {"method": {"name": "pfedhn", "strategy": "pfedhn"}}  # (an old layout: its novel phase at the top level)


def test_status_tells_a_stopped_run_from_one_a_worker_holds(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("# two runs stopped at a checkpoint\nheld num_rounds=10\nfree num_rounds=10\n")
    for name in ("held", "free"):
        (tmp_path / name).mkdir()
        partial = {
            "finished": False,
            "config": {
                "num_rounds": 10,
                "num_clients": 6,
                "eval_every": 3,
                "novel": {"clients": 2, "rounds": 5},
                **PFEDHN,
            },
            "history": [{"round": 1}, {"round": 4}],
            "test_accuracy": 0.5,
            "best_val_round": 4,
        }
        (tmp_path / name / "results.json").write_text(json.dumps(partial))
    with open(tmp_path / "held.lock", "w") as lock:  # as run_queue.sh's flock
        fcntl.flock(lock, fcntl.LOCK_EX)
        lines = status(jobs, tmp_path)
    expected = "round 4/15  test 50.00 % (best validation at round 4)"  # 10 rounds + 5 novel ones
    assert lines == {"held": f"running  {expected}", "free": f"stopped  {expected}"}


def test_a_running_job_says_how_long_it_has_left_at_its_process_pace() -> None:
    """Resumed at round 10 of 100, this process took 30 min for rounds 11-40: 60 rounds more take 60 min."""
    spec = importlib.util.spec_from_file_location("queue_status", STATUS)  # a script, not a package module
    queue_status = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(queue_status)
    time_left = queue_status.time_left

    result = {
        "history": [{"round": 1}, {"round": 40}],
        "provenance": [{"from_round": 0, "started": "2026-12-05T09:00:00+00:00"},
                       {"from_round": 10, "started": "2026-12-05T10:00:00+00:00"}],
    }  # fmt: skip
    assert time_left(result, 100, datetime(2026, 12, 5, 10, 30, tzinfo=UTC)) == "  about 60 min left"
    assert time_left({**result, "provenance": []}, 100, datetime.now(UTC)) == ""
    assert time_left({**result, "history": [{"round": 10}]}, 100, datetime.now(UTC)) == ""


def test_a_job_landed_in_the_checkout_is_not_run_again_in_an_empty_runs_dir(tmp_path: Path) -> None:
    runs, landed = tmp_path / "runs", tmp_path / "landed"
    runs.mkdir()
    (landed / "done").mkdir(parents=True)
    landed_result = {
        "finished": True,
        "config": {"num_rounds": 2, "num_clients": 4, "eval_every": 1, **PFEDHN},
        "history": [{"round": 2}],
        "test_accuracy": 0.5,
        "best_val_round": 2,
    }
    (landed / "done" / "results.json").write_text(json.dumps(landed_result))
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("done num_rounds=not-a-number\n")  # would fail if it were started
    assert start_worker(jobs, runs, "A", landed).wait(timeout=60) == 0
    assert starts(runs) == [] and "no job left" in (runs / "worker-A.log").read_text()
    assert status(jobs, runs, landed) == {"done": "finished  round 2/2  test 50.00 % (best validation at round 2)"}
    assert status(jobs, runs) == {"done": "waiting"}  # nothing landed: the same job waits
    elsewhere = f"{tmp_path / 'variants'}:{landed}"  # landed in the second of two dirs (results/variants' role)
    assert start_worker(jobs, runs, "B", elsewhere).wait(timeout=60) == 0
    assert starts(runs) == [] and status(jobs, runs, elsewhere)["done"].startswith("finished")


def test_every_job_of_the_committed_queue_is_a_valid_config() -> None:
    """A typo in docs/scripts/queue.txt would cost a worker its slot hours later: each job's
    overrides compose and validate now (with the worker's own thread override)."""
    jobs = [line.split() for line in (ROOT / "docs" / "scripts" / "queue.txt").read_text().splitlines()]
    jobs = [words for words in jobs if words and not words[0].startswith("#")]
    assert len({words[0] for words in jobs}) == len(jobs), "a job name appears twice"
    for name, *overrides in jobs:
        try:
            validation.validate(config.compose([*overrides, "simulation.threads=1"]))
        except Exception as error:
            pytest.fail(f"{name}: {error}")
