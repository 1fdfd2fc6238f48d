"""The ServerApp: the method's strategy (e.g. pFedHN's hypernetwork and embeddings) runs here."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from omegaconf import DictConfig, OmegaConf

from pfedhn import provenance, validation
from pfedhn.checkpoint import FILENAME as CHECKPOINT_FILE
from pfedhn.errors import ConfigError
from pfedhn.methods import build_strategy
from pfedhn.results import RunHistory
from pfedhn.simulation import PollingServerApp
from pfedhn.strategy import FederatedStrategy

log = logging.getLogger("pfedhn")


def make_server_app(cfg: DictConfig, strategy: FederatedStrategy) -> PollingServerApp:
    """A ServerApp running ``strategy``'s remaining rounds (see ``pfedhn.simulation``)."""

    def server_fn(context: Context) -> ServerAppComponents:
        return ServerAppComponents(strategy=strategy, config=server_config(cfg, strategy))

    return PollingServerApp(server_fn=server_fn, pull_interval=cfg.simulation.poll_interval)


def _deployment_server_fn(context: Context) -> ServerAppComponents:
    """``flwr run``: compose the config from the run config; results and checkpoints go to
    ``<output-dir>/run-<run id>/`` (``output_directory``), whatever the SuperLink's directory."""
    cfg = validation.from_run_config(context.run_config)
    out = output_directory(context.run_config) / f"run-{context.run_id}"
    history = RunHistory(config=OmegaConf.to_container(cfg, resolve=True))  # the data lives on the SuperNodes
    history.provenance.append({**provenance.record(from_round=0), "engine": "flwr run"})
    strategy = build_strategy(
        cfg,
        history=history,
        results_path=out / "results.json",
        progress=False,
        checkpoint_path=out / CHECKPOINT_FILE,
        checkpoint_every=cfg.checkpoint_every,
    )
    log.info("flwr run %s: %r; results in %s", context.run_id, strategy, out)
    return ServerAppComponents(strategy=strategy, config=server_config(cfg, strategy))


def output_directory(run_config: dict[str, Any]) -> Path:
    """The run config's ``output-dir``: an absolute path on the SuperLink's machine (``~``
    expanded); empty: ``~/pfedhn-runs``. A relative one is refused: it would resolve against
    wherever the SuperLink happened to be started."""
    raw = str(run_config.get("output-dir", "")).strip()
    path = Path(raw or DEFAULT_OUTPUT_DIR).expanduser()
    if not path.is_absolute():
        raise ConfigError("output-dir", f"{raw!r} is relative; give an absolute directory (run config output-dir)")
    return path


def server_config(cfg: DictConfig, strategy: FederatedStrategy) -> ServerConfig:
    """The strategy's remaining rounds; ``faults.round_timeout`` as Flower's round timeout (a
    client that has not answered by then fails, see ``pfedhn.faults``)."""
    timeout = cfg.faults.round_timeout
    return ServerConfig(num_rounds=strategy.remaining_rounds, round_timeout=None if timeout is None else float(timeout))


DEFAULT_OUTPUT_DIR = "~/pfedhn-runs"
app = ServerApp(server_fn=_deployment_server_fn)
