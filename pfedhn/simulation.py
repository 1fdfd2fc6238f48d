"""Running the apps under Flower's Simulation Engine, with its per-message cost cut.

Two things about Flower 1.41's simulation cost a pFedHN round (one client,
about 0.3 s of compute on a CPU) a third of its time again:

- **Polling.** Every message passes two loops that sleep a fixed 0.1 s: the
  SuperLink side that hands instructions to the backend
  (``vce_api.add_messages_to_queue``) and the ServerApp's grid that waits for
  replies (``InMemoryGrid.pull_interval``). With ``simulation.poll_interval``
  below 0.1 both loops poll at that interval instead.
- **The Ray hop.** Flower's only backend runs each ClientApp in a Ray actor: the
  message and the node's Context are pickled to another process and back, and
  Ray's daemons share the cores with the training. ``simulation.backend=inprocess``
  runs the ClientApp in a worker thread of the simulation's own process instead
  (``InProcessBackend``), one message at a time; ``ray`` keeps Flower's backend,
  which can run several clients in parallel on a machine with the cores for it.

Nothing else changes: the same messages, in the same order, reach the same
ClientApp through Flower's SuperLink, and the same Context is kept per node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from queue import Queue
from typing import Any

from flwr.app import Context, Message
from flwr.client import ClientApp
from flwr.clientapp.client_app import ClientAppException, LoadClientAppError
from flwr.server import Grid, ServerApp
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.fleet.vce.backend import Backend, BackendConfig
from flwr.server.superlink.linkstate import LinkState
from flwr.simulation import run_simulation

FLOWER_POLL_INTERVAL = 0.1
BACKENDS = ("inprocess", "ray")
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


class InProcessBackend(Backend):
    """A Simulation Engine backend that runs the ClientApp in the calling worker thread.

    It has one worker, so messages are handled one at a time, in the order the
    SuperLink hands them over. Errors reach Flower as they do from a Ray actor:
    a ``ClientAppException`` becomes an error reply to the server.
    """

    def __init__(self, backend_config: BackendConfig) -> None:
        super().__init__(backend_config)
        self.app_fn: Callable[[], ClientApp] | None = None

    def build(self, app_fn: Callable[[], ClientApp]) -> None:
        self.app_fn = app_fn

    @property
    def num_workers(self) -> int:
        return 1

    def is_worker_idle(self) -> bool:
        return True

    def terminate(self) -> None:
        self.app_fn = None

    def process_message(self, message: Message, context: Context) -> tuple[Message, Context]:
        if self.app_fn is None:
            raise RuntimeError("InProcessBackend.process_message before build")
        try:
            reply = self.app_fn()(message=message, context=context)
        except LoadClientAppError:
            raise
        except Exception as error:
            raise ClientAppException(str(error)) from error
        return reply, context


def simulate(
    server_app: PollingServerApp,
    client_app: ClientApp,
    num_supernodes: int,
    backend: str,
    backend_config: dict[str, Any],
) -> None:
    """``flwr.simulation.run_simulation`` on ``backend`` (one of ``BACKENDS``), with the
    SuperLink polling at the server app's interval.

    Flower 1.41's engine builds its backend by name from ``raybackend.RayBackend``;
    for ``inprocess`` that name points at ``InProcessBackend`` while the simulation runs.
    """
    from flwr.server.superlink.fleet.vce.backend import raybackend  # imports Ray

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    ray_backend = raybackend.RayBackend
    interval = server_app.pull_interval
    if interval < FLOWER_POLL_INTERVAL:
        vce_api.add_messages_to_queue = _polling_add_messages_to_queue(interval)
    if backend == "inprocess":
        raybackend.RayBackend = InProcessBackend
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_supernodes,
            backend_config=backend_config,
        )
    finally:
        vce_api.add_messages_to_queue = _stock_add_messages_to_queue
        raybackend.RayBackend = ray_backend
