"""Run one experiment: ``python -m pfedhn.main [hydra overrides]``.

Composes ``conf/``, checks it, loads and partitions the data (failing fast on a
bad config or missing files), then runs the Flower simulation and writes
``results.json`` into the Hydra output directory.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Collection
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from pfedhn import config, provenance, validation
from pfedhn.checkpoint import FILENAME as CHECKPOINT_FILE
from pfedhn.client_app import make_client_app
from pfedhn.dataset import FederatedData, check_image_shape, load_federated
from pfedhn.errors import PFedHNError
from pfedhn.methods import build_strategy
from pfedhn.results import RunHistory
from pfedhn.resume import check_same_data, start_of
from pfedhn.server_app import make_server_app
from pfedhn.simulation import choose_backend, simulate
from pfedhn.strategy import FederatedStrategy

log = logging.getLogger("pfedhn")


def run(
    cfg: DictConfig, output_dir: Path, concurrent_runs: int = 1, given: Collection[str] = (), sweep: bool = False
) -> RunHistory | None:
    """Run the experiment of a composed config; return its history (also in ``results.json``).

    The same command can be given again in the same directory (a sweep's cells
    have fixed ones): a finished run there is skipped (returns None) and an
    unfinished one continues from its last checkpoint, as with ``resume``.
    ``concurrent_runs``: how many runs share the machine (``simulation.threads=auto``);
    ``given``: the keys set on the command line; one its method leaves unread is refused, but
    only warned about in a ``sweep``'s cell (its siblings may read it) or on resuming.
    """
    cfg.dataset.root = to_absolute_path(cfg.dataset.root)
    validation.validate(cfg)
    config.resolve_threads(cfg, concurrent_runs)
    start = start_of(cfg, output_dir)
    if start is None:
        log.info("%s holds this run, finished: skipped", output_dir)
        return None
    validation.check_given_keys(cfg, given, refuse=not sweep and start.checkpoint is None)
    output_dir, checkpoint = start.run_dir, start.checkpoint
    logging.getLogger("flwr").setLevel(cfg.simulation.flower_log_level)
    backend = choose_backend(cfg.simulation.backend)
    in_process = backend == "inprocess"
    torch.set_num_threads(cfg.simulation.threads if in_process else cfg.simulation.server_threads)
    data = load_data(cfg, keep=in_process)
    # no attribute named `classes` in this module: joblib's cloudpickle, pickling it by value
    # for a worker, would take the name for the submodule torch.classes, which cannot be pickled
    history = RunHistory(
        config=OmegaConf.to_container(cfg, resolve=True),
        client_classes=data.client_classes(),
        data_fingerprint=data.fingerprint(),
    )
    if checkpoint is not None:
        check_same_data(checkpoint, history.data_fingerprint, cfg.dataset.root)
    results_path = output_dir / "results.json"
    strategy = build_strategy(
        cfg,
        history=history,
        results_path=results_path,
        progress=cfg.progress,
        checkpoint_path=output_dir / CHECKPOINT_FILE,
        checkpoint_every=cfg.checkpoint_every,
    )
    if checkpoint is not None:
        strategy.resume_from(checkpoint)
        log.info("resuming %s after round %d", output_dir, checkpoint.round)
    history.provenance.append({**provenance.record(strategy.start_round), "backend": backend})
    log.info("%r on %s", strategy, config.device(cfg))
    simulate_to_the_end(cfg, strategy, backend)
    history.write(results_path, finished=True)
    best = history.best
    log.info(
        "test accuracy %.4f at best-validation round %d (%.0f s) -> %s",
        best.test.accuracy,
        best.round,
        time.time() - history.started,
        results_path,
    )
    return history


def load_data(cfg: DictConfig, keep: bool) -> FederatedData:
    """The run's data, partitioned, its images checked against the config; ``keep``: leave
    it in this process's cache (the in-process backend's clients index it)."""
    data = load_federated(config.data_settings(cfg), cfg.dataset.num_classes)
    check_image_shape(data.image_shape(), cfg.dataset.in_channels, cfg.dataset.image_size)
    log.info(
        "%s: %d clients, train/val/test %d/%d/%d samples",
        cfg.dataset.name,
        cfg.num_clients,
        *(sum(len(i) for i in data.client_indices[s]) for s in ("train", "val", "test")),
    )
    if not keep:
        load_federated.cache_clear()  # the Ray actors load their own copies; free this one
    return data


def simulate_to_the_end(cfg: DictConfig, strategy: FederatedStrategy, backend: str) -> None:
    """Run the Flower simulation of ``strategy`` on ``backend`` through its last round; a stop
    by the fault policy is a ``PFedHNError`` saying how to continue."""
    try:
        simulate(
            server_app=make_server_app(cfg, strategy),
            client_app=make_client_app(cfg),
            num_supernodes=cfg.num_clients,
            backend=backend,
            strategy=strategy,
            backend_config={
                "client_resources": {
                    "num_cpus": cfg.simulation.client_cpus,
                    "num_gpus": float(cfg.simulation.client_gpus),
                },
                "init_args": {"logging_level": cfg.simulation.flower_log_level, "log_to_driver": True},
            },
        )
    except Exception:
        if strategy.stop_reason is None:
            raise
    if strategy.stop_reason is not None:  # the fault policy stopped the run (raised through Flower or not)
        raise PFedHNError(f"stopped: {strategy.stop_reason}; continue from the last checkpoint with resume=<run dir>")
    if strategy.last_round != strategy.num_rounds:
        raise RuntimeError("the simulation ended before its last round; see the log above")


def launcher_jobs(launcher: DictConfig) -> int:
    """How many runs Hydra's launcher runs at once: joblib's ``n_jobs`` (-1: one per core,
    -2: all but one, ...), 1 for a launcher without it (the basic one)."""
    jobs = OmegaConf.select(launcher, "n_jobs", default=1)
    return max(1, config.available_cores() + 1 + jobs if jobs < 0 else jobs)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; a user-fixable error ends the run with one line, exit code 2."""
    try:
        hydra_cfg = HydraConfig.get()
        given = config.given_keys(hydra_cfg.overrides.task)
        sweep = hydra_cfg.mode == RunMode.MULTIRUN
        run(cfg, Path(hydra_cfg.runtime.output_dir), launcher_jobs(hydra_cfg.launcher), given, sweep)
    except PFedHNError as error:
        log.error("%s", error)
        sys.exit(2)
    except KeyboardInterrupt:
        log.error("interrupted; continue from the last checkpoint with resume=<run dir>")
        logging.shutdown()
        os._exit(130)  # Flower's simulation threads do not stop on their own


if __name__ == "__main__":
    main()
