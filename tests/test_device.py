"""The ``device`` key, GPU-only tests (skipped with a reason on CPU machines) and the cluster launcher."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from pfedhn import config
from pfedhn.config import CONF_DIR, compose
from pfedhn.errors import ConfigError
from tests.conftest import run_pfedhn, tiny_overrides

NO_CUDA = "needs a CUDA device; this machine has none (torch.cuda.is_available() is False)"


def test_auto_is_cuda_where_there_is_one_else_the_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert config.device(compose(["device=auto"])).type == expected
    assert config.device(compose(["device=cpu"])) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7")
def test_an_unavailable_device_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"config error: device: cuda:7 is not available here"):
        config.device(compose(["device=cuda:7"]))


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_where_there_is_none_is_refused() -> None:
    with pytest.raises(ConfigError, match="config error: device: mps is not available here"):
        config.device(compose(["device=mps"]))


def test_the_slurm_launcher_preset_composes() -> None:
    """Hydra's own config loading of ``hydra/launcher=slurm`` (no cluster involved)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(
            config_name="config",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "+experiment=table1"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1 and launcher.max_num_timeout == 5
    assert cfg.hydra.sweep.dir == "multirun/table1"  # fixed cell directories: a requeued job resumes


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")
def test_threads_auto_uses_the_cores_this_process_may_run_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A job allowed 3 of the node's cores (SLURM, taskset) gets 3 threads, shared among its runs."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5, 6})
    for concurrent_runs, threads in ((1, 3), (2, 1), (5, 1)):
        cfg = compose(["simulation.threads=auto"])
        config.resolve_threads(cfg, concurrent_runs)
        assert cfg.simulation.threads == threads
    cfg = compose(["simulation.threads=2"])
    config.resolve_threads(cfg, concurrent_runs=1)
    assert cfg.simulation.threads == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize("method", ["pfedhn", "pfedhn_pc", "pfedla", "fedavg"])
def test_a_run_on_the_gpu_matches_the_cpu_run(data_root: Path, tmp_path: Path, method: str) -> None:
    """Same seed, same data: the GPU run's accuracies are close to the CPU run's (not bitwise:
    cuDNN and CUDA reductions order sums differently)."""
    results = {}
    for device in ("cpu", "cuda"):
        run_dir = tmp_path / device
        args = tiny_overrides(data_root) + [f"method={method}", "num_rounds=6", "eval_every=3", f"device={device}"]
        done = run_pfedhn([*args, f"hydra.run.dir={run_dir}"])
        assert done.returncode == 0, done.stderr[-3000:]
        results[device] = json.loads((run_dir / "results.json").read_text())
    for cpu, gpu in zip(results["cpu"]["history"], results["cuda"]["history"], strict=True):
        assert gpu["test"]["accuracy"] == pytest.approx(cpu["test"]["accuracy"], abs=0.05)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_the_benchmark_runs_on_the_gpu(data_root: Path, tmp_path: Path) -> None:
    from pfedhn import bench

    results = bench.main(
        [
            "--root",
            str(data_root),
            "--tiny",
            "--rounds",
            "3",
            "--warmup",
            "1",
            "--device",
            "cuda",
            "--json",
            str(tmp_path / "b.json"),
            "--docs",
            str(tmp_path / "p.md"),
        ]
    )
    assert all(label.endswith("(cuda:0)") or label.endswith("(cuda)") for label in results)
