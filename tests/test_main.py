"""End to end: ``python -m pfedhn.main`` as a user runs it, on tiny data files."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from pfedhn.provenance import git_state
from tests.conftest import ROOT, run_pfedhn, tiny_data, tiny_overrides


def run_main(args: list[str], run_dir: Path) -> subprocess.CompletedProcess:
    return run_pfedhn([*args, f"hydra.run.dir={run_dir}"])


def run_sweep(args: list[str], sweep_dir: Path) -> subprocess.CompletedProcess:
    """``python -m pfedhn.main --multirun ARGS``, its cells under ``sweep_dir``."""
    return run_pfedhn(["--multirun", *args, f"hydra.sweep.dir={sweep_dir}"])


def test_a_sweep_over_both_methods_writes_one_result_each(data_root: Path, tmp_path: Path) -> None:
    args = [
        *tiny_overrides(data_root),
        "method=pfedhn,pfedhn_pc",
        "num_rounds=4",
        "eval_every=2",
        "clients_per_round=2",
    ]
    done = run_sweep(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for method in ("pfedhn", "pfedhn_pc"):
        results = json.loads((tmp_path / f"{method}_mnist_n4_s42" / "results.json").read_text())
        assert results["finished"] is True
        assert results["config"]["method"]["name"] == method
        assert [e["round"] for e in results["history"]] == [1, 3, 4]
        best = max(results["history"], key=lambda e: e["val"]["accuracy"])
        assert results["best_val_round"] == best["round"]
        assert results["test_accuracy"] == best["test"]["accuracy"]
        assert 0.0 <= results["test_accuracy"] <= 1.0
        assert len(best["test"]["client_accuracy"]) == 4
        assert results["bytes_sent"] > 0 and results["bytes_received"] > 0
        assert len(results["eval_wall_time_s"]) == 3 and results["eval_wall_time_s"] == sorted(
            results["eval_wall_time_s"]
        )
        (record,) = results["provenance"]
        assert {k: record[k] for k in ("from_round", "backend", "python")} == {
            "from_round": 0,
            "backend": "inprocess",
            "python": platform.python_version(),
        }
        assert all(record[name] == metadata.version(name) for name in ("flwr", "torch", "torchvision"))
        assert record["commit"] == git_state()[0] and record["torch_threads"] == os.cpu_count()  # threads=auto


def test_the_pfedla_setting_sweep_runs_rows_in_directories_of_their_own(data_root: Path, tmp_path: Path) -> None:
    """``--multirun '+pfedla_cifar10=glob(...)'``: FedAvg and FedAvg+FT (both method fedavg) each run, in
    a directory of its own (with the default subdir the second would have found the first finished)."""
    args = ["+pfedla_cifar10=glob(fedavg*)", *tiny_data(data_root), "num_rounds=1", "client.epochs=1"]
    done = run_sweep([*args, "++method.finetune_steps=2"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("fedavg", "fedavg_ft"):  # the fine-tuning's 1000 steps cut to 2 for both, to keep this short
        run_dir = tmp_path / f"{row}_cifar10_n10_s42"
        assert json.loads((run_dir / "results.json").read_text())["finished"] is True
        assert f"+pfedla_cifar10={row}" in (run_dir / ".hydra" / "overrides.yaml").read_text()


def test_a_sweep_cell_that_does_not_read_a_given_key_runs_and_says_so(data_root: Path, tmp_path: Path) -> None:
    """A single run is refused the key (test_bad_config_stops_with_one_line); a sweep's cell runs."""
    args = [*tiny_overrides(data_root), "method=fedavg,pfedme", "client.lr=0.05", "num_rounds=2", "clients_per_round=2"]
    done = run_sweep(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "client.lr: method pfedme does not read it; the run goes on without it" in done.stdout + done.stderr
    for method in ("fedavg", "pfedme"):
        assert json.loads((tmp_path / f"{method}_mnist_n4_s42" / "results.json").read_text())["finished"] is True


def test_the_same_command_gives_the_same_numbers(data_root: Path, tmp_path: Path) -> None:
    args = tiny_overrides(data_root, dataset="cifar10") + ["num_rounds=3", "eval_every=1"]
    runs = []
    for name in ("a", "b"):
        done = run_main(args, tmp_path / name)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads((tmp_path / name / "results.json").read_text())["history"])
    assert runs[0] == runs[1]


def test_the_ray_backend_gives_the_numbers_of_the_in_process_one(data_root: Path, tmp_path: Path) -> None:
    """Same messages, same clients, same Context per node: only where the ClientApp runs differs.
    pFedHN-PC, so the personal heads kept in Context.state across rounds are covered too."""
    args = tiny_overrides(data_root) + [
        "method=pfedhn_pc",
        "num_rounds=4",
        "eval_every=1",
        "simulation.server_threads=2",
        "simulation.threads=2",
    ]
    histories = {}
    for backend in ("inprocess", "ray"):
        done = run_main([*args, f"simulation.backend={backend}"], tmp_path / backend)
        assert done.returncode == 0, done.stderr[-3000:]
        results = json.loads((tmp_path / backend / "results.json").read_text())
        assert results["config"]["simulation"]["backend"] == backend
        histories[backend] = results["history"]
    assert histories["inprocess"] == histories["ray"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("num_clients=0", "config error: num_clients: must be a positive integer"),
        ("num_clients=300", "config error: num_clients: 300 clients cannot be split"),
        ("dataset.name=svhn", "config error: dataset.name: unknown dataset 'svhn'"),
        ("client.lr=-1", "config error: client.lr: must be a positive number"),
        ("simulation.backend=gpu", "config error: simulation.backend: must be one of inprocess, ray"),
        ("device=tpu", "config error: device: must be auto, cpu, cuda, cuda:<i> or mps, got 'tpu'"),
        (
            "simulation.client_gpus=0.5",
            "config error: simulation.client_gpus: GPU fractions need simulation.backend=ray",
        ),
        ("dataset.image_size=32", "config error: dataset.image_size: is 32, but the images are 28 x 28"),
        (
            "method=pfedme clients_per_round=2 client.lr=0.5",
            "config error: client.lr: method pfedme does not read it; drop it",
        ),
    ],
)
def test_bad_config_stops_with_one_line(data_root: Path, tmp_path: Path, override: str, message: str) -> None:
    done = run_main(tiny_overrides(data_root) + override.split(), tmp_path)
    assert done.returncode == 2
    assert message in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_missing_data_names_the_files_and_the_override(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_main(tiny_overrides(empty) + ["dataset.download=false"], tmp_path / "out")
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert "MNIST/raw" in output and "dataset.root=<dir>" in output
    assert "Traceback" not in done.stderr


def test_unknown_dataset_group_lists_the_choices(data_root: Path, tmp_path: Path) -> None:
    done = run_main(["dataset=svhn"], tmp_path)
    assert done.returncode != 0
    assert "Could not find 'dataset/svhn'" in done.stderr and "cifar10" in done.stderr


def test_resume_refuses_a_different_experiment(data_root: Path, tmp_path: Path) -> None:
    first = run_main(tiny_overrides(data_root) + ["num_rounds=2", "eval_every=1"], tmp_path / "a")
    assert first.returncode == 0, first.stderr[-3000:]
    done = run_main(
        tiny_overrides(data_root) + ["num_rounds=4", "client.lr=0.1", f"resume={tmp_path / 'a'}"], tmp_path / "b"
    )
    assert done.returncode == 2
    assert "config error: client.lr: is 0.1 but the run being resumed used 0.005" in done.stdout + done.stderr


def test_novel_clients_are_reported_apart(data_root: Path, tmp_path: Path) -> None:
    args = tiny_overrides(data_root) + [
        "num_rounds=3",
        "method.novel.clients=1",
        "method.novel.rounds=2",
        "eval_every=2",
    ]
    done = run_main(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [e["round"] for e in results["history"]] == [1, 3, 5]
    seen, novel = results["groups"]["seen"], results["groups"]["novel"]
    assert seen["clients"] == [0, 1, 2] and novel["clients"] == [3]
    assert seen["rounds"] == [1, 3] and novel["rounds"] == [4, 5]
    by_round = {e["round"]: e for e in results["history"]}

    def pooled(server_round: int, split: str, clients: list[int]) -> float:
        """The clients' accuracy pooled by their sample counts, from the run's own history."""
        metrics = by_round[server_round][split]
        hits = sum(metrics["client_accuracy"][c] * metrics["client_count"][c] for c in clients)
        return hits / sum(metrics["client_count"][c] for c in clients)

    assert novel["best_val_round"] == 5  # the novel phase's only evaluation
    assert novel["test_accuracy"] == pytest.approx(pooled(5, "test", [3]))
    best_seen = max((1, 3), key=lambda r: (pooled(r, "val", [0, 1, 2]), -r))  # the seen phase's, earliest on a tie
    assert seen["best_val_round"] == best_seen
    assert seen["test_accuracy"] == pytest.approx(pooled(best_seen, "test", [0, 1, 2]))


def test_one_seen_phase_continues_into_a_novel_phase_as_an_uninterrupted_run(data_root: Path, tmp_path: Path) -> None:
    """method.novel.rounds=0 trains the seen clients only; resumed with its rounds and lr set, the
    run ends as one given those settings from the start. Once in its novel phase, they are fixed."""
    base = tiny_overrides(data_root) + ["method.novel.clients=1", "eval_every=4"]  # evaluated at 1 and each phase's end
    seen_phase = [*base, "num_rounds=3"]
    novel_phase = ["method.novel.rounds=2", "method.novel.lr=0.05"]
    whole = run_main(seen_phase + novel_phase, tmp_path / "whole")
    first = run_main([*seen_phase, "method.novel.rounds=0"], tmp_path / "branch")
    assert whole.returncode == 0 and first.returncode == 0, first.stderr[-3000:]
    branched = run_main([*seen_phase, *novel_phase, f"resume={tmp_path / 'branch'}"], tmp_path / "unused")
    assert branched.returncode == 0, branched.stderr[-3000:]
    expected, got = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "branch"))
    assert got["finished"] and [e["round"] for e in got["history"]] == [1, 3, 5]
    assert got["history"] == expected["history"] and got["groups"] == expected["groups"]
    later = run_main(
        [*seen_phase, "method.novel.rounds=3", "method.novel.lr=0.05", f"resume={tmp_path / 'branch'}"], tmp_path / "x"
    )
    assert later.returncode == 2
    assert "config error: method.novel.rounds: is 3 but the run being resumed used 2" in later.stdout + later.stderr
    moved = run_main([*base, "num_rounds=4", *novel_phase, f"resume={tmp_path / 'branch'}"], tmp_path / "y")
    assert "config error: num_rounds: is 4 but the run being resumed used 3" in moved.stdout + moved.stderr


def test_a_killed_sweep_relaunched_ends_as_an_uninterrupted_one(data_root: Path, tmp_path: Path) -> None:
    """The same multirun command, given again, resumes unfinished cells and skips finished ones."""
    args = [
        *tiny_overrides(data_root),
        "method=pfedhn,pfedhn_pc",
        "num_rounds=12",
        "eval_every=4",
        "checkpoint_every=2",
    ]
    whole = run_sweep(args, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]

    first = tmp_path / "killed" / "pfedhn_mnist_n4_s42"
    sweep = subprocess.Popen(
        [sys.executable, "-m", "pfedhn.main", "--multirun", *args, f"hydra.sweep.dir={tmp_path / 'killed'}"],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not (first / "checkpoint.pt").exists() and sweep.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)  # kill -9, mid-way through the first cell
        sweep.wait()
    assert not json.loads((first / "results.json").read_text())["finished"]

    again = run_sweep(args, tmp_path / "killed")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming {first} after round" in again.stdout + again.stderr
    for cell in ("pfedhn_mnist_n4_s42", "pfedhn_pc_mnist_n4_s42"):
        a, b = (json.loads((tmp_path / d / cell / "results.json").read_text()) for d in ("whole", "killed"))
        assert b["finished"] and a["history"] == b["history"], cell
    assert len(json.loads((first / "results.json").read_text())["provenance"]) == 2

    once_more = run_sweep(args, tmp_path / "killed")
    assert once_more.returncode == 0 and (once_more.stdout + once_more.stderr).count("finished: skipped") == 2


def test_a_sweep_on_the_joblib_launcher_runs_one_job_per_core_each_on_its_share(
    data_root: Path, tmp_path: Path
) -> None:
    args = [*tiny_overrides(data_root), "method=pfedhn,pfedhn_pc", "num_rounds=3"]
    done = run_sweep([*args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for method in ("pfedhn", "pfedhn_pc"):
        results = json.loads((tmp_path / f"{method}_mnist_n4_s42" / "results.json").read_text())
        assert results["finished"]
        assert results["provenance"][0]["torch_threads"] == max(1, os.cpu_count() // 2)  # threads=auto
