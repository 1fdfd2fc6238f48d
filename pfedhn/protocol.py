"""What travels between the server's strategy and the ClientApp: both sides import it.

An instruction (``FitIns`` / ``EvaluateIns``) carries a ``ClientModel``'s arrays and a config
naming them; a reply carries the change of the parameters the client does not keep and
metrics under the keys below. What a method's client does beyond plain local SGD is its
``ClientSide``, which the client applies by these names alone, with no per-method branch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.common import Scalar

PARTITION_ID = "partition_id"
SERVER_ROUND = "server_round"
# instruction config keys, each a comma-joined list of parameter names:
SENT = "sent"  # the instruction's arrays, in order
KEEP = "keep"  # parameters the client takes from its own store, trains and keeps (never returned)
RELEASE = "release"  # sent parameters the client trains from its own stored value instead, then stops keeping
EXTRAS = "extras"  # arrays after the model's: sent beside it for the method's ClientSide.prepare (FedFomo's candidates)
REPORTS = "reports"  # arrays the client's ClientSide.prepare returns after the changes, in this order
RESTORE = "restore"  # trailing arrays: the client's own state from a checkpoint, to put back in its store
KEPT = "kept"  # get_properties: the names in the client's store, in get_parameters' order
PARTITIONS = "num_partitions"  # get_properties: how many partitions the client's node splits the data into
HOLDS = "holds"  # instruction: 1 if the server knows the client's store is not empty (a lost one is reported)
STORED = "stored"  # fit metrics: how many tensors the client's store holds after training
LOST = "lost_state"  # fit / evaluate metrics: 1 if the client's store was empty though the server said HOLDS


def join_names(names: list[str] | tuple[str, ...]) -> str:
    return ",".join(names)


def split_names(joined: Scalar) -> list[str]:
    return [name for name in str(joined).split(",") if name]


@dataclass(frozen=True)
class ClientModel:
    """What one client receives: ``arrays`` (parameter name → array, in the target's order)
    and ``keep``, the parameters it takes from its own store instead. A name in both
    tells the client to replace its stored value with the sent one (a method that moves
    a parameter into the client's keeping sends its current value once). ``release``
    moves a kept parameter out of the client's keeping: the client trains it from its
    stored value, returns its change against the sent array (the server's copy, so the
    server gets the trained value back) and drops it from its store. ``extras`` travel
    beside the model for the method's ``ClientSide.prepare`` (not loaded into it);
    ``reports`` names the float32 arrays (name → shape) that ``prepare`` returns, which
    come back after the changes (FedFomo: its candidates and their weights)."""

    arrays: dict[str, np.ndarray]
    keep: tuple[str, ...] = ()
    release: tuple[str, ...] = ()
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    reports: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def returned(self) -> list[str]:
        """The parameters whose change the client sends back after training, in order."""
        return [name for name in self.arrays if name not in self.keep]


@dataclass(frozen=True)
class Adaptation:
    """Local SGD steps a client takes on its training data before it evaluates (the
    evaluation's model only: nothing is kept): FedAvg+FT's fine-tuning, Per-FedAvg's
    one adaptation step. Batches of ``client.batch_size``, seeded by (seed, client, round)."""

    steps: int
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class Keeping:
    """Everything a method's client keeps between rounds: one store of named tensors
    (``Context.state``, read and written by ``pfedhn.client_store`` alone), in three parts.

    - The parameters each instruction names (``ClientModel.keep``), as trained: always.
    - Their momentum, when they train with an ``optimizer`` of their own.
    - Its objective's state (``LocalObjective.kept``), named under ``personal``: a
      personalized model the client evaluates instead of the model it is sent, once it has one.

    Parameters
    ----------
    initial : Callable[[DictConfig, int], dict[str, torch.Tensor]] | None (default: None)
        ``(cfg, partition_id) → name → tensor``: first values of kept parameters the server
        never sends, made on the client at first use (pFedHN-PC: its head; Local, FedPer,
        LG-FedAvg: their part of the shared initial model). None: the server sends each
        kept parameter the first time (HeurpFedLA).
    optimizer : Callable[[DictConfig], Any] | None (default: None)
        ``cfg → `` the SGD settings (``lr``, ``momentum``, ``weight_decay``) that train the
        kept parameters, unclipped, with their momentum kept across rounds (pFedHN-PC:
        ``cfg.method.head``). None: they train with the client's SGD like the rest
        (momentum restarts each round).
    personal : str | None (default: None)
        Store prefix of the objective's state, a personalized model (pFedMe's θ_i). None:
        the objective keeps nothing.
    """

    initial: Callable[[Any, int], dict[str, Any]] | None = None
    optimizer: Callable[[Any], Any] | None = None
    personal: str | None = None


@dataclass(frozen=True)
class ClientSide:
    """What a method's client does beyond plain local SGD on what it is sent, and what it keeps.

    Parameters
    ----------
    keeping : Keeping (default: ``Keeping()``)
        What the client keeps between rounds (by default the parameters it is told to keep).
    objective : Callable[[DictConfig, nn.Module], LocalObjective] | None (default: None)
        ``(cfg, model) → LocalObjective`` made for each fit, with ``model`` holding
        the round's starting weights (Per-FedAvg, pFedMe, FedAMP). None: plain SGD.
    adaptation : Callable[[DictConfig], Adaptation | None] | None (default: None)
        The steps taken before each evaluation (None or a None result: none).
    prepare : Callable[[DictConfig, nn.Module, dict, Batch, Normalization], dict] | None (default: None)
        ``(cfg, model, extras, (val images, labels), norm) → name → array``, called before each
        fit with the model as sent: may set the model's weights from ``extras`` on the client's
        validation data (FedFomo), and returns the ``ClientModel.reports`` arrays.
    """

    keeping: Keeping = Keeping()
    objective: Callable[[Any, Any], Any] | None = None
    adaptation: Callable[[Any], Adaptation | None] | None = None
    prepare: Callable[[Any, Any, dict[str, np.ndarray], Any, Any], dict[str, np.ndarray]] | None = None
