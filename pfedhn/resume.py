"""Where a run starts: fresh, skipped (its directory holds it, finished) or from its
checkpoint, after checking that the config may continue the saved run (``config.check_resumable``)
on the same data."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from pfedhn import config
from pfedhn.checkpoint import FILENAME as CHECKPOINT_FILE
from pfedhn.checkpoint import Checkpoint
from pfedhn.errors import ConfigError
from pfedhn.methods import novel_phase_keys, total_rounds
from pfedhn.migration import migrate

log = logging.getLogger("pfedhn")


@dataclass(frozen=True)
class Start:
    """Where a run writes (``resume``'s directory or its own) and the checkpoint it continues (None: fresh)."""

    run_dir: Path
    checkpoint: Checkpoint | None


def start_of(cfg: DictConfig, output_dir: Path) -> Start | None:
    """How the run of ``cfg`` in ``output_dir`` starts; None if that directory holds it, finished.
    A ``ConfigError`` names the key if the saved run there (or at ``resume``) is another one."""
    if cfg.resume is not None:
        output_dir = Path(to_absolute_path(cfg.resume))
    elif finished_in(output_dir, cfg):
        return None
    if cfg.resume is None and not (output_dir / CHECKPOINT_FILE).is_file():
        return Start(output_dir, None)
    checkpoint = load_checkpoint(output_dir)
    added = config.check_resumable(
        cfg, checkpoint.config, at_round=checkpoint.round, novel_phase_keys=novel_phase_keys(cfg)
    )
    if added:
        log.info("resumed run predates these keys, used at their values now: %s", ", ".join(added))
    return Start(output_dir, checkpoint)


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """The run's checkpoint, its config in today's key layout (``pfedhn.migration``)."""
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError("resume", f"no {CHECKPOINT_FILE} in {run_dir}; resume takes a run directory")
    checkpoint = Checkpoint.load(path)
    checkpoint.config = migrate(checkpoint.config)
    return checkpoint


def finished_in(run_dir: Path, cfg: DictConfig) -> bool:
    """Whether ``run_dir`` holds a finished run of ``cfg`` (a ``ConfigError`` if it holds another run)."""
    path = run_dir / "results.json"
    if not path.is_file():
        return False
    saved = json.loads(path.read_text())
    then = migrate(saved["config"])
    # rounds done: all if finished, else at least its last evaluation's (its checkpoint may say more)
    done = total_rounds(then) if saved["finished"] else max((e["round"] for e in saved["history"]), default=0)
    config.check_resumable(cfg, then, at_round=done, novel_phase_keys=novel_phase_keys(cfg))
    return bool(saved["finished"]) and done == total_rounds(cfg)


def check_same_data(checkpoint: Checkpoint, fingerprint: str | None, root: str) -> None:
    """Refuse to resume on data that gives the clients other samples (another copy of the
    dataset under ``dataset.root``); checkpoints from before fingerprints pass."""
    saved = checkpoint.history.get("data_fingerprint")
    if saved is not None and saved != fingerprint:
        raise ConfigError(
            "dataset.root",
            f"the data in {root} gives the clients other samples than the run being resumed had "
            "(another copy of the dataset?); resume with the data it used",
        )
