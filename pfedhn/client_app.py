"""The ClientApp: local training and evaluation on one data partition.

A client's identity is its data partition, ``context.node_config["partition-id"]``
(never Flower's random node id). It trains what the server sends, returns the
change, and keeps in its store (``pfedhn.client_store``) across rounds what each
instruction says it keeps (``pfedhn.protocol.KEEP``: e.g. pFedHN-PC's classifier head
and its momentum, LG-FedAvg's body, HeurpFedLA's local layers) and the personalized
model its method's ``Keeping`` declares (pFedMe's): the client itself has no
per-method branch.
"""

from __future__ import annotations

import time

IMPORT_STARTED = time.time()  # this module's imports (mostly torch) are part of a message's cost (message_timing)

import functools
from dataclasses import dataclass
from logging import WARNING

import numpy as np
import torch
from flwr.app import Context, RecordDict
from flwr.client import Client, ClientApp, NumPyClient
from flwr.common import NDArrays, Scalar
from flwr.common.logger import log
from omegaconf import DictConfig

from pfedhn import config, validation
from pfedhn.client_store import ClientStore
from pfedhn.dataset import FederatedData, check_image_shape, load_federated
from pfedhn.message_timing import TimedClient
from pfedhn.methods import client_side, target_of
from pfedhn.model import ModelSpec, TargetCNN
from pfedhn.partition_cache import CachedClient, cached_client
from pfedhn.protocol import (
    EXTRAS,
    HOLDS,
    KEEP,
    KEPT,
    LOST,
    PARTITION_ID,
    PARTITIONS,
    RELEASE,
    REPORTS,
    RESTORE,
    SENT,
    SERVER_ROUND,
    STORED,
    Adaptation,
    ClientSide,
    join_names,
    split_names,
)
from pfedhn.train import Normalization, batch_indices, evaluate_splits, train_local, whole_steps
from pfedhn.utils import derive_seed

TRAIN_STREAM = 2  # tag that keeps the local batches' derived seeds apart from other uses
ADAPT_STREAM = 4  # tag of the batches of the steps taken before evaluating (ClientSide.adaptation)


@functools.lru_cache(maxsize=4)
def _target(spec: ModelSpec, channels_last: bool, device: torch.device) -> TargetCNN:
    """One target network per process and device, reloaded with each message's weights.

    ``channels_last`` stores conv weights (and so activations) NHWC, which
    oneDNN runs about a quarter faster on a CPU; the arithmetic is the same.
    """
    model = TargetCNN(spec).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


_ON_DEVICE: dict[tuple[int, int, str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


ClientData = FederatedData | CachedClient  # anything with ``client_split(client, split)`` and ``image_shape()``


def _client_split(
    data: ClientData, partition: int, split: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``data.client_split`` on ``device``: moved once per process (and kept) off the CPU."""
    if device.type == "cpu":
        return data.client_split(partition, split)
    key = (id(data), partition, split, device)  # ``load_federated`` keeps one ``data`` per process
    if key not in _ON_DEVICE:
        _ON_DEVICE[key] = tuple(t.to(device) for t in data.client_split(partition, split))
    return _ON_DEVICE[key]


@dataclass(frozen=True)
class ClientSetup:
    """What every client of one run config needs, worked out from the config once: the
    simulation makes one per process, not one per message (reading an OmegaConf config is
    slow: about 1 ms a message at 1000 clients)."""

    side: ClientSide
    device: torch.device
    norm: Normalization
    data: ClientData | None  # None: the process's ``load_federated``, loaded at first use

    @classmethod
    def of(cls, cfg: DictConfig, data: ClientData | None = None) -> ClientSetup:
        device = config.device(cfg)
        return cls(client_side(cfg), device, config.normalization(cfg).to(device), data)


class PersonalizedClient(NumPyClient):
    """Trains and evaluates the model the server sent for this partition.

    Parameters
    ----------
    partition_id : int
        This client's data partition, which is also the model it must receive.
    cfg : DictConfig
        The run's composed config (see ``conf/config.yaml``).
    state : RecordDict
        ``Context.state``: where the kept parameters live between rounds.
    data : ClientData | None (default: None)
        Where this client's splits come from: the process's ``load_federated`` if None
        (the simulation), a ``partition_cache.CachedClient`` on the Deployment Engine.
    node_partitions : int | None (default: None)
        The node config's ``num-partitions``, reported so the server can check ``num_clients``.
    setup : ClientSetup | None (default: None)
        ``ClientSetup.of(cfg, data)``, made once and shared by a process's clients; None: made here.
    """

    def __init__(
        self,
        partition_id: int,
        cfg: DictConfig,
        state: RecordDict,
        data: ClientData | None = None,
        node_partitions: int | None = None,
        setup: ClientSetup | None = None,
    ) -> None:
        setup = setup if setup is not None else ClientSetup.of(cfg, data)
        self.partition_id = partition_id
        self.node_partitions = node_partitions
        self.cfg = cfg
        self.store = ClientStore(state, setup.side.keeping, cfg, partition_id)
        self.side = setup.side
        self.spec = target_of(cfg, partition_id)
        self.device = setup.device
        self.norm = setup.norm
        self.data = (
            setup.data if setup.data is not None else load_federated(config.data_settings(cfg), cfg.dataset.num_classes)
        )
        check_image_shape(self.data.image_shape(), cfg.dataset.in_channels, cfg.dataset.image_size)

    def get_properties(self, config: dict[str, Scalar]) -> dict[str, Scalar]:
        """Its partition id, its node's number of partitions (if it knows it) and the names of its
        store (``get_parameters``' order)."""
        properties: dict[str, Scalar] = {PARTITION_ID: self.partition_id, KEPT: join_names(list(self.store.tensors()))}
        if self.node_partitions is not None:
            properties[PARTITIONS] = self.node_partitions
        return properties

    def get_parameters(self, config: dict[str, Scalar]) -> NDArrays:
        """This client's store, for the server's checkpoints."""
        self._check_addressee(config)
        return [tensor.numpy() for tensor in self.store.tensors().values()]

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        """Train sent and kept parameters; store the kept ones; return (trained − sent of the
        others, #train samples, metrics)."""
        sent, keep, extras = self._read(parameters, config)
        lost = self._lost(config)
        model = self._load(sent, keep, split_names(config.get(RELEASE, "")))
        reports = {}
        if self.side.prepare is not None:
            reports = self.side.prepare(self.cfg, model, extras, self._split("val"), self.norm)
        named = dict(model.named_parameters())
        returned = [name for name in sent if name not in keep]
        kept_optimizer = self.store.kept_optimizer(named, keep)  # None: the kept train with the rest
        shared = [named[n] for n in returned] + ([named[n] for n in keep] if kept_optimizer is None else [])
        c = self.cfg.client
        optimizers = [torch.optim.SGD(shared, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)]
        optimizers += [] if kept_optimizer is None else [kept_optimizer]
        objective = None if self.side.objective is None else self.side.objective(self.cfg, model)
        per_step = 1 if objective is None else objective.batches_per_step
        images, labels = self._split("train")
        generator = self._generator(TRAIN_STREAM, config)
        batches = whole_steps(
            batch_indices(len(labels), c.batch_size, c.inner_steps * per_step, c.epochs, generator), per_step
        )
        loss = train_local(
            model,
            images,
            labels,
            self.norm,
            batches=batches,
            optimizers=optimizers,
            clipped=shared,
            grad_clip=c.grad_clip,
            objective=objective,
        )
        self.store.save(named, keep, kept_optimizer, {} if objective is None else objective.kept())
        delta = [(named[name].detach().cpu() - torch.tensor(sent[name])).contiguous().numpy() for name in returned]
        delta += [np.asarray(reports[name], dtype=np.float32) for name in split_names(config.get(REPORTS, ""))]
        metrics = {
            PARTITION_ID: self.partition_id,
            "train_loss": loss,
            STORED: len(self.store.tensors()),
            LOST: int(lost),
        }
        return delta, len(labels), metrics

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        """Validation and test loss sums, correct and counts of the sent model with the kept
        parameters in place, or of the personalized model the client keeps (``Keeping.personal``),
        after the method's ``ClientSide.adaptation`` steps (the store is left as it is, but for
        the restore after a resume)."""
        sent, keep, _ = self._read(parameters, config)
        lost = self._lost(config)
        model = self._load(sent, keep, split_names(config.get(RELEASE, "")))
        personal = self.store.personal_model()
        if personal:
            model.load_state_dict(personal)
        adaptation = None if self.side.adaptation is None else self.side.adaptation(self.cfg)
        if adaptation is not None and adaptation.steps:
            self._adapt(model, adaptation, config)
        splits = {split: self._split(split) for split in ("val", "test")}
        results = evaluate_splits(model, splits, self.norm, self.cfg.client.eval_batch_size)
        metrics: dict[str, Scalar] = {PARTITION_ID: self.partition_id, LOST: int(lost)}
        for split, result in results.items():
            metrics.update(
                {
                    f"{split}_loss_sum": result.loss_sum,
                    f"{split}_correct": result.correct,
                    f"{split}_count": result.count,
                }
            )
        test = results["test"]
        return test.loss_sum / test.count, test.count, metrics

    # ------------------------------------------------------------------- internals

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """This client's ``split`` (uint8 images, labels) on its device."""
        return _client_split(self.data, self.partition_id, split, self.device)

    def _generator(self, stream: int, config: dict[str, Scalar]) -> torch.Generator:
        """The RNG of this client's batches in this round, for ``stream`` (training or adaptation)."""
        seed = derive_seed(self.cfg.seed, stream, self.partition_id, int(config[SERVER_ROUND]))
        return torch.Generator().manual_seed(seed)

    def _adapt(self, model: TargetCNN, adaptation: Adaptation, config: dict[str, Scalar]) -> None:
        """``adaptation.steps`` SGD steps of ``model`` (all of it) on this client's training data."""
        c = self.cfg.client
        images, labels = self._split("train")
        batches = batch_indices(
            len(labels), c.batch_size, adaptation.steps, None, self._generator(ADAPT_STREAM, config)
        )
        params = list(model.parameters())
        optimizer = torch.optim.SGD(
            params, lr=adaptation.lr, momentum=adaptation.momentum, weight_decay=adaptation.weight_decay
        )
        train_local(
            model,
            images,
            labels,
            self.norm,
            batches=batches,
            optimizers=[optimizer],
            clipped=params,
            grad_clip=c.grad_clip,
        )

    def _lost(self, config: dict[str, Scalar]) -> bool:
        """Whether this client lost its store: the server says it holds one (``HOLDS``) and it is
        empty (Flower keeps ``Context.state`` in memory, so a restarted node comes back without
        it). Said in the log; what it keeps then starts again from its initial values, or, for a
        part only the client had (HeurpFedLA's local layers), the fit fails naming it."""
        if not config.get(HOLDS) or self.store.tensors():
            return False
        log(
            WARNING,
            "partition %d: this client's kept state (Context.state) is gone, its node restarted? "
            "It starts again from initial values; the server records it",
            self.partition_id,
        )
        return True

    def _check_addressee(self, config: dict[str, Scalar]) -> None:
        if int(config[PARTITION_ID]) != self.partition_id:
            raise RuntimeError(
                f"client of partition {self.partition_id} received the model of partition {config[PARTITION_ID]}"
            )

    def _read(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[dict[str, np.ndarray], list[str], dict[str, np.ndarray]]:
        """(sent name → array, kept names, extra name → array) of an instruction; a restored
        store (trailing arrays, after a resume) replaces this client's store first."""
        self._check_addressee(config)
        names = [split_names(config.get(key, "")) for key in (SENT, EXTRAS, RESTORE)]
        if len(parameters) != sum(map(len, names)):
            raise RuntimeError(f"expected {sum(map(len, names))} arrays, got {len(parameters)}")
        arrays = iter(np.asarray(a) for a in parameters)
        sent, extras, restore = ({name: next(arrays) for name in group} for group in names)
        if restore:
            self.store.restore(restore)
        return sent, split_names(config[KEEP]), extras

    def _load(self, sent: dict[str, np.ndarray], keep: list[str], release: list[str]) -> TargetCNN:
        """The process's target network with every parameter set (``ClientStore.model_values``)."""
        model = _target(self.spec, self.cfg.client.channels_last, self.device)
        named = dict(model.named_parameters())
        values = self.store.model_values(sent, keep, release)
        if set(values) != set(named):
            raise RuntimeError(f"parameters neither sent nor kept: {sorted(set(named) - set(values))}")
        with torch.no_grad():
            for name, param in named.items():
                param.copy_(values[name])
        return model


def make_client_app(cfg: DictConfig | None = None) -> ClientApp:
    """The ClientApp for a composed config (the simulation); with None, each node composes it
    from its run config and reads its own partition from the on-disk cache (``flwr run``)."""

    shared: list[ClientSetup] = []  # the simulation's: made at the first message in each process (a Ray actor's too)

    def client_fn(context: Context) -> Client:
        called = time.time()
        run_cfg = cfg if cfg is not None else validation.from_run_config(context.run_config)
        torch.set_num_threads(run_cfg.simulation.threads)
        partition_id = int(context.node_config["partition-id"])
        partitions = context.node_config.get("num-partitions")
        node_partitions = None if partitions is None else int(partitions)
        if cfg is not None:
            if not shared:
                shared.append(ClientSetup.of(cfg, load_federated(config.data_settings(cfg), cfg.dataset.num_classes)))
            return PersonalizedClient(partition_id, cfg, context.state, None, node_partitions, shared[0]).to_client()
        data = cached_client(config.data_settings(run_cfg), run_cfg.dataset.num_classes, partition_id)
        client = PersonalizedClient(partition_id, run_cfg, context.state, data, node_partitions)
        return TimedClient(client, (IMPORT_STARTED, IMPORTED), called).to_client()

    return ClientApp(client_fn=client_fn)


IMPORTED = time.time()
app = make_client_app()
