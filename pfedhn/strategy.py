"""The Flower strategy that drives any method: ``FederatedStrategy``.

``configure_fit`` samples the round's clients and sends each what the method
(``pfedhn.method.Method``) says it gets; ``aggregate_fit`` checks the
replies and hands the good ones to the method (pFedHN turns them into
hypernetwork gradients there). Around it, in pieces of their own: routing by
partition id (``pfedhn.routing``), instructions and reply checks
(``pfedhn.instructions``), the fault policy (``pfedhn.faults``), checkpoints
(``pfedhn.checkpoint``), the schedule (``pfedhn.schedule``) and the history
(``pfedhn.results``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.common import EvaluateIns, EvaluateRes, FitIns, FitRes, Parameters, Scalar, parameters_to_ndarrays
from flwr.common.logger import log
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy
from tqdm import tqdm

from pfedhn.checkpoint import Checkpoint
from pfedhn.errors import ConfigError
from pfedhn.faults import ClientFailure, FailureLog, FaultPolicy, RejectedResult
from pfedhn.instructions import Outbox, num_bytes
from pfedhn.message_timing import TIMING_KEYS
from pfedhn.method import Method
from pfedhn.results import ClientGroup, Evaluation, RunHistory, SplitMetrics
from pfedhn.routing import PartitionRouter
from pfedhn.schedule import Schedule


class FederatedStrategy(Strategy):
    """Runs ``method`` on a federation: sampling, routing, faults, checkpoints, history, progress.

    Parameters
    ----------
    method : Method
        The method's server side (what clients get, what the server does with their changes).
    schedule : Schedule
        Clients, rounds, evaluation rounds and the novel-client phase.
    clients_per_round : int (default: 1)
        Clients sampled uniformly without replacement each round.
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
    faults : FaultPolicy | None (default: None)
        What a failed client or a rejected result does to the run; None: ``FaultPolicy()``.

    Attributes
    ----------
    compute : Callable[[Callable[[], Any]], Any]
        Runs the method's tensor work, ``compute(call) -> call()``; by default on the calling
        thread. The in-process simulation points it at the thread that trains the clients.
    """

    def __init__(
        self,
        method: Method,
        schedule: Schedule,
        *,
        clients_per_round: int = 1,
        seed: int = 0,
        history: RunHistory | None = None,
        results_path: Path | None = None,
        progress: bool = True,
        checkpoint_path: Path | None = None,
        checkpoint_every: int = 0,
        faults: FaultPolicy | None = None,
    ) -> None:
        super().__init__()
        self.method = method
        self.schedule = schedule
        self.clients_per_round = clients_per_round
        self.history = history if history is not None else RunHistory(config={})
        self.history.groups.update(self._groups())
        self.results_path = results_path
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = checkpoint_every
        self.faults = faults if faults is not None else FaultPolicy()
        self.failures = FailureLog(self.faults, records=self.history.failures)
        self.router = PartitionRouter(schedule.num_clients, self.faults.connect_timeout)
        self.outbox = Outbox(self.history)
        self.start_round = 0  # rounds done before this process, when resumed
        self.last_round = 0  # the last round whose training was aggregated
        self.stop_reason: str | None = None  # why the strategy stopped the run, if it did
        self.compute: Callable[[Callable[[], Any]], Any] = call_here
        self._sampler = np.random.default_rng([seed, 1])
        self._progress = progress
        self._bar: tqdm | None = None

    def __repr__(self) -> str:
        s = self.schedule
        return (
            f"{type(self).__name__}({self.method!r}, num_clients={s.num_clients}, clients_per_round="
            f"{self.clients_per_round}, num_rounds={s.num_rounds}, eval_every={s.eval_every})"
        )

    @property
    def num_rounds(self) -> int:
        return self.schedule.num_rounds

    @property
    def remaining_rounds(self) -> int:
        """Rounds left for Flower to run in this process."""
        return self.num_rounds - self.start_round

    def _groups(self) -> dict[str, ClientGroup]:
        s = self.schedule
        phases = {
            "seen": ClientGroup(s.seen, 1, s.novel_from - 1),
            "novel": ClientGroup(s.novel, s.novel_from, s.num_rounds),
        }
        return {**(phases if s.novel_clients else {}), **self.method.groups()}

    # --------------------------------------------------------------- Strategy API

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """No global model: an empty one, so Flower asks no client for weights."""
        return Parameters(tensors=[], tensor_type="numpy.ndarray")

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Sample ``clients_per_round`` partitions and send each what the method gives it."""
        server_round += self.start_round
        proxies = self._connect(client_manager)
        self._maybe_checkpoint(server_round - 1)
        self.outbox.awaited = {}
        pool = self.schedule.pool(server_round)
        chosen = sorted(int(c) for c in self._sampler.choice(pool, self.clients_per_round, replace=False))
        models = {c: self.compute(lambda c=c: self.method.client_model(c, server_round, True)) for c in chosen}
        return [(proxies[c], FitIns(*self.outbox.instruction(c, server_round, True, models[c]))) for c in chosen]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Hand every good result to the method; failed clients and rejected results are handled
        as ``faults`` says (a round without a good result makes no update)."""
        server_round += self.start_round
        reasons = [failure_reason(f) for f in failures]
        asked = list(self.outbox.awaited)
        updates, num_examples = {}, {}
        for proxy, res in results:
            self.history.bytes_received += num_bytes(res.parameters)
            try:
                client = self.router.sender(proxy, res.metrics)
                arrays = parameters_to_ndarrays(res.parameters)
                updates[client] = self.outbox.reply(client, arrays, self.faults.max_update_norm)
                num_examples[client] = res.num_examples
            except RejectedResult as error:
                reasons.append(f"result rejected: {error}")
                continue
            self._note_reply(server_round, "fit", client, res.metrics)
        failed = [c for c in asked if c not in updates]
        self.outbox.awaited = {}
        self.last_round = server_round
        self.method.clients_failed(failed)
        self._after_round(server_round, "fit", failed, reasons)
        metrics: dict[str, Scalar] = {}
        if updates:  # in client order, whatever order the replies came in (float sums depend on it)
            updates, num_examples = dict(sorted(updates.items())), dict(sorted(num_examples.items()))
            metrics = self.compute(lambda: self.method.apply_updates(server_round, updates, num_examples))
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
        if not self.schedule.is_eval_round(server_round):
            return []
        proxies = self._connect(client_manager)
        clients = list(range(self.schedule.num_clients))
        models = self.compute(lambda: self.method.client_models(clients, server_round, training=False))
        return [(proxies[c], EvaluateIns(*self.outbox.instruction(c, server_round, False, models[c]))) for c in clients]

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
        reasons = [failure_reason(f) for f in failures]
        for proxy, res in results:
            try:
                client = self.router.sender(proxy, res.metrics)
            except RejectedResult as error:
                reasons.append(f"result rejected: {error}")
                continue
            by_client[client] = res.metrics
            self._note_reply(server_round, "evaluate", client, res.metrics)
        missing = [c for c in range(self.schedule.num_clients) if c not in by_client]
        self._after_round(server_round, "evaluate", missing, reasons)
        if missing:
            log(WARNING, "round %s: evaluation missed %d client(s); not recorded", server_round, len(missing))
            self._end_if_last(server_round)
            return None, {}
        ordered = [by_client[c] for c in sorted(by_client)]
        val, test = (pooled(ordered, split) for split in ("val", "test"))
        self.history.add(Evaluation(server_round, val, test))
        self.history.method_report = self.compute(self.method.report)
        if self.results_path is not None:
            self.history.write(self.results_path)
        self._progress_bar().set_postfix(val=f"{val.accuracy:.4f}", best_test=f"{self.history.best.test.accuracy:.4f}")
        log(INFO, "round %s: val %.4f test %.4f", server_round, val.accuracy, test.accuracy)
        self._end_if_last(server_round)
        return test.loss, {"val_accuracy": val.accuracy, "test_accuracy": test.accuracy}

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        """No centralized evaluation: the models are personal."""
        return None

    # ------------------------------------------------------------- checkpointing

    def checkpoint(self, done_round: int) -> Checkpoint:
        """The run's state after ``done_round`` rounds (asks clients for theirs if they keep any)."""
        stores: dict[int, dict[str, np.ndarray]] = {}
        if self.method.client_state:
            pending = dict(self.outbox.restore)  # not yet handed back since a resume
            asked = [c for c in range(self.schedule.num_clients) if c not in pending]
            stores = {**pending, **self.router.stores(asked)}
        return Checkpoint(
            round=done_round,
            server=self.method.server_state(),
            sampler=self._sampler.bit_generator.state,
            history=self.history.state(),
            clients=stores,
            config=self.history.config,
        )

    def resume_from(self, checkpoint: Checkpoint) -> None:
        """Continue after ``checkpoint.round``: Flower's round r becomes round ``checkpoint.round + r``."""
        if checkpoint.round >= self.num_rounds:
            raise ConfigError(
                "num_rounds", f"{self.num_rounds} leaves nothing to run after the checkpoint's round {checkpoint.round}"
            )
        self.start_round = checkpoint.round
        self.method.load_server_state(checkpoint.server)
        self._sampler.bit_generator.state = checkpoint.sampler
        self.history.load_state(checkpoint.history)
        self.history.keep_evaluations(self.schedule.is_eval_round)  # the last round of a run now extended is not
        self.failures = FailureLog(self.faults, records=self.history.failures)
        self.failures.resume(checkpoint.round)
        self.outbox.restore = dict(checkpoint.clients)
        self.outbox.holding = {client for client, store in checkpoint.clients.items() if store}

    def _maybe_checkpoint(self, done_round: int) -> None:
        if self.checkpoint_path is None or done_round <= self.start_round:
            return
        periodic = self.checkpoint_every > 0 and done_round % self.checkpoint_every == 0
        if periodic or done_round == self.num_rounds:
            self.checkpoint(done_round).save(self.checkpoint_path)

    def _end_if_last(self, server_round: int) -> None:
        """After the last round's evaluation: the final checkpoint, and ``results.json`` marked finished."""
        if server_round != self.num_rounds:
            return
        self._maybe_checkpoint(server_round)
        if self.results_path is not None:
            self.history.write(self.results_path, finished=True)

    # ------------------------------------------------------------------- internals

    def _progress_bar(self) -> tqdm:
        """The bar over rounds, made at first use (after a resume: from its round)."""
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

    def _connect(self, client_manager: ClientManager) -> dict[int, ClientProxy]:
        try:
            return self.router.connect(client_manager)
        except ClientFailure as error:
            self.stop_reason = str(error)  # one line for pfedhn.main
            raise

    def _note_reply(self, server_round: int, stage: str, client: int, metrics: dict[str, Scalar]) -> None:
        """Track the client's store (a lost one is recorded) and the message's time split."""
        if self.outbox.note_store(client, metrics):
            reason = f"client {client} lost what it keeps (its node restarted?); it starts again from initial values"
            self._after_round(server_round, "state", [client], [reason])
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


def pooled(metrics: list[dict[str, Scalar]], split: str) -> SplitMetrics:
    """Every client's ``split`` results (in client order) pooled: the paper's accuracy."""
    return SplitMetrics.pool(
        [float(m[f"{split}_loss_sum"]) for m in metrics],
        [int(m[f"{split}_correct"]) for m in metrics],
        [int(m[f"{split}_count"]) for m in metrics],
    )


def call_here(call: Callable[[], Any]) -> Any:
    """``call()`` on the calling thread: the default ``FederatedStrategy.compute``."""
    return call()


def failure_reason(failure: tuple[ClientProxy, FitRes | EvaluateRes] | BaseException) -> str:
    """One line for a Flower failure: an exception (a client's error or its timeout) or a non-OK reply."""
    if isinstance(failure, BaseException):
        text = " ".join(str(failure).split())
        raised = re.search(r"Exception occurred\. Message: (.*?)'>\)", text)  # Flower's wrapping of a client error
        return f"client raised: {raised.group(1)}" if raised else f"{type(failure).__name__}: {text}"
    return f"status {failure[1].status.code.name}: {failure[1].status.message}"
