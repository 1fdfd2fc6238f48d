"""Running the apps under Flower's Simulation Engine, with its message latency cut.

Flower 1.41's in-process simulation moves every message through two polling
loops that sleep a fixed 0.1 s: the SuperLink side that hands instructions to
the backend (``vce_api.add_messages_to_queue``) and the ServerApp's grid that
waits for replies (``InMemoryGrid.pull_interval``). pFedHN trains one client
per round, so each round waits on both: about 0.1–0.2 s of idle time per round,
15–25 % of a CIFAR-10 round on a CPU. With ``simulation.poll_interval`` below
0.1 both loops poll at that interval instead. Nothing else changes: the same
messages, in the same order, reach the same clients.
"""

from __future__ import annotations

import threading
import time
from queue import Queue
from typing import Any

from flwr.app import Context, Message
from flwr.client import ClientApp
from flwr.server import Grid, ServerApp
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.linkstate import LinkState
from flwr.simulation import run_simulation

FLOWER_POLL_INTERVAL = 0.1
_stock_add_messages_to_queue = vce_api.add_messages_to_queue


class PollingServerApp(ServerApp):
    """A ServerApp whose in-memory grid polls for replies every ``pull_interval`` seconds."""

    def __init__(self, *args: Any, pull_interval: float = FLOWER_POLL_INTERVAL, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pull_interval = pull_interval

    def __call__(self, grid: Grid, context: Context) -> None:
        if hasattr(grid, "pull_interval"):
            grid.pull_interval = self.pull_interval
        super().__call__(grid, context)


def _polling_add_messages_to_queue(interval: float):
    """``vce_api.add_messages_to_queue`` polling every ``interval`` s.

    The sweep asks the state once per node, so with many nodes a sweep itself
    takes time; the wait after a sweep is at least four times its duration,
    which keeps this thread under a fifth of a core.
    """

    def add_messages_to_queue(
        state: LinkState, queue: Queue[Message], nodes_mapping: dict[int, int], f_stop: threading.Event
    ) -> None:
        while not f_stop.is_set():
            started = time.perf_counter()
            for node_id in nodes_mapping:
                for message in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(message)
            f_stop.wait(max(interval, 4 * (time.perf_counter() - started)))

    return add_messages_to_queue


def simulate(
    server_app: PollingServerApp,
    client_app: ClientApp,
    num_supernodes: int,
    backend_config: dict[str, Any],
) -> None:
    """``flwr.simulation.run_simulation`` with the SuperLink polling at the server app's interval."""
    interval = server_app.pull_interval
    if interval < FLOWER_POLL_INTERVAL:
        vce_api.add_messages_to_queue = _polling_add_messages_to_queue(interval)
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_supernodes,
            backend_config=backend_config,
        )
    finally:
        vce_api.add_messages_to_queue = _stock_add_messages_to_queue
