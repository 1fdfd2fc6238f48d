"""The driver's side of the message protocol (``pfedhn.protocol``): instructions out, replies in.

An instruction carries a ``ClientModel``'s arrays and a config naming them (and, on the
first contact after a resume, the client's saved store); a fit reply must hold the
change of every sent parameter the client does not keep, in order, with its shape and
dtype, finite and within ``faults.max_update_norm``. The outbox also tracks which clients
hold a store, so a client that lost its own (its node restarted) is noticed.
"""

from __future__ import annotations

import numpy as np
from flwr.common import NDArrays, Parameters, Scalar, ndarrays_to_parameters

from pfedhn.faults import Expected, RejectedResult, check_result
from pfedhn.protocol import (
    EXTRAS,
    HOLDS,
    KEEP,
    LOST,
    PARTITION_ID,
    RELEASE,
    REPORTS,
    RESTORE,
    SENT,
    SERVER_ROUND,
    STORED,
    ClientModel,
    join_names,
)
from pfedhn.results import RunHistory


class Outbox:
    """Builds every instruction and checks every fit reply of one run.

    Parameters
    ----------
    history : RunHistory
        Where the bytes sent are counted.
    """

    def __init__(self, history: RunHistory) -> None:
        self.history = history
        self.awaited: dict[int, dict[str, Expected]] = {}  # client → the changes its fit reply holds
        self.restore: dict[int, dict[str, np.ndarray]] = {}  # client → its store from a checkpoint, not yet sent
        self.holding: set[int] = set()  # clients whose store was not empty after their last message

    def instruction(
        self, client: int, server_round: int, training: bool, model: ClientModel
    ) -> tuple[Parameters, dict[str, Scalar]]:
        """``message`` as Flower sends it; the bytes of ``model``'s arrays are counted (not a
        resume's ``RESTORE``: they and the checkpoint's collection of them are no traffic of the
        method, and an uninterrupted run has neither)."""
        arrays, config = self.message(client, server_round, training, model)
        parameters = ndarrays_to_parameters(arrays)
        self.history.bytes_sent += num_bytes(parameters, first=len(model.arrays) + len(model.extras))
        return parameters, config

    def message(
        self, client: int, server_round: int, training: bool, model: ClientModel
    ) -> tuple[NDArrays, dict[str, Scalar]]:
        """The arrays and config for ``client``: ``model``'s arrays and extras, and on the first
        contact after a resume the client's saved store (trailing arrays, named by ``RESTORE``)."""
        restore = self.restore.pop(client, {})
        if training:
            self.awaited[client] = {
                **{name: Expected(model.arrays[name].shape, model.arrays[name].dtype) for name in model.returned},
                **{name: Expected(shape, np.dtype(np.float32)) for name, shape in model.reports.items()},
            }
        config: dict[str, Scalar] = {
            PARTITION_ID: client,
            SERVER_ROUND: server_round,
            SENT: join_names(list(model.arrays)),
            KEEP: join_names(model.keep),
            RELEASE: join_names(model.release),
            EXTRAS: join_names(list(model.extras)),
            REPORTS: join_names(list(model.reports)),
            RESTORE: join_names(list(restore)),
            HOLDS: int(client in self.holding),
        }
        return [*model.arrays.values(), *model.extras.values(), *restore.values()], config

    def reply(self, client: int, arrays: NDArrays, max_update_norm: float | None = None) -> dict[str, np.ndarray]:
        """A fit reply's arrays, named as the ``ClientModel.returned`` they answer (then its
        ``reports``); a
        ``RejectedResult`` unless each has its tensor's shape and dtype, is finite and the
        update's norm is within ``max_update_norm`` (None: no bound)."""
        if client not in self.awaited:
            raise RejectedResult(f"client {client} was not asked to train, or answered twice")
        expected = self.awaited.pop(client)
        if len(arrays) != len(expected):
            raise RejectedResult(f"client {client} returned {len(arrays)} arrays, not {len(expected)}")
        named = dict(zip(expected, arrays))
        check_result(named, expected, max_update_norm)
        return named

    def note_store(self, client: int, metrics: dict[str, Scalar]) -> bool:
        """Keep track of which clients hold a store; True if ``client`` says it lost its own."""
        if STORED in metrics:
            (self.holding.add if int(metrics[STORED]) else self.holding.discard)(client)
        return bool(metrics.get(LOST))


def num_bytes(parameters: Parameters, first: int | None = None) -> int:
    """The bytes of ``parameters``' tensors (of its ``first`` ones only, if given)."""
    return sum(len(t) for t in parameters.tensors[:first])
