"""docs/scripts/run_queue.sh, the queue that filled results/runs/: workers share one list of
runs without running one twice, skip finished ones, and pick up jobs added while they run."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pfedhn import config, validation
from tests.conftest import ROOT, tiny_overrides

SCRIPT = ROOT / "docs" / "scripts" / "run_queue.sh"
STATUS = ROOT / "docs" / "scripts" / "queue_status.py"


def start_worker(
    jobs: Path, runs: Path, name: str, landed: Path | str | None = None, threads: int | None = None
) -> subprocess.Popen:
    """A worker of ``jobs`` in ``runs``; ``landed`` stands for the checkout's results/runs and variants
    (``LANDED_RUNS``: one dir, or several separated by ``:``); ``threads``: its ``THREADS`` (None:
    unset, the script's default of 1)."""
    env = {**os.environ, "PYTHON": sys.executable, "LANDED_RUNS": str(landed or runs / "none-landed")}
    env.pop("THREADS", None)
    if threads is not None:
        env["THREADS"] = str(threads)
    with open(runs / f"worker-{name}.log", "a") as log:  # the worker keeps its own copy open
        return subprocess.Popen(
            ["bash", str(SCRIPT), str(jobs), str(runs)],
            cwd=ROOT,
            env=env,
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
    assert start_worker(jobs, runs, "C", threads=2).wait(timeout=600) == 0
    assert sorted(starts(runs)) == ["run0", "run1", "run2", "run3"]  # the finished ones are skipped
    assert "no job left" in (runs / "worker-C.log").read_text()
    assert json.loads((runs / "run3" / "results.json").read_text())["config"]["simulation"]["threads"] == 2


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
    """The pace is read between the current process's evaluations, not from its start (which
    counted the rounds since the last evaluation as undone: 199 min left for 40 real)."""
    spec = importlib.util.spec_from_file_location("queue_status", STATUS)  # a script, not a package module
    queue_status = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(queue_status)
    time_left = queue_status.time_left

    result = {
        "history": [{"round": 1}, {"round": 6}, {"round": 11}, {"round": 16}],
        "eval_wall_time_s": [10.0, 610.0, 1300.0, 1600.0],
        "provenance": [{"from_round": 0}, {"from_round": 10}],
    }  # resumed after round 10: its pace is that of rounds 11-16, 60 s a round
    assert time_left(result, 100, since_written=120) == "  about 82 min left"  # 84 rounds, 2 min of them gone
    assert time_left(result, 100, since_written=10**6) == "  about 0 min left"
    once = {**result, "provenance": [{"from_round": 0}, {"from_round": 12}]}  # one evaluation since the resume
    assert time_left(once, 100, since_written=0) == "  about 140 min left"  # the whole run's 100 s a round
    assert time_left({**result, "history": [], "eval_wall_time_s": []}, 100, since_written=0) == ""


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
