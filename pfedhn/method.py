"""What a method is: its server side (``Method``) and its declarations (``MethodSpec``).

The driver (``pfedhn.strategy.FederatedStrategy``, the Flower strategy) samples
clients, routes messages, applies the fault policy, checkpoints, records history
and shows progress for any method; a method only says what a client gets and what
the server does with the changes that come back. A method is one module in
``pfedhn/methods/`` with a ``Method`` subclass and a ``SPEC``, one line in the registry
(``pfedhn.methods.METHODS``), and its ``conf/method/<name>.yaml``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.common import Scalar
from omegaconf import DictConfig

from pfedhn import config
from pfedhn.checks import Checks
from pfedhn.model import ModelSpec
from pfedhn.protocol import ClientModel, ClientSide
from pfedhn.report import Section
from pfedhn.results import ClientGroup
from pfedhn.schedule import Schedule


class Method(ABC):
    """A method's server side.

    Attributes
    ----------
    client_state : bool
        Its clients keep state of their own (``ClientModel.keep``, or a personalized model
        their ``Keeping`` declares): checkpoints then collect it from them.
    """

    client_state: bool = False

    @abstractmethod
    def client_model(self, client: int, server_round: int, training: bool) -> ClientModel:
        """What client ``client`` receives in ``server_round`` to train (``training``) or to evaluate."""

    def client_models(self, clients: list[int], server_round: int, training: bool) -> dict[int, ClientModel]:
        """``client_model`` of each of ``clients`` (a method may make them together)."""
        return {client: self.client_model(client, server_round, training) for client in clients}

    @abstractmethod
    def apply_updates(
        self,
        server_round: int,
        updates: dict[int, dict[str, np.ndarray]],
        num_examples: dict[int, int] | None = None,
    ) -> dict[str, Scalar]:
        """Fold a round's good results into the server: ``updates`` (client → parameter name →
        returned change, for the names of its ``ClientModel.returned``, then the arrays of its
        ``ClientModel.reports``; clients in increasing order) and ``num_examples`` (client → its
        training samples; None: equal weights).
        Returns metrics."""

    @abstractmethod
    def server_state(self) -> dict[str, Any]:
        """Everything the method holds on the server, as tensors and plain values (checkpoints)."""

    @abstractmethod
    def load_server_state(self, state: dict[str, Any]) -> None:
        """Inverse of ``server_state``."""

    def clients_failed(self, clients: list[int]) -> None:
        """These clients' fit failed or its result was rejected (their store may be gone or bad;
        an evaluation changes no store, so its failures do not come here): a method that counts
        on what they keep (and does not send) may want to send it again. Nothing by default."""
        return None

    def report(self) -> dict[str, Any]:
        """The method's state worth keeping in ``results.json`` (refreshed at every evaluation);
        JSON-serializable. Nothing by default."""
        return {}

    def groups(self) -> dict[str, ClientGroup]:
        """Groups of clients reported apart in ``results.json`` (beyond the novel phase's)."""
        return {}

    def __repr__(self) -> str:
        return type(self).__name__


def plain_schedule(cfg: Mapping[str, Any]) -> Schedule:
    """The schedule of a config whose method has no novel-client phase."""
    return Schedule(int(cfg["num_clients"]), int(cfg["num_rounds"]), int(cfg["eval_every"]))


def reads_every_generic_key(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """No generic key is left unread."""
    return ()


def no_client_side(cfg: DictConfig) -> ClientSide:
    """A client that trains what it is sent with plain local SGD."""
    return ClientSide()


@dataclass(frozen=True)
class PaperValue:
    """A published number our runs are set against: the test accuracy (%) ``value`` (± ``std``
    if given) of ``rows`` (row keys: with several, the best of them, as a listing that does not
    say which) on ``dataset`` with ``clients`` clients, and where it comes from (``source``)."""

    dataset: str
    clients: int
    value: float
    std: float | None
    rows: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class TableRows:
    """How results tables show a method's runs.

    ``key(cfg)`` is a run's row (a config, as ``results.json`` holds it: one method may
    fill several rows, e.g. FedAvg and FedAvg+FT); ``labels`` gives each row key, in
    table order, its label; ``label(key)`` covers row keys made from values (HeurpFedLA's
    K, pFedHN's target sizes): (rank in the method's rows, label), or None if not its own.
    ``paper``: the published values its rows are compared with (only verified ones).
    ``sections``: its own parts of the results tables, after the accuracy tables
    (``pfedhn.report.Section``: what only its runs record).
    """

    key: Callable[[Mapping[str, Any]], str]
    labels: Mapping[str, str]
    label: Callable[[str], tuple[int, str] | None] | None = None
    paper: tuple[PaperValue, ...] = ()
    sections: tuple[Section, ...] = ()

    def find(self, key: str) -> tuple[int, str] | None:
        """(rank among the method's rows, label) of ``key``, or None if it is not one of its rows."""
        if key in self.labels:
            return list(self.labels).index(key), self.labels[key]
        return None if self.label is None else self.label(key)


def by_name(cfg: Mapping[str, Any]) -> str:
    """A row per ``method.name``."""
    return str(cfg["method"]["name"])


@dataclass(frozen=True)
class MethodSpec:
    """A method's declarations.

    Parameters
    ----------
    build : Callable[[DictConfig, Schedule], Method]
        The server side for a composed config (torch's global RNG is seeded with ``seed`` first).
    checks : Callable[[DictConfig], Checks]
        Its ``method.`` keys (and any generic key it restricts), each with its test; a
        ``method.`` key not here is refused (``pfedhn.validation``).
    rows : TableRows
        Its rows in results tables.
    client_side : Callable[[DictConfig], ClientSide] (default: plain local SGD)
        What its client does beyond plain local SGD on what it is sent.
    schedule : Callable[[Mapping], Schedule] (default: no novel-client phase)
        The run's schedule from a config (a composed one or a ``results.json``'s).
    target : Callable[[DictConfig, int], ModelSpec] (default: ``config.model_spec``)
        Client ``partition``'s target network.
    moved_keys : tuple[str, ...] (default: ())
        Keys that older configs held at the top level and this method now reads under
        ``method.`` (``pfedhn.migration``).
    unread_keys : Callable[[Mapping], tuple[str, ...]] (default: ``reads_every_generic_key``, none)
        The generic keys it does not read under a config (e.g. the client SGD keys that its
        paper's own updates replace). An override of one is refused in a single run, warned
        about in a sweep's cell (``pfedhn.validation.check_given_keys``); they keep their values
        in a run's config, and results tables show "–" for the client SGD ones.
    novel_phase_keys : tuple[str, ...] (default: ())
        Keys of its novel-client phase, which a resumed run may change while it has not begun
        that phase (``config.check_resumable``): a seen phase alone, copied, can be continued
        into several novel phases.
    """

    build: Callable[[DictConfig, Schedule], Method]
    checks: Callable[[DictConfig], Checks]
    rows: TableRows
    client_side: Callable[[DictConfig], ClientSide] = no_client_side
    schedule: Callable[[Mapping[str, Any]], Schedule] = plain_schedule
    target: Callable[[DictConfig, int], ModelSpec] = field(default=lambda cfg, partition: config.model_spec(cfg))
    moved_keys: tuple[str, ...] = ()
    unread_keys: Callable[[Mapping[str, Any]], tuple[str, ...]] = reads_every_generic_key
    novel_phase_keys: tuple[str, ...] = ()
