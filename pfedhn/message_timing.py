"""Where a message's time goes on Flower's Deployment Engine.

There (flwr 1.42) a SuperNode starts a fresh ``flwr-clientapp`` process for every
message. ``TimedClient`` adds to each reply the split of that process's life:

- ``flower_s``: from the process's creation to the import of ``pfedhn.client_app``, plus
  Flower's time between that import and calling the ClientApp (Python, Flower's imports,
  fetching the message and the node's Context);
- ``imports_s``: importing ``pfedhn.client_app`` (torch is most of it);
- ``setup_s``: composing the config and reading the client's data;
- ``work_s``: the fit or the evaluation itself.

The server records them in ``results.json`` (``message_timings``). Only a process's first
message reports them: where a process serves many (Flower's simulation keeps its Ray actors),
its age says nothing about one message.
"""

from __future__ import annotations

import time
from typing import Any

import psutil
from flwr.client import NumPyClient
from flwr.common import NDArrays, Scalar

TIMING_KEYS = ("flower_s", "imports_s", "setup_s", "work_s")
_served = [0]  # messages this process has answered


class TimedClient(NumPyClient):
    """``client`` with the timing of its process added to every fit and evaluate reply.

    Parameters
    ----------
    client : NumPyClient
        The client that does the work.
    imported : tuple[float, float]
        ``time.time()`` when ``pfedhn.client_app`` started and finished importing.
    called : float
        ``time.time()`` when Flower called the ClientApp's ``client_fn``.
    """

    def __init__(self, client: NumPyClient, imported: tuple[float, float], called: float) -> None:
        self.client = client
        self.imported = imported
        self.called = called
        self.ready = time.time()

    def get_properties(self, config: dict[str, Scalar]) -> dict[str, Scalar]:
        return self.client.get_properties(config)

    def get_parameters(self, config: dict[str, Scalar]) -> NDArrays:
        return self.client.get_parameters(config)

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        started = time.time()
        arrays, count, metrics = self.client.fit(parameters, config)
        return arrays, count, {**metrics, **self.times(started)}

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        started = time.time()
        loss, count, metrics = self.client.evaluate(parameters, config)
        return loss, count, {**metrics, **self.times(started)}

    def times(self, work_started: float) -> dict[str, Any]:
        """The split of this message's time; empty after the process's first message."""
        _served[0] += 1
        if _served[0] > 1:
            return {}
        created = psutil.Process().create_time()
        import_started, import_finished = self.imported
        flower = max(0.0, import_started - created) + (self.called - import_finished)
        return dict(
            zip(
                TIMING_KEYS,
                (flower, import_finished - import_started, self.ready - self.called, time.time() - work_started),
            )
        )
