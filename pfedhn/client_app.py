"""The ClientApp: local training and evaluation on one data partition.

A client's identity is its data partition, ``context.node_config["partition-id"]``
(never Flower's random node id). It trains what the server sends, returns the
change, and keeps whatever its method keeps locally (pFedHN-PC: the classifier
head and that head's optimizer state) in ``context.state`` across rounds.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, RecordDict
from flwr.client import Client, ClientApp, NumPyClient
from flwr.common import NDArrays, Scalar
from omegaconf import DictConfig

from pfedhn import config
from pfedhn.dataset import FederatedData, load_federated
from pfedhn.model import HEAD_PREFIX, ModelSpec, TargetCNN, make_head, parameter_shapes
from pfedhn.strategy import PARTITION_ID, RESTORE_ARRAYS, SERVER_ROUND
from pfedhn.train import EvalResult, evaluate, train_local
from pfedhn.utils import derive_seed

HEAD_RECORD = "personal_head"
HEAD_STATE_KEYS = ("weight", "bias", "momentum.weight", "momentum.bias")
TRAIN_STREAM, HEAD_STREAM = 2, 3  # tags that keep derived seeds of different uses apart
MOMENTUM_PREFIX = "momentum."


@functools.lru_cache(maxsize=4)
def _target(spec: ModelSpec, channels_last: bool) -> TargetCNN:
    """One target network per process, reloaded with each message's weights.

    ``channels_last`` stores conv weights (and so activations) NHWC, which
    oneDNN runs about a quarter faster on a CPU; the arithmetic is the same.
    """
    model = TargetCNN(spec)
    return model.to(memory_format=torch.channels_last) if channels_last else model


class PersonalizedClient(NumPyClient):
    """Trains and evaluates the model the server generated for this partition.

    Parameters
    ----------
    partition_id : int
        This client's data partition, which is also the embedding it must receive.
    cfg : DictConfig
        The run's composed config (see ``conf/config.yaml``).
    state : RecordDict
        ``Context.state``: where the personal head lives between rounds.
    """

    def __init__(self, partition_id: int, cfg: DictConfig, state: RecordDict) -> None:
        self.partition_id = partition_id
        self.cfg = cfg
        self.state = state
        self.spec = config.model_spec(cfg)
        self.norm = config.normalization(cfg)
        self.data: FederatedData = load_federated(config.data_settings(cfg), cfg.dataset.num_classes)
        self.received_names = list(parameter_shapes(self.spec, cfg.method.personal_head))

    def get_properties(self, config: dict[str, Scalar]) -> dict[str, Scalar]:
        return {PARTITION_ID: self.partition_id}

    def get_parameters(self, config: dict[str, Scalar]) -> NDArrays:
        """This client's own state, for the server's checkpoints: pFedHN-PC's head and its
        momentum (zeros before the first step, which SGD treats the same), else nothing."""
        self._check_addressee(config)
        if not self.cfg.method.personal_head:
            return []
        state = self._head_state()
        return [
            state.get(key, torch.zeros_like(state[key.removeprefix(MOMENTUM_PREFIX)])).numpy()
            for key in HEAD_STATE_KEYS
        ]

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        """Train the received weights; return (trained − received, #train samples, metrics)."""
        self._check_addressee(config)
        parameters = self._take_restored_state(parameters, config)
        head = self._head_state() if self.cfg.method.personal_head else None
        model, received = self._load(parameters, head)
        named = dict(model.named_parameters())
        body = [named[name] for name in self.received_names]
        c = self.cfg.client
        optimizers = [torch.optim.SGD(body, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)]
        if head is not None:
            optimizers.append(self._head_optimizer(model, head))
        images, labels = self.data.client_split(self.partition_id, "train")
        generator = torch.Generator().manual_seed(
            derive_seed(self.cfg.seed, TRAIN_STREAM, self.partition_id, int(config[SERVER_ROUND]))
        )
        loss = train_local(
            model,
            images,
            labels,
            self.norm,
            steps=c.inner_steps,
            batch_size=c.batch_size,
            optimizers=optimizers,
            clipped=body,
            grad_clip=c.grad_clip,
            generator=generator,
        )
        if self.cfg.method.personal_head:
            self._save_head(model, optimizers[-1])
        delta = [(param.detach() - start).contiguous().numpy() for param, start in zip(body, received)]
        return delta, len(labels), {PARTITION_ID: self.partition_id, "train_loss": loss}

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        """Validation and test loss sums, correct and counts of the received model."""
        self._check_addressee(config)
        parameters = self._take_restored_state(parameters, config)
        model, _ = self._load(parameters, self._head_state() if self.cfg.method.personal_head else None)
        results: dict[str, EvalResult] = {}
        for split in ("val", "test"):
            images, labels = self.data.client_split(self.partition_id, split)
            results[split] = evaluate(model, images, labels, self.norm, self.cfg.client.eval_batch_size)
        metrics: dict[str, Scalar] = {PARTITION_ID: self.partition_id}
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

    def _check_addressee(self, config: dict[str, Scalar]) -> None:
        if int(config[PARTITION_ID]) != self.partition_id:
            raise RuntimeError(
                f"client of partition {self.partition_id} received the model of partition {config[PARTITION_ID]}"
            )

    def _take_restored_state(self, parameters: NDArrays, config: dict[str, Scalar]) -> NDArrays:
        """Install the state a resumed server hands back (the trailing arrays); return the rest."""
        count = int(config.get(RESTORE_ARRAYS, 0))
        if count == 0:
            return parameters
        saved = {key: torch.tensor(np.asarray(a)) for key, a in zip(HEAD_STATE_KEYS, parameters[-count:], strict=True)}
        self.state[HEAD_RECORD] = ArrayRecord(torch_state_dict=saved)
        return parameters[:-count]

    def _load(self, parameters: NDArrays, head: dict[str, torch.Tensor] | None) -> tuple[TargetCNN, list[torch.Tensor]]:
        """The process's target network loaded with the received tensors (and ``head``, the
        personal head's state from ``_head_state``, if the method keeps one)."""
        if len(parameters) != len(self.received_names):
            raise RuntimeError(f"expected {len(self.received_names)} arrays, got {len(parameters)}")
        model = _target(self.spec, self.cfg.client.channels_last)
        named = dict(model.named_parameters())
        received = [torch.tensor(np.asarray(array)) for array in parameters]
        with torch.no_grad():
            for name, tensor in zip(self.received_names, received):
                named[name].copy_(tensor)
            if head is not None:
                for name, tensor in head.items():
                    if not name.startswith(MOMENTUM_PREFIX):
                        named[HEAD_PREFIX + name].copy_(tensor)
        return model, received

    def _head_state(self) -> dict[str, torch.Tensor]:
        """The personal head (and its momentum), freshly initialized on first use."""
        if HEAD_RECORD not in self.state:
            with torch.random.fork_rng():
                torch.manual_seed(derive_seed(self.cfg.seed, HEAD_STREAM, self.partition_id))
                fresh = make_head(self.spec)
            self.state[HEAD_RECORD] = ArrayRecord(torch_state_dict=fresh.state_dict())
        return dict(self.state[HEAD_RECORD].to_torch_state_dict())

    def _head_optimizer(self, model: TargetCNN, head: dict[str, torch.Tensor]) -> torch.optim.SGD:
        """SGD on the head, with its momentum restored from ``head`` (the previous round's state)."""
        h = self.cfg.method.head
        optimizer = torch.optim.SGD(model.head.parameters(), lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)
        for name, param in model.head.named_parameters():
            if MOMENTUM_PREFIX + name in head:
                optimizer.state[param]["momentum_buffer"] = head[MOMENTUM_PREFIX + name].clone()
        return optimizer

    def _save_head(self, model: TargetCNN, optimizer: torch.optim.SGD) -> None:
        state = {name: param.detach().clone() for name, param in model.head.named_parameters()}
        for name, param in model.head.named_parameters():
            buffer = optimizer.state[param].get("momentum_buffer")
            if buffer is not None:
                state[MOMENTUM_PREFIX + name] = buffer.clone()
        self.state[HEAD_RECORD] = ArrayRecord(torch_state_dict=state)


def make_client_app(cfg: DictConfig | None = None) -> ClientApp:
    """The ClientApp for a composed config; with None, each node composes it from its run config."""

    def client_fn(context: Context) -> Client:
        run_cfg = cfg if cfg is not None else config.from_run_config(context.run_config)
        torch.set_num_threads(run_cfg.simulation.threads)
        partition_id = int(context.node_config["partition-id"])
        return PersonalizedClient(partition_id, run_cfg, context.state).to_client()

    return ClientApp(client_fn=client_fn)


app = make_client_app()
