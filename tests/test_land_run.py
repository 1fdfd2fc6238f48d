"""docs/scripts/land_run.py: finished runs land whole, with their cell's mean ± std over seeds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "docs" / "scripts" / "land_run.py"


def write_run(directory: Path, seed: int, tests: list[float], finished: bool = True) -> None:
    """A run evaluated at rounds 1, 2, ... with test accuracies ``tests``; best validation at round 2."""
    history = [
        {
            "round": r,
            "val": {"accuracy": 0.9 if r == 2 else 0.5},
            "test": {"accuracy": accuracy, "client_accuracy": [accuracy - 0.1, accuracy + 0.1]},
        }
        for r, accuracy in enumerate(tests, start=1)
    ]
    result = {
        "finished": finished,
        "config": {
            "method": {"name": "local", "strategy": "local"},
            "dataset": {"name": "cifar10"},
            "num_clients": 2,
            "seed": seed,
        }
        | {"num_rounds": len(tests)},
        "best_val_round": 2,
        "best_val_accuracy": 0.9,
        "test_accuracy": tests[1],
        "wall_time_s": 120.0,
        "provenance": [{"from_round": 0, "commit": "abcdef0123"}],
        "history": history,
    }
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps(result))


def land(*args: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_a_finished_run_lands_with_its_cell_over_seeds(tmp_path: Path) -> None:
    to = tmp_path / "results"
    write_run(to / "c10_local_s42", seed=42, tests=[0.5, 0.7, 0.7])
    write_run(tmp_path / "queue" / "c10_local_s1", seed=1, tests=[0.6, 0.8, 0.3, 0.75])
    done = land(tmp_path / "queue" / "c10_local_s1", "--to", to)
    assert done.returncode == 0, done.stderr
    landed = to / "c10_local_s1" / "results.json"
    assert landed.read_bytes() == (tmp_path / "queue" / "c10_local_s1" / "results.json").read_bytes()
    assert "test there 80.00, last test 75.00; clients 70.0–90.0; deepest fall 50.00 points (round 3)" in done.stdout
    assert "wall 2.0 min; commits 0 → abcdef0" in done.stdout
    assert "local, cifar10, 2 clients: 75.00 ± 5.00 over seeds 1, 42 (80.00, 70.00)" in done.stdout


def test_nothing_lands_if_one_run_is_unfinished_or_landed_otherwise(tmp_path: Path) -> None:
    to, queue = tmp_path / "results", tmp_path / "queue"
    write_run(queue / "done_s1", seed=1, tests=[0.5, 0.6])
    write_run(queue / "running_s2", seed=2, tests=[0.5, 0.6], finished=False)
    unfinished = land(queue / "done_s1", queue / "running_s2", "--to", to)
    assert unfinished.returncode != 0 and "running_s2 has not finished (round 2)" in unfinished.stderr
    assert not (to / "done_s1").exists()
    write_run(to / "done_s1", seed=1, tests=[0.5, 0.61])
    other = land(queue / "done_s1", "--to", to)
    assert other.returncode != 0 and "exists with other contents" in other.stderr


def test_clients_are_compared_with_other_runs_of_the_same_split(tmp_path: Path) -> None:
    to, queue = tmp_path / "results", tmp_path / "queue"
    write_run(queue / "new_s1", seed=1, tests=[0.5, 0.7])  # clients 60, 80 at its best round
    write_run(to / "ref_a", seed=42, tests=[0.5, 0.75, 0.1])  # 65, 85 at its best round (2), not its last
    write_run(to / "ref_b", seed=42, tests=[0.5, 0.65])  # 55, 75
    done = land(queue / "new_s1", "--to", to, "--against", to / "ref_a", to / "ref_b")
    assert done.returncode == 0, done.stderr
    assert "; clients above / below ref_a: 0 / 2; clients above / below ref_b: 2 / 0" in done.stdout

    result = json.loads((to / "ref_b" / "results.json").read_text())
    (to / "ref_b" / "results.json").write_text(json.dumps(result | {"client_classes": [[0, 1], [2, 3]]}))
    write_run(queue / "new_s2", seed=2, tests=[0.5, 0.7])
    refused = land(queue / "new_s2", "--to", to, "--against", to / "ref_b")
    assert refused.returncode != 0 and "ref_b split its clients otherwise" in refused.stderr
    assert not (to / "new_s2").exists()
