"""docs/scripts/choose_by_validation.py: a hyperparameter is chosen by validation, never by test."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "docs" / "scripts" / "choose_by_validation.py"


def load_script():
    spec = importlib.util.spec_from_file_location("choose_by_validation", SCRIPT)  # a script, not a module
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(directory: Path, sigma: float, val: float, test: float, val_round: int, **config) -> None:
    finished = config.pop("finished", True)
    result = {
        "finished": finished,
        "config": {"method": {"name": "fedamp", "sigma": sigma}, "dataset": {"name": "cifar10"}, "num_rounds": 100}
        | config,
        "best_val_accuracy": val,
        "best_val_round": val_round,
        "test_accuracy": test,
        "history": [{"round": 100 if finished else 60}],
    }
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps(result))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_the_best_validation_is_chosen_whatever_the_test_says(tmp_path: Path) -> None:
    write(tmp_path / "runs" / "a", sigma=10, val=0.74, test=0.80, val_round=50)
    write(tmp_path / "variants" / "b", sigma=100, val=0.76, test=0.70, val_round=90)
    write(tmp_path / "variants" / "c", sigma=1, val=0.75, test=0.90, val_round=10)
    write(tmp_path / "variants" / "other", sigma=1000, val=0.99, test=0.99, val_round=1, dataset={"name": "mnist"})
    done = run(
        str(tmp_path / "runs"), str(tmp_path / "variants"), "--key", "method.sigma", "--where", "dataset.name=cifar10"
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "(round)" not in line]
    assert [row.split(" | ")[0] for row in rows] == ["| 1", "| 10", "| 100 (chosen)"]
    assert "1000" not in done.stdout


def test_a_tie_goes_to_the_earlier_round_and_unfinished_runs_are_not_chosen(tmp_path: Path) -> None:
    script = load_script()
    write(tmp_path / "a", sigma=1, val=0.74001, test=0.5, val_round=80)
    write(tmp_path / "b", sigma=10, val=0.73999, test=0.5, val_round=40)
    write(tmp_path / "c", sigma=100, val=0.90, test=0.5, val_round=20, finished=False)
    study = script.candidates([tmp_path], "method.sigma", {})
    assert script.chosen(study).value == 10
    assert "| 100 | 90.00 (20) | 50.00 | 60 of 100 |" in script.table(study, "method.sigma")


def test_two_runs_with_one_value_and_a_malformed_filter_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "a", sigma=10, val=0.7, test=0.7, val_round=1)
    write(tmp_path / "b", sigma=10.0, val=0.8, test=0.8, val_round=1)
    twice = run(str(tmp_path), "--key", "method.sigma")
    assert twice.returncode != 0 and "method.sigma=10 twice" in twice.stderr
    malformed = run(str(tmp_path), "--key", "method.sigma", "--where", "dataset.name")
    assert malformed.returncode != 0 and "dotted.key=value" in malformed.stderr
    nothing = run(str(tmp_path), "--key", "method.sigma", "--where", "dataset.name=mnist")
    assert nothing.returncode != 0 and "no run" in nothing.stderr
