"""The ServerApp: the strategy (hypernetwork and embeddings) runs here."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from omegaconf import DictConfig, OmegaConf

from pfedhn import config, provenance
from pfedhn.methods import build_strategy
from pfedhn.results import RunHistory
from pfedhn.simulation import PollingServerApp
from pfedhn.strategy import PersonalizedStrategy


def make_server_app(cfg: DictConfig, strategy: PersonalizedStrategy) -> PollingServerApp:
    """A ServerApp running ``strategy``'s remaining rounds (see ``pfedhn.simulation``)."""

    def server_fn(context: Context) -> ServerAppComponents:
        return ServerAppComponents(strategy=strategy, config=server_config(cfg, strategy))

    return PollingServerApp(server_fn=server_fn, pull_interval=cfg.simulation.poll_interval)


def _deployment_server_fn(context: Context) -> ServerAppComponents:
    """``flwr run``: compose the config from the run config; results go to ``outputs/flwr/``."""
    cfg = config.from_run_config(context.run_config)
    history = RunHistory(config=OmegaConf.to_container(cfg, resolve=True))
    history.provenance.append(provenance.record(from_round=0))
    strategy = build_strategy(
        cfg,
        history=history,
        results_path=Path("outputs") / "flwr" / f"run-{context.run_id}" / "results.json",
        progress=False,
    )
    return ServerAppComponents(strategy=strategy, config=server_config(cfg, strategy))


def server_config(cfg: DictConfig, strategy: PersonalizedStrategy) -> ServerConfig:
    """The strategy's remaining rounds; ``faults.round_timeout`` as Flower's round timeout (a
    client that has not answered by then fails, see ``pfedhn.faults``)."""
    timeout = cfg.faults.round_timeout
    return ServerConfig(num_rounds=strategy.remaining_rounds, round_timeout=None if timeout is None else float(timeout))


app = ServerApp(server_fn=_deployment_server_fn)
