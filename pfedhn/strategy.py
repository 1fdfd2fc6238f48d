"""The shared base of the personalized strategies: identity, sampling, evaluation.

A method may send each client its *own* model (pFedHN, pFedLA) or keep state
per client, so the server must know which Flower client holds which data
partition. Flower's node ids are random and its client list has no order, so
before the first round the strategy asks every client for its partition id
(``get_properties``) and keeps the map; each instruction then carries the
partition id it was made for, and the client refuses one that is not its own.

What a client keeps is the method's choice, made per instruction: a
``ClientModel`` names the arrays sent and the parameters the client takes from
its own store instead (``keep``); the client returns the change of the sent
parameters it does not keep. Both sides only follow these names, so no method
needs a branch in the client or in this base.
"""

from __future__ import annotations

import re
import time
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetParametersIns,
    GetPropertiesIns,
    NDArrays,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.logger import log
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy
from tqdm import tqdm

from pfedhn.checkpoint import Checkpoint
from pfedhn.errors import ConfigError
from pfedhn.faults import ClientFailure, Expected, FailureLog, FaultPolicy, RejectedResult, check_result
from pfedhn.message_timing import TIMING_KEYS
from pfedhn.protocol import (
    HOLDS,
    KEEP,
    KEPT,
    LOST,
    PARTITION_ID,
    PARTITIONS,
    RELEASE,
    RESTORE,
    SENT,
    SERVER_ROUND,
    STORED,
    ClientModel,
    join_names,
    split_names,
)
from pfedhn.results import ClientGroup, Evaluation, RunHistory, SplitMetrics


def is_eval_round(server_round: int, eval_every: int, last_rounds: tuple[int, ...]) -> bool:
    """The official schedule: after updates 1, 1 + k, 1 + 2k, ... and after each of ``last_rounds``
    (the run's last round; with novel clients, also the seen phase's)."""
    return (server_round - 1) % eval_every == 0 or server_round in last_rounds


class PersonalizedStrategy(Strategy):
    """Base of this package's strategies (personalized or not: FedAvg sends one global model).

    A subclass says what a client gets (``client_model``) and what the
    server does with the returned updates (``apply_updates``); this class samples
    clients, routes every message by partition id, evaluates every client on its
    validation and test data, pools the results into ``history`` and shows progress.

    Parameters
    ----------
    num_clients : int
        Number of clients (data partitions), ids ``0 .. num_clients - 1``.
    num_rounds : int
        Rounds of the run (for the evaluation schedule and the progress bar).
    clients_per_round : int (default: 1)
        Clients sampled uniformly without replacement each round.
    eval_every : int (default: 30)
        Evaluate all clients after rounds 1, 1 + eval_every, ... and the last.
    seed : int (default: 0)
        Seeds client sampling.
    history : RunHistory | None (default: None)
        Where evaluations and traffic are recorded; a fresh one if None.
    results_path : Path | None (default: None)
        If set, ``history`` is written there after every evaluation.
    progress : bool (default: True)
        Show a tqdm bar over rounds with the latest validation accuracy.
    checkpoint_path : Path | None (default: None)
        Where ``checkpoint.Checkpoint`` files go; None: no checkpoints.
    checkpoint_every : int (default: 0)
        Checkpoint after every this many rounds (and after the last); 0: only after the last.
    client_state : bool (default: False)
        Clients keep state of their own (``ClientModel.keep``); checkpoints collect
        it from them (``get_properties`` and ``get_parameters``) and a resumed run
        hands it back.
    novel_clients : int (default: 0)
        Generalization to novel clients (paper Sec. 5.3): the last ``novel_clients``
        partitions take no part in rounds 1..``num_rounds - novel_rounds``; in the
        last ``novel_rounds`` rounds only they are sampled (the method then learns
        only their embeddings). Both groups are reported apart in ``history``.
    novel_rounds : int (default: 0)
    faults : FaultPolicy | None (default: None)
        What a failed client or a rejected result does to the run (``pfedhn.faults``);
        None: ``FaultPolicy()`` (go on without it; stop after 5 failed rounds in a row).

    Attributes
    ----------
    compute : Callable[[Callable[[], Any]], Any]
        Runs the method hooks' tensor work, ``compute(call) -> call()``; by default
        on the calling thread. The in-process simulation points it at the thread
        that trains the clients (see ``pfedhn.simulation``).
    """

    def __init__(
        self,
        *,
        num_clients: int,
        num_rounds: int,
        clients_per_round: int = 1,
        eval_every: int = 30,
        seed: int = 0,
        history: RunHistory | None = None,
        results_path: Path | None = None,
        progress: bool = True,
        checkpoint_path: Path | None = None,
        checkpoint_every: int = 0,
        client_state: bool = False,
        novel_clients: int = 0,
        novel_rounds: int = 0,
        faults: FaultPolicy | None = None,
    ) -> None:
        super().__init__()
        self.num_clients = num_clients
        self.num_rounds = num_rounds
        self.clients_per_round = clients_per_round
        self.eval_every = eval_every
        self.history = history if history is not None else RunHistory(config={})
        self.results_path = results_path
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = checkpoint_every
        self.client_state = client_state
        self.start_round = 0  # rounds done before this process, when resumed
        self.novel_from = num_rounds - novel_rounds + 1 if novel_clients else num_rounds + 1
        self.seen = list(range(num_clients - novel_clients))
        self.novel = list(range(num_clients - novel_clients, num_clients))
        if novel_clients:
            self.history.groups = {
                "seen": ClientGroup(self.seen, 1, self.novel_from - 1),
                "novel": ClientGroup(self.novel, self.novel_from, num_rounds),
            }
        self._sampler = np.random.default_rng([seed, 1])
        self._proxies: dict[int, ClientProxy] = {}
        self._restore: dict[int, dict[str, np.ndarray]] = {}
        self._awaited: dict[int, dict[str, Expected]] = {}  # client → the deltas its fit reply holds
        self.faults = faults if faults is not None else FaultPolicy()
        self.failures = FailureLog(self.faults, records=self.history.failures)
        self.stop_reason: str | None = None  # why the strategy stopped the run, if it did
        self.last_round = 0  # the last round whose training was aggregated
        self._holding: set[int] = set()  # clients whose store was not empty after their last fit
        self._progress = progress
        self._bar: tqdm | None = None
        self.compute: Callable[[Callable[[], Any]], Any] = call_here

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_clients={self.num_clients}, clients_per_round="
            f"{self.clients_per_round}, num_rounds={self.num_rounds}, eval_every={self.eval_every})"
        )

    # ------------------------------------------------------------------ method hooks

    @abstractmethod
    def client_model(self, client: int, server_round: int, training: bool) -> ClientModel:
        """What client ``client`` receives in ``server_round`` to train (``training``) or to evaluate."""

    def client_models(self, clients: list[int], server_round: int, training: bool) -> dict[int, ClientModel]:
        """``client_model`` of each of ``clients``; a method may make them together (pFedHN
        generates an evaluation's models in batches)."""
        return {client: self.client_model(client, server_round, training) for client in clients}

    @abstractmethod
    def apply_updates(
        self,
        server_round: int,
        updates: dict[int, dict[str, np.ndarray]],
        num_examples: dict[int, int] | None = None,
    ) -> dict[str, Scalar]:
        """Fold this round's client results (partition id → parameter name → returned
        change, for the names of ``ClientModel.returned``) into the server;
        ``num_examples``: partition id → its training samples (None: equal weights)."""

    @abstractmethod
    def server_state(self) -> dict[str, Any]:
        """Everything the method holds on the server, as tensors and plain values."""

    @abstractmethod
    def load_server_state(self, state: dict[str, Any]) -> None:
        """Inverse of ``server_state``."""

    def clients_failed(self, clients: list[int]) -> None:
        """These clients' fit failed or its result was rejected (their store may be gone or bad;
        an evaluation changes no store, so its failures do not come here): a method that counts
        on what they keep (and does not send) may want to send it again. Nothing by default."""

    def report(self) -> dict[str, Any]:
        """The method's state worth keeping in ``results.json`` (refreshed at every evaluation);
        JSON-serializable. Nothing by default."""
        return {}

    def is_novel_round(self, server_round: int) -> bool:
        """In the novel-client phase only novel clients train (see ``novel_clients``)."""
        return server_round >= self.novel_from

    # ------------------------------------------------------------- checkpointing

    @property
    def remaining_rounds(self) -> int:
        """Rounds left for Flower to run in this process."""
        return self.num_rounds - self.start_round

    def checkpoint(self, done_round: int) -> Checkpoint:
        """The run's state after ``done_round`` rounds (asks clients for theirs if they keep any)."""
        return Checkpoint(
            round=done_round,
            server=self.server_state(),
            sampler=self._sampler.bit_generator.state,
            history=self.history.state(),
            clients=self._collect_client_states() if self.client_state else {},
            config=self.history.config,
        )

    def resume_from(self, checkpoint: Checkpoint) -> None:
        """Continue after ``checkpoint.round``: Flower's round r becomes round ``checkpoint.round + r``."""
        if checkpoint.round >= self.num_rounds:
            raise ConfigError(
                "num_rounds", f"{self.num_rounds} leaves nothing to run after the checkpoint's round {checkpoint.round}"
            )
        self.start_round = checkpoint.round
        self.load_server_state(checkpoint.server)
        self._sampler.bit_generator.state = checkpoint.sampler
        self.history.load_state(checkpoint.history)
        self.history.keep_evaluations(self._is_eval_round)  # the last round of a run now extended is not
        self.failures = FailureLog(self.faults, records=self.history.failures)
        self.failures.resume(checkpoint.round)
        self._restore = dict(checkpoint.clients)
        self._holding = {client for client, store in checkpoint.clients.items() if store}

    def _is_eval_round(self, server_round: int) -> bool:
        return is_eval_round(server_round, self.eval_every, (self.novel_from - 1, self.num_rounds))

    def _maybe_checkpoint(self, done_round: int) -> None:
        if self.checkpoint_path is None or done_round <= self.start_round:
            return
        periodic = self.checkpoint_every > 0 and done_round % self.checkpoint_every == 0
        if periodic or done_round == self.num_rounds:
            self.checkpoint(done_round).save(self.checkpoint_path)

    def _collect_client_states(self) -> dict[int, dict[str, np.ndarray]]:
        """Every client's own store: still pending from a resume, or asked of the client."""
        pending = dict(self._restore)

        def ask(client: int) -> dict[str, np.ndarray]:
            proxy, config = self._proxies[client], {PARTITION_ID: client}
            names = split_names(
                proxy.get_properties(GetPropertiesIns(config), timeout=None, group_id=0).properties[KEPT]
            )
            arrays = parameters_to_ndarrays(
                proxy.get_parameters(GetParametersIns(config), timeout=None, group_id=0).parameters
            )
            return dict(zip(names, arrays, strict=True))

        asked = [c for c in range(self.num_clients) if c not in pending]
        with ThreadPoolExecutor(max_workers=32) as pool:
            return {**pending, **dict(zip(asked, pool.map(ask, asked)))}

    # --------------------------------------------------------------- Strategy API

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """No global model: an empty one, so Flower asks no client for weights."""
        return Parameters(tensors=[], tensor_type="numpy.ndarray")

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Sample ``clients_per_round`` partitions and send each its own model."""
        server_round += self.start_round
        proxies = self._proxies_by_partition(client_manager)
        self._maybe_checkpoint(server_round - 1)
        pool = self.novel if self.is_novel_round(server_round) else self.seen
        self._awaited = {}
        chosen = sorted(int(c) for c in self._sampler.choice(pool, self.clients_per_round, replace=False))
        return [(proxies[c], FitIns(*self.instruction(c, server_round, training=True))) for c in chosen]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Hand every good result to ``apply_updates``; failed clients and rejected results are
        handled as ``faults`` says (a round without a good result makes no update)."""
        server_round += self.start_round
        reasons = [_failure_reason(f) for f in failures]
        asked = list(self._awaited)
        updates, num_examples = {}, {}
        for proxy, res in results:
            self.history.bytes_received += _num_bytes(res.parameters)
            try:
                client = self._check_sender(proxy, res.metrics)
                updates[client] = self.named_update(client, parameters_to_ndarrays(res.parameters))
                num_examples[client] = res.num_examples
            except RejectedResult as error:
                reasons.append(f"result rejected: {error}")
                continue
            self._note_store(server_round, client, res.metrics)
            self._note_timing(server_round, "fit", client, res.metrics)
        failed = [c for c in asked if c not in updates]
        self._awaited = {}
        self.last_round = server_round
        self.clients_failed(failed)
        self._after_round(server_round, "fit", failed, reasons)
        metrics: dict[str, Scalar] = {}
        if updates:  # in client order, whatever order the replies came in (float sums depend on it)
            updates, num_examples = dict(sorted(updates.items())), dict(sorted(num_examples.items()))
            metrics = self.compute(lambda: self.apply_updates(server_round, updates, num_examples))
        else:
            log(WARNING, "round %s: no client result to apply; the server's state is unchanged", server_round)
        self.history.round_end_times.append(time.perf_counter())
        self._progress_bar().update(1)
        if server_round == self.num_rounds:
            self._progress_bar().close()
        return None, metrics

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """On evaluation rounds, every client gets its own model."""
        server_round += self.start_round
        if not self._is_eval_round(server_round):
            return []
        proxies = self._proxies_by_partition(client_manager)
        clients = list(range(self.num_clients))
        models = self.compute(lambda: self.client_models(clients, server_round, training=False))
        return [
            (proxies[c], EvaluateIns(*self.instruction(c, server_round, training=False, model=models[c])))
            for c in clients
        ]

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """Pool correct / count over all clients (the paper's accuracy) and record it; an
        evaluation that misses a client is not recorded (its pool would not be the paper's)."""
        server_round += self.start_round
        by_client = {}
        reasons = [_failure_reason(f) for f in failures]
        for proxy, res in results:
            try:
                client = self._check_sender(proxy, res.metrics)
            except RejectedResult as error:
                reasons.append(f"result rejected: {error}")
                continue
            by_client[client] = res.metrics
            self._note_store(server_round, client, res.metrics)
            self._note_timing(server_round, "evaluate", client, res.metrics)
        missing = [c for c in range(self.num_clients) if c not in by_client]
        self._after_round(server_round, "evaluate", missing, reasons)
        if missing:
            log(WARNING, "round %s: evaluation missed %d client(s); not recorded", server_round, len(missing))
            self._end_if_last(server_round)
            return None, {}
        ordered = [by_client[c] for c in sorted(by_client)]
        splits = {
            split: SplitMetrics.pool(
                [float(m[f"{split}_loss_sum"]) for m in ordered],
                [int(m[f"{split}_correct"]) for m in ordered],
                [int(m[f"{split}_count"]) for m in ordered],
            )
            for split in ("val", "test")
        }
        self.history.add(Evaluation(server_round, splits["val"], splits["test"]))
        self.history.method_report = self.compute(self.report)
        if self.results_path is not None:
            self.history.write(self.results_path)
        best = self.history.best
        self._progress_bar().set_postfix(val=f"{splits['val'].accuracy:.4f}", best_test=f"{best.test.accuracy:.4f}")
        log(INFO, "round %s: val %.4f test %.4f", server_round, splits["val"].accuracy, splits["test"].accuracy)
        self._end_if_last(server_round)
        return splits["test"].loss, {"val_accuracy": splits["val"].accuracy, "test_accuracy": splits["test"].accuracy}

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        """No centralized evaluation: the models are personal."""
        return None

    # ------------------------------------------------------------------- internals

    def _progress_bar(self) -> tqdm:
        if self._bar is None:
            self._bar = tqdm(
                total=self.num_rounds,
                initial=self.start_round,
                desc="rounds",
                unit="round",
                disable=not self._progress,
                dynamic_ncols=True,
            )
        return self._bar

    def instruction(
        self, client: int, server_round: int, training: bool, model: ClientModel | None = None
    ) -> tuple[Parameters, dict[str, Scalar]]:
        """``message`` as Flower sends it; the bytes of its ``ClientModel`` arrays are counted
        (not a resume's ``RESTORE``: they and the checkpoint's collection of them are no traffic
        of the method, and an uninterrupted run has neither)."""
        arrays, config = self.message(client, server_round, training, model)
        parameters = ndarrays_to_parameters(arrays)
        self.history.bytes_sent += _num_bytes(parameters, first=len(split_names(config[SENT])))
        return parameters, config

    def _end_if_last(self, server_round: int) -> None:
        """After the last round's evaluation: the final checkpoint, and ``results.json`` marked finished."""
        if server_round != self.num_rounds:
            return
        self._maybe_checkpoint(server_round)
        if self.results_path is not None:
            self.history.write(self.results_path, finished=True)

    def _note_store(self, server_round: int, client: int, metrics: dict[str, Scalar]) -> None:
        """Keep track of which clients hold a store; record a client that lost its own (its
        node restarted: Flower keeps ``Context.state`` in memory only)."""
        if metrics.get(LOST):
            self._after_round(
                server_round,
                "state",
                [client],
                [f"client {client} lost what it keeps (its node restarted?); it starts again from initial values"],
            )
        if STORED in metrics and int(metrics[STORED]):
            self._holding.add(client)
        elif STORED in metrics:
            self._holding.discard(client)

    def _note_timing(self, server_round: int, stage: str, client: int, metrics: dict[str, Scalar]) -> None:
        """Record a message's time split (``pfedhn.message_timing``), if the client measured one."""
        if all(key in metrics for key in TIMING_KEYS):
            times = {key: float(metrics[key]) for key in TIMING_KEYS}
            self.history.message_timings.append({"round": server_round, "stage": stage, "client": client, **times})

    def _after_round(self, server_round: int, stage: str, failed: list[int], reasons: list[str]) -> None:
        """Apply the fault policy to this stage's failures; keep the reason if it stops the run."""
        try:
            self.failures.round_done(server_round, stage, failed, reasons)
        except ClientFailure as error:
            self.stop_reason = str(error)
            raise

    def message(
        self, client: int, server_round: int, training: bool, model: ClientModel | None = None
    ) -> tuple[NDArrays, dict[str, Scalar]]:
        """The arrays and config for ``client``: its ``ClientModel`` (``model``, or made here),
        and on the first contact after a resume the client's saved store (trailing arrays,
        named by ``RESTORE``)."""
        if model is None:
            model = self.compute(lambda: self.client_model(client, server_round, training))
        restore = self._restore.pop(client, {})
        if training:
            self._awaited[client] = {
                name: Expected(model.arrays[name].shape, model.arrays[name].dtype) for name in model.returned
            }
        config: dict[str, Scalar] = {
            PARTITION_ID: client,
            SERVER_ROUND: server_round,
            SENT: join_names(list(model.arrays)),
            KEEP: join_names(model.keep),
            RELEASE: join_names(model.release),
            RESTORE: join_names(list(restore)),
            HOLDS: int(client in self._holding),
        }
        return [*model.arrays.values(), *restore.values()], config

    def named_update(self, client: int, arrays: NDArrays) -> dict[str, np.ndarray]:
        """A fit reply's arrays, named as the ``ClientModel.returned`` they answer; a
        ``RejectedResult`` unless each has its tensor's shape and dtype, is finite and the
        update's norm is within ``faults.max_update_norm``."""
        if client not in self._awaited:
            raise RejectedResult(f"client {client} was not asked to train, or answered twice")
        expected = self._awaited.pop(client)
        if len(arrays) != len(expected):
            raise RejectedResult(f"client {client} returned {len(arrays)} arrays, not {len(expected)}")
        named = dict(zip(expected, arrays))
        check_result(named, expected, self.faults.max_update_norm)
        return named

    def _proxies_by_partition(self, client_manager: ClientManager) -> dict[int, ClientProxy]:
        """Partition id → proxy, asked once of every client (see the module docstring).

        ``num_clients`` and the federation must agree: the first clients to connect say
        how many partitions their nodes split the data into (node config ``num-partitions``),
        and a mismatch stops the run at once with one line; so do fewer clients than
        ``num_clients`` within ``faults.connect_timeout`` seconds, and more clients.
        """
        if self._proxies:
            return self._proxies
        # Flower's ServerApp compat layer registers the SuperNodes when the client manager is
        # asked for them (num_available, all, sample) and otherwise only every 5 s: ask first,
        # or wait_for sleeps until that loop's next pass (5 s at the start of every run).
        client_manager.num_available()
        client_manager.wait_for(1, timeout=self.faults.connect_timeout)
        answers = self._ask_identities(list(client_manager.all().values()))
        node_counts = {n for _, n in answers.values() if n is not None}
        if node_counts - {self.num_clients}:
            self._stop(
                f"num_clients={self.num_clients}, but the SuperNodes split the data into {sorted(node_counts)} "
                "partitions (their node config num-partitions): make them agree, e.g. num_clients="
                f"{max(node_counts)} in the run config's overrides, or run {self.num_clients} SuperNodes "
                f'(simulation: --federation-config "num-supernodes={self.num_clients}")'
            )
        if not client_manager.wait_for(self.num_clients, timeout=self.faults.connect_timeout):
            self._stop(
                f"num_clients={self.num_clients}, but only {client_manager.num_available()} clients (SuperNodes) "
                f"connected within faults.connect_timeout={self.faults.connect_timeout:g} s: start one SuperNode "
                "per partition, or set num_clients to the number of SuperNodes"
            )
        proxies = list(client_manager.all().values())
        answers.update(self._ask_identities([p for p in proxies if p not in answers]))
        ids = sorted(partition for partition, _ in answers.values())
        if ids != list(range(self.num_clients)):
            self._stop(
                f"num_clients={self.num_clients} needs one client per partition 0..{self.num_clients - 1}; "
                f"the {len(ids)} connected clients hold partitions {ids}"
            )
        self._proxies = {partition: proxy for proxy, (partition, _) in answers.items()}
        return self._proxies

    @staticmethod
    def _ask_identities(proxies: list[ClientProxy]) -> dict[ClientProxy, tuple[int, int | None]]:
        """proxy → (its partition id, its node's number of partitions or None if it does not say)."""

        def ask(proxy: ClientProxy) -> tuple[int, int | None]:
            properties = proxy.get_properties(GetPropertiesIns(config={}), timeout=None, group_id=0).properties
            partitions = properties.get(PARTITIONS)
            return int(properties[PARTITION_ID]), None if partitions is None else int(partitions)

        with ThreadPoolExecutor(max_workers=32) as pool:
            return dict(zip(proxies, pool.map(ask, proxies)))

    def _stop(self, reason: str) -> None:
        """Stop the run with one line (``stop_reason``, see ``pfedhn.main``)."""
        self.stop_reason = reason
        raise ClientFailure(reason)

    def _check_sender(self, proxy: ClientProxy, metrics: dict[str, Scalar]) -> int:
        client = int(metrics.get(PARTITION_ID, -1))
        if self._proxies.get(client) is not proxy:
            raise RejectedResult(f"a reply claims partition {client} but came from another client")
        return client


def call_here(call: Callable[[], Any]) -> Any:
    """``call()`` on the calling thread: the default ``PersonalizedStrategy.compute``."""
    return call()


def _num_bytes(parameters: Parameters, first: int | None = None) -> int:
    """The bytes of ``parameters``' tensors (of its ``first`` ones only, if given)."""
    return sum(len(t) for t in parameters.tensors[:first])


def _failure_reason(failure: tuple[ClientProxy, FitRes | EvaluateRes] | BaseException) -> str:
    """One line for a Flower failure: an exception (a client's error or its timeout) or a non-OK reply."""
    if isinstance(failure, BaseException):
        text = " ".join(str(failure).split())
        raised = re.search(r"Exception occurred\. Message: (.*?)'>\)", text)  # Flower's wrapping of a client error
        return f"client raised: {raised.group(1)}" if raised else f"{type(failure).__name__}: {text}"
    return f"status {failure[1].status.code.name}: {failure[1].status.message}"
