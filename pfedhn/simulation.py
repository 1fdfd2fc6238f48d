"""Running the apps under Flower's Simulation Engine, with its per-message cost cut.

Two things about Flower 1.41's simulation add to a pFedHN round (one client,
about 0.3 s of compute on a CPU) and to its memory:

- **Polling.** Every message passes two loops that sleep a fixed 0.1 s: the
  SuperLink side that hands instructions to the backend
  (``vce_api.add_messages_to_queue``) and the ServerApp's grid that waits for
  replies (``InMemoryGrid.pull_interval``). With ``simulation.poll_interval``
  below 0.1 both loops poll at that interval instead.
- **The Ray hop.** Flower's only backend runs each ClientApp in a Ray actor: the
  message and the node's Context are pickled to another process and back, Ray's
  daemons share the cores with the training, and the data is loaded twice (server
  and actor). ``simulation.backend=inprocess`` runs the ClientApp in the
  simulation's own process instead (``InProcessBackend``), one message at a time,
  on the main thread (see ``MainThreadCalls``); ``ray`` keeps Flower's backend,
  which can run several clients in parallel on a machine with the cores for it.

Nothing else changes: the same messages, in the same order, reach the same
ClientApp through Flower's SuperLink, and the same Context is kept per node.

Both rely on private Flower names (``pfedhn.flower_internals``). ``choose_backend``
checks them once at start; where the installed Flower differs, the run falls
back to ``stock``: Flower's engine as shipped (Ray, 0.1 s polling), untouched.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from queue import Queue
from typing import Any

from flwr.app import Context, Message
from flwr.client import ClientApp
from flwr.clientapp.client_app import ClientAppException, LoadClientAppError
from flwr.server import Grid, ServerApp
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.fleet.vce.backend import Backend, BackendConfig
from flwr.server.superlink.linkstate import LinkState

try:
    from flwr.simulation import run_simulation
except ImportError:  # deprecated since flwr 1.28; a release may drop it (see ``simulate``)
    run_simulation = None

from pfedhn import flower_internals
from pfedhn.config import BACKENDS
from pfedhn.errors import PFedHNError
from pfedhn.strategy import FederatedStrategy, call_here

FLOWER_POLL_INTERVAL = 0.1
STOCK_COST = "1.15-1.3x the time per CIFAR-10 round and about twice the memory here (docs/performance.md)"
log = logging.getLogger("pfedhn")


def choose_backend(requested: str) -> str:
    """The backend a run uses: ``requested`` (one of ``BACKENDS``), or ``stock`` when the
    installed Flower no longer matches the private names that ``inprocess`` and ``ray``
    replace (``flower_internals.problems``); a fallback is logged as one line saying why."""
    if requested == "stock":
        return requested
    found = flower_internals.problems()
    if found:
        log.warning(
            "simulation.backend=%s needs Flower internals that flwr %s changed (%s); "
            "running Flower's stock engine instead (Ray, 0.1 s polling): %s",
            requested,
            flwr_version(),
            "; ".join(found),
            STOCK_COST,
        )
        return "stock"
    if flwr_version() not in flower_internals.VERIFIED_FLOWER:
        log.info(
            "flwr %s: the %s engine was verified on flwr %s only; every Flower name it replaces still matches",
            flwr_version(),
            requested,
            ", ".join(flower_internals.VERIFIED_FLOWER),
        )
    return requested


def flwr_version() -> str:
    from importlib.metadata import version

    return version("flwr")


class _HideRunSimulationDeprecation(logging.Filter):
    """Drops Flower's warning that ``run_simulation`` is deprecated (see ``simulate``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`run_simulation` function is deprecated" not in record.getMessage()


_stock_add_messages_to_queue = vce_api.add_messages_to_queue


class PollingServerApp(ServerApp):
    """A ServerApp whose in-memory grid polls for replies every ``pull_interval`` seconds
    (None: Flower's grid as it is)."""

    def __init__(self, *args: Any, pull_interval: float | None = FLOWER_POLL_INTERVAL, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pull_interval = pull_interval

    def __call__(self, grid: Grid, context: Context) -> None:
        if self.pull_interval is not None and hasattr(grid, "pull_interval"):
            grid.pull_interval = self.pull_interval
        super().__call__(grid, context)


def _polling_add_messages_to_queue(interval: float):
    """``vce_api.add_messages_to_queue`` polling every ``interval`` s, asking only for the
    nodes that have a message waiting.

    Flower's sweep asks the state for every node in turn (``get_message_ins``), and each
    ask scans every stored message under the state's lock: a sweep costs nodes × messages,
    which at 1000 nodes kept the main thread waiting most of an evaluation. Here one
    look at the in-memory state's store (``pending_nodes``) finds the nodes with an
    undelivered message, and only those are asked, in the same node order and one
    message per node per sweep, as Flower does. The wait after a sweep is at least four
    times its duration, which keeps this thread under a fifth of a core.
    """

    def add_messages_to_queue(
        state: LinkState, queue: Queue[Message], nodes_mapping: dict[int, int], f_stop: threading.Event
    ) -> None:
        while not f_stop.is_set():
            started = time.perf_counter()
            pending = pending_nodes(state)
            for node_id in nodes_mapping:
                if pending is not None and node_id not in pending:
                    continue
                for message in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(message)
            f_stop.wait(max(interval, 4 * (time.perf_counter() - started)))

    return add_messages_to_queue


def pending_nodes(state: LinkState) -> set[int] | None:
    """The destination nodes of the undelivered messages in ``state``'s store; None when
    ``state`` is not Flower's in-memory state (then every node is asked, as Flower does)."""
    store = getattr(state, "message_ins_store", None)
    lock = getattr(state, "lock", None)
    if not isinstance(store, dict) or lock is None:
        return None
    with lock:
        return {m.metadata.dst_node_id for m in store.values() if m.metadata.delivered_at == ""}


class MainThreadCalls:
    """Runs calls that other threads submit on the one thread that ``serve``s them.

    Torch's OpenMP keeps one pool of worker threads per thread that starts
    parallel work. With tensor work on two threads (the ServerApp's and the
    ClientApp's) there are two pools on two cores, and local training ran 40 % or more
    slower on this 2-core machine (0.42 s vs 0.21–0.30 s per CIFAR-10 round,
    ``docs/scripts/thread_split.py``; ``OMP_WAIT_POLICY=ACTIVE`` recovered most
    of it, which points at the pools sleeping and waking between parallel
    regions). So the in-process simulation runs all tensor work, the ClientApp
    calls and the strategy's hooks, on one thread: the main one, which serves
    these calls.
    """

    def __init__(self) -> None:
        self._calls: Queue[tuple[Callable[[], Any], Future] | None] = Queue()

    def submit(self, call: Callable[[], Any]) -> Any:
        """Run ``call`` on the serving thread; return its result or raise its exception."""
        future: Future = Future()
        self._calls.put((call, future))
        return future.result()

    def serve(self) -> None:
        """Run submitted calls, in order, until ``close``."""
        while (item := self._calls.get()) is not None:
            call, future = item
            try:
                future.set_result(call())
            except Exception as error:  # handed to the submitting thread
                future.set_exception(error)
            except BaseException as error:  # Ctrl-C: both threads stop
                future.set_exception(error)
                raise

    def close(self) -> None:
        self._calls.put(None)


class InProcessBackend(Backend):
    """A Simulation Engine backend that runs the ClientApp through ``calls`` in this process.

    It has one worker, so messages are handled one at a time, in the order the
    SuperLink hands them over. Errors reach Flower as they do from a Ray actor:
    a ``ClientAppException`` becomes an error reply to the server.
    """

    def __init__(self, calls: MainThreadCalls, backend_config: BackendConfig) -> None:
        super().__init__(backend_config)
        self.calls = calls
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
        app_fn = self.app_fn
        if app_fn is None:
            raise RuntimeError("InProcessBackend.process_message before build")
        try:
            reply = self.calls.submit(lambda: app_fn()(message=message, context=context))
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
    strategy: FederatedStrategy,
) -> None:
    """``flwr.simulation.run_simulation`` on ``backend`` (one of ``BACKENDS``; pick it
    with ``choose_backend``), with the SuperLink polling at the server app's interval.

    Flower 1.41's engine builds its backend by name from ``raybackend.RayBackend``;
    for ``inprocess`` that name points at ``InProcessBackend`` while the simulation
    runs, the simulation runs in a secondary thread, and this (main) thread runs
    the ClientApp calls and ``strategy``'s tensor work (``strategy.compute``).
    ``stock`` touches nothing of Flower's.

    ``run_simulation`` is deprecated since flwr 1.28 with no removal version; its
    warning (which Flower prints on each call) is replaced by one line saying
    what it means here.
    """
    from flwr.server.superlink.fleet.vce.backend import raybackend  # imports Ray

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if run_simulation is None:
        raise PFedHNError(
            f"flwr {flwr_version()} has no run_simulation, which python -m pfedhn.main runs on; "
            "install the pinned flwr (pip install -e .) or run the same apps with `flwr run .` (EXTENDED_README.md)"
        )
    log.info(
        "Flower's run_simulation, which runs this simulation, is deprecated (no removal version yet); "
        "`flwr run .` runs the same apps (EXTENDED_README.md, 'flwr run')"
    )
    ray_backend = raybackend.RayBackend
    if backend == "stock":
        server_app.pull_interval = None
    elif server_app.pull_interval is not None and server_app.pull_interval < FLOWER_POLL_INTERVAL:
        vce_api.add_messages_to_queue = _polling_add_messages_to_queue(server_app.pull_interval)
    hide_deprecation = _HideRunSimulationDeprecation()
    flower_logger = logging.getLogger("flwr")
    flower_logger.addFilter(hide_deprecation)

    def run() -> None:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_supernodes,
            backend_config=backend_config,
        )

    try:
        if backend != "inprocess":
            run()
        else:
            calls = MainThreadCalls()
            raybackend.RayBackend = functools.partial(InProcessBackend, calls)
            strategy.compute = calls.submit
            _run_beside(run, calls)
    finally:
        flower_logger.removeFilter(hide_deprecation)
        vce_api.add_messages_to_queue = _stock_add_messages_to_queue
        raybackend.RayBackend = ray_backend
        strategy.compute = call_here


def _run_beside(run: Callable[[], None], calls: MainThreadCalls) -> None:
    """Run ``run`` in a secondary thread while this thread serves ``calls``; re-raise its error."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as error:
            errors.append(error)
        finally:
            calls.close()

    thread = threading.Thread(target=target, name="flower-simulation", daemon=True)
    thread.start()
    calls.serve()
    thread.join()
    if errors:
        raise errors[0]
