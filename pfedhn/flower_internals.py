"""The private Flower names the in-process engine replaces or relies on, and their check.

``pfedhn.simulation`` speeds Flower's simulation up by swapping two private
names (the SuperLink's message-queue loop and the Ray backend class) and by
setting the in-memory grid's poll interval. Flower may change any of them in
any release. ``problems()`` checks, once at start, that each still exists with
the parameters the replacement expects and is still looked up the way the
replacement relies on; where one does not, the run falls back to Flower's stock
engine (see ``pfedhn.simulation.choose_backend``).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

VERIFIED_FLOWER = ("1.41.0", "1.42.0")  # the in-process engine was tested on these releases


@dataclass(frozen=True)
class Internal:
    """One private Flower name: ``module``'s ``attribute`` (dotted inside the module).

    ``parameters`` are the names its signature must have, in order (a class:
    its constructor's, without ``self``); None: it only has to exist. ``source_has`` is a line fragment its
    source must contain: how Flower looks up the name we replace.
    """

    module: str
    attribute: str
    parameters: tuple[str, ...] | None
    why: str
    source_has: str = ""

    @property
    def name(self) -> str:
        return f"{self.module}.{self.attribute}"

    def problem(self) -> str | None:
        """None if Flower still matches; else one line saying what changed."""
        try:
            obj = importlib.import_module(self.module)
            for part in self.attribute.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            return f"{self.name} is gone"
        target = obj.fget if isinstance(obj, property) else obj
        if self.parameters is None:
            return None
        try:
            found = tuple(p for p in inspect.signature(target).parameters if p != "self")
        except (TypeError, ValueError):
            return f"{self.name} has no readable signature"
        if found != self.parameters:
            return f"{self.name} takes ({', '.join(found)}), expected ({', '.join(self.parameters)})"
        if self.source_has:
            try:
                source = inspect.getsource(target)
            except (OSError, TypeError):
                return f"{self.name} has no readable source"
            if self.source_has not in source:
                return f"{self.name} no longer contains {self.source_has!r}"
        return None


VCE = "flwr.server.superlink.fleet.vce.vce_api"
BACKEND = "flwr.server.superlink.fleet.vce.backend.backend"

INTERNALS: tuple[Internal, ...] = (
    Internal(
        VCE,
        "add_messages_to_queue",
        ("state", "queue", "nodes_mapping", "f_stop"),
        "replaced by a loop polling every simulation.poll_interval s",
    ),
    Internal(
        VCE,
        "run_api",
        ("app_fn", "backend_fn", "nodes_mapping", "state_factory", "node_info_stores", "f_stop", "metrics"),
        "looks add_messages_to_queue up in its module when it starts the loop",
        source_has="target=add_messages_to_queue",
    ),
    Internal(
        "flwr.server.superlink.fleet.vce.backend.raybackend",
        "RayBackend",
        ("backend_config",),
        "replaced by InProcessBackend, built with the same argument",
    ),
    Internal(
        VCE,
        "start_vce",
        (
            "backend_name",
            "backend_config_json_stream",
            "app_dir",
            "is_app",
            "f_stop",
            "run",
            "metrics",
            "client_app",
            "client_app_attr",
            "num_supernodes",
            "state_factory",
            "existing_nodes_mapping",
        ),
        "imports RayBackend from its module when it builds the backend",
        source_has="from .backend.raybackend import RayBackend",
    ),
    Internal(BACKEND, "Backend.__init__", ("backend_config",), "InProcessBackend's base class"),
    Internal(BACKEND, "Backend.build", ("app_fn",), "implemented by InProcessBackend"),
    Internal(BACKEND, "Backend.num_workers", (), "implemented by InProcessBackend"),
    Internal(BACKEND, "Backend.is_worker_idle", (), "implemented by InProcessBackend"),
    Internal(BACKEND, "Backend.terminate", (), "implemented by InProcessBackend"),
    Internal(BACKEND, "Backend.process_message", ("message", "context"), "implemented by InProcessBackend"),
    Internal(
        "flwr.superlink.grid.inmemory_grid",
        "InMemoryGrid.__init__",
        ("state_factory", "pull_interval"),
        "PollingServerApp sets the grid's pull_interval",
        source_has="self.pull_interval = pull_interval",
    ),
    Internal(
        "flwr.clientapp.client_app",
        "ClientAppException",
        ("message",),
        "InProcessBackend reports a failing ClientApp with it, as the Ray backend does",
    ),
    Internal("flwr.clientapp.client_app", "LoadClientAppError", None, "re-raised as Flower expects"),
)


def problems(internals: tuple[Internal, ...] = INTERNALS) -> list[str]:
    """One line per name in ``internals`` that no longer matches the installed Flower."""
    return [p for p in (internal.problem() for internal in internals) if p is not None]
